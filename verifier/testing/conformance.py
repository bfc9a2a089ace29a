"""The conformance suite: the same cases and the same verdicts for every chain adapter, through
the real gate, Redis and an arq worker.

A chain adapter, built in or a third party's, runs it by subclassing ``AdapterConformance`` in
a test module and providing two fixtures: ``harness``, a ``Harness`` for a local chain of the
family (it may be a generator fixture that starts and stops the chain), and ``redis_url``, a
Redis the suite may write to (each test uses a queue and key prefix of its own there)::

    class TestMyChain(AdapterConformance):
        @pytest.fixture
        def harness(self) -> Iterator[Harness]:
            with my_local_chain() as chain:
                yield MyChainHarness(chain)

The adapter is found as the worker finds it, through the ``verifier.chains`` entry point of the
harness's network, so the package must be installed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from verifier.adapter import WrongChain
from verifier.assets import namespace_of
from verifier.gate import Gate, Offer
from verifier.models import (
    Accept,
    Failure,
    PaymentPayload,
    ProofBody,
    ReasonCode,
    Receipt,
    ResourceInfo,
)
from verifier.registry import load_plugins
from verifier.settings import AcceptSettings, NetworkSettings
from verifier.testing.harness import Harness
from verifier.testing.stack import connected_gate, running_worker, suite_settings
from verifier.wire import decode_payment_required, encode_json

RESOURCE = "http://conformance.test/item"


class Rig:
    """A harness and a gate with a worker behind it: offers on the harness's terms, and the
    outcome of a proof."""

    def __init__(self, h: Harness, gate: Gate) -> None:
        self.h = h
        self.gate = gate

    def offer(self, now: float | None = None, **terms: Any) -> tuple[Accept, list[Offer]]:
        spec: dict[str, Any] = {
            "network": self.h.network,
            "asset": self.h.asset,
            "pay_to": self.h.pay_to,
            "amount": 10 ** max(self.h.decimals - 2, 1),
            "min_confirmations": self.h.min_confirmations,
        }
        spec.update(terms)
        offers = self.gate.offers([AcceptSettings(**spec)])
        required = self.gate.challenge(ResourceInfo(url=RESOURCE), offers, now=now)
        return decode_payment_required(encode_json(required)).accepts[0], offers

    async def settle(
        self,
        accept: Accept,
        tx: str,
        offers: list[Offer],
        wait: float = 15,
        signature: str | None = None,
    ) -> Receipt | Failure:
        body = ProofBody(nonce=accept.extra.nonce, tx_hash=tx, signature=signature)
        header = encode_json(PaymentPayload(accepted=accept, payload=body))
        return await self.gate.settle(header, resource=RESOURCE, offers=offers, timeout=wait)


def reason(outcome: Receipt | Failure) -> ReasonCode | None:
    return None if isinstance(outcome, Receipt) else outcome.error_reason


class AdapterConformance:
    """Every case of the suite, for the ``harness`` fixture a subclass provides (and a
    ``redis_url`` fixture, from the subclass, its module or a conftest)."""

    pytestmark = pytest.mark.asyncio

    @pytest_asyncio.fixture
    async def rig(self, harness: Harness, redis_url: str) -> AsyncIterator[Rig]:
        networks = {harness.network: harness.network_settings()}
        settings = suite_settings(redis_url, networks, harness.asset_settings())
        async with connected_gate(settings) as gate, running_worker(settings):
            yield Rig(harness, gate)

    async def test_good_payment(self, rig: Rig) -> None:
        accept, offers = rig.offer()
        tx = await rig.h.pay(accept)
        outcome = await rig.settle(accept, tx, offers)
        assert isinstance(outcome, Receipt), outcome
        ext = outcome.extensions["onchain-proof"]
        assert ext["paidAmount"] == accept.amount and ext["bound"] is True
        assert ext["consumptionKey"] == f"{rig.h.network}:{outcome.transaction}"
        assert outcome.pay_to == rig.h.pay_to and outcome.nonce == accept.extra.nonce
        assert abs(ext["blockTime"] - time.time()) < 300

    async def test_overpayment_is_reported(self, rig: Rig) -> None:
        accept, offers = rig.offer()
        outcome = await rig.settle(
            accept, await rig.h.pay(accept, amount=int(accept.amount) * 3), offers
        )
        assert isinstance(outcome, Receipt), outcome
        assert outcome.extensions["onchain-proof"]["paidAmount"] == str(int(accept.amount) * 3)

    @pytest.mark.parametrize(
        ("case", "expected"),
        [
            ("underpay", ReasonCode.AMOUNT_TOO_LOW),
            ("stranger", ReasonCode.WRONG_RECIPIENT),
            ("other_asset", ReasonCode.WRONG_ASSET),
            ("fail", ReasonCode.TX_REVERTED),
            ("no_memo", ReasonCode.BINDING_MISSING),
        ],
    )
    async def test_payments_that_do_not_count(
        self, rig: Rig, case: str, expected: ReasonCode
    ) -> None:
        accept, offers = rig.offer()
        changes: dict[str, dict[str, Any]] = {
            "underpay": {"amount": int(accept.amount) - 1},
            "stranger": {"to": rig.h.stranger},
            "other_asset": {"asset": rig.h.other_asset},
            "fail": {"fail": True},
            "no_memo": {"memo": False},
        }
        outcome = await rig.settle(accept, await rig.h.pay(accept, **changes[case]), offers)
        assert isinstance(outcome, Failure) and not outcome.transient, outcome
        assert outcome.error_reason is expected, outcome

    async def test_unbound_payment_accepted_when_the_offer_allows(self, rig: Rig) -> None:
        accept, offers = rig.offer(binding="none")
        outcome = await rig.settle(accept, await rig.h.pay(accept, memo=False), offers)
        assert isinstance(outcome, Receipt), outcome
        assert outcome.extensions["onchain-proof"]["bound"] is False

    async def test_unknown_transaction_is_pending(self, rig: Rig) -> None:
        accept, offers = rig.offer()
        outcome = await rig.settle(accept, rig.h.unknown_tx(), offers, wait=1)
        assert isinstance(outcome, Failure) and outcome.transient, outcome
        assert outcome.error_reason is ReasonCode.TX_NOT_FOUND

    async def test_garbage_transaction_reference(self, rig: Rig) -> None:
        accept, offers = rig.offer()
        assert (
            reason(await rig.settle(accept, rig.h.garbage_tx(), offers))
            is ReasonCode.INVALID_PAYLOAD
        )

    async def test_replay_and_double_spend(self, rig: Rig) -> None:
        accept, offers = rig.offer(binding="none")
        tx = await rig.h.pay(accept)
        first = await rig.settle(accept, tx, offers)
        assert isinstance(first, Receipt), first
        assert await rig.settle(accept, tx, offers) == first
        other, offers2 = rig.offer(binding="none")
        assert reason(await rig.settle(other, tx, offers2)) is ReasonCode.TX_ALREADY_USED

    async def test_commitment_binds_to_its_own_challenge_only(self, rig: Rig) -> None:
        # The victim pays the expensive route, bound by the memo to its own challenge. Someone who
        # sees the transaction on chain takes a challenge of a cheap unbound offer on the same payee
        # and asset, and submits the victim's transaction under it.
        price = int(rig.offer()[0].amount)
        victim, victim_offers = rig.offer(amount=price * 10)
        tx = await rig.h.pay(victim)
        thief, thief_offers = rig.offer(binding="none", amount=1)
        stolen = await rig.settle(thief, tx, thief_offers)
        assert isinstance(stolen, Failure) and not stolen.transient, stolen
        assert stolen.error_reason is ReasonCode.BINDING_MISMATCH, stolen
        outcome = await rig.settle(victim, tx, victim_offers)
        assert isinstance(outcome, Receipt), outcome
        assert outcome.nonce == victim.extra.nonce
        assert outcome.extensions["onchain-proof"]["paidAmount"] == str(price * 10)
        again, again_offers = rig.offer(binding="none", amount=1)
        assert reason(await rig.settle(again, tx, again_offers)) is ReasonCode.TX_ALREADY_USED

    async def test_malformed_signature_is_no_binding(self, rig: Rig) -> None:
        # Each malformed signature is a plain "no valid signature", at once: never an exception
        # that leaves the proof retrying until it expires. A refusal does not use the challenge up,
        # so the payer's real signature still binds it afterwards.
        accept, offers = rig.offer(binding="signature")
        tx = await rig.h.pay(accept, memo=False)
        for signature in rig.h.malformed_signatures(accept, tx):
            started = time.monotonic()
            outcome = await rig.settle(accept, tx, offers, wait=10, signature=signature)
            assert isinstance(outcome, Failure) and not outcome.transient, (signature, outcome)
            assert outcome.error_reason is ReasonCode.BINDING_MISSING, (signature, outcome)
            assert time.monotonic() - started < 5, signature
        real = rig.h.sign(accept, tx)
        if real is not None:
            outcome = await rig.settle(accept, tx, offers, signature=real)
            assert isinstance(outcome, Receipt), outcome
            assert outcome.extensions["onchain-proof"]["bound"] is True

    async def test_transaction_older_than_the_challenge(self, rig: Rig) -> None:
        early, _ = rig.offer()
        tx = await rig.h.pay(early)
        later, offers = rig.offer(now=time.time() + 30, binding="none")
        assert reason(await rig.settle(later, tx, offers)) is ReasonCode.TX_BEFORE_CHALLENGE

    async def test_network_is_pinned(self, rig: Rig) -> None:
        plugin = load_plugins()[namespace_of(rig.h.network)]
        wrong = plugin.adapter.create(
            rig.h.wrong_network(), NetworkSettings(**rig.h.network_settings())
        )
        with pytest.raises(WrongChain):
            await wrong.start()
        await wrong.close()
