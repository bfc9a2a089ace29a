"""One suite, every chain family: the same cases and the same verdicts through the real stack."""

from __future__ import annotations

import importlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import Harness, Pay
from tests.support import Checkout, SettingsFactory, connected_gate, reason, running_worker
from verifier.adapter import WrongChain
from verifier.assets import NATIVE, namespace_of
from verifier.gate import Gate
from verifier.models import (
    Failure,
    ReasonCode,
    Receipt,
)
from verifier.registry import load_plugins
from verifier.settings import NetworkSettings

FAMILIES = sorted(
    p.stem.removeprefix("harness_") for p in Path(__file__).parent.glob("harness_*.py")
)
RESOURCE = "http://conformance.test/item"


class Rig(Checkout):
    """The gate, offering the harness's asset on its network."""

    def __init__(self, h: Harness, gate: Gate) -> None:
        super().__init__(
            gate,
            RESOURCE,
            wait=15,
            network=h.network,
            asset=h.asset,
            pay_to=h.pay_to,
            amount=10 ** max(h.decimals - 2, 1),
            min_confirmations=h.min_confirmations,
        )
        self.h = h

    settle = Checkout.settle_tx


@pytest.fixture(params=FAMILIES)
async def rig(
    request: pytest.FixtureRequest, make_settings: SettingsFactory, redis: Any
) -> AsyncIterator[Rig]:
    module = importlib.import_module(f"tests.harness_{request.param}")
    async with module.harness(request) as h:
        assets = []
        if h.asset != NATIVE:
            assets.append(
                {"network": h.network, "symbol": h.symbol, "asset": h.asset, "decimals": h.decimals}
            )
        settings = make_settings(networks={h.network: h.network_settings()}, assets=assets)
        async with connected_gate(settings) as gate, running_worker(settings):
            yield Rig(h, gate)


async def test_good_payment(rig: Rig) -> None:
    accept, offers = rig.offer()
    tx = await rig.h.pay(accept)
    outcome = await rig.settle(accept, tx, offers)
    assert isinstance(outcome, Receipt), outcome
    ext = outcome.extensions["onchain-proof"]
    assert ext["paidAmount"] == accept.amount and ext["bound"] is True
    assert ext["consumptionKey"] == f"{rig.h.network}:{outcome.transaction}"
    assert outcome.pay_to == rig.h.pay_to and outcome.nonce == accept.extra.nonce
    assert abs(ext["blockTime"] - time.time()) < 300


async def test_overpayment_is_reported(rig: Rig) -> None:
    accept, offers = rig.offer()
    outcome = await rig.settle(
        accept, await rig.h.pay(accept, Pay(amount=int(accept.amount) * 3)), offers
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
async def test_payments_that_do_not_count(rig: Rig, case: str, expected: ReasonCode) -> None:
    accept, offers = rig.offer()
    how = {
        "underpay": Pay(amount=int(accept.amount) - 1),
        "stranger": Pay(to=rig.h.stranger),
        "other_asset": Pay(asset=rig.h.other_asset),
        "fail": Pay(fail=True),
        "no_memo": Pay(memo=False),
    }[case]
    outcome = await rig.settle(accept, await rig.h.pay(accept, how), offers)
    assert isinstance(outcome, Failure) and not outcome.transient, outcome
    assert outcome.error_reason is expected, outcome


async def test_unbound_payment_accepted_when_the_offer_allows(rig: Rig) -> None:
    accept, offers = rig.offer(binding="none")
    outcome = await rig.settle(accept, await rig.h.pay(accept, Pay(memo=False)), offers)
    assert isinstance(outcome, Receipt), outcome
    assert outcome.extensions["onchain-proof"]["bound"] is False


async def test_unknown_transaction_is_pending(rig: Rig) -> None:
    accept, offers = rig.offer()
    outcome = await rig.settle(accept, rig.h.unknown_tx, offers, wait=1)
    assert isinstance(outcome, Failure) and outcome.transient, outcome
    assert outcome.error_reason is ReasonCode.TX_NOT_FOUND


async def test_garbage_transaction_reference(rig: Rig) -> None:
    accept, offers = rig.offer()
    assert reason(await rig.settle(accept, rig.h.garbage_tx, offers)) is ReasonCode.INVALID_PAYLOAD


async def test_replay_and_double_spend(rig: Rig) -> None:
    accept, offers = rig.offer(binding="none")
    tx = await rig.h.pay(accept)
    first = await rig.settle(accept, tx, offers)
    assert isinstance(first, Receipt), first
    assert await rig.settle(accept, tx, offers) == first
    other, offers2 = rig.offer(binding="none")
    assert reason(await rig.settle(other, tx, offers2)) is ReasonCode.TX_ALREADY_USED


async def test_commitment_binds_to_its_own_challenge_only(rig: Rig) -> None:
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


async def test_malformed_signature_is_no_binding(rig: Rig) -> None:
    # Each malformed signature is a plain "no valid signature", at once: never an exception
    # that leaves the proof retrying until it expires. A refusal does not use the challenge up,
    # so the payer's real signature still binds it afterwards.
    accept, offers = rig.offer(binding="signature")
    tx = await rig.h.pay(accept, Pay(memo=False))
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


async def test_transaction_older_than_the_challenge(rig: Rig) -> None:
    early, _ = rig.offer()
    tx = await rig.h.pay(early)
    later, offers = rig.offer(now=time.time() + 30, binding="none")
    assert reason(await rig.settle(later, tx, offers)) is ReasonCode.TX_BEFORE_CHALLENGE


async def test_network_is_pinned(rig: Rig) -> None:
    plugin = load_plugins()[namespace_of(rig.h.network)]
    wrong = plugin.adapter.create(
        rig.h.wrong_network(), NetworkSettings(**rig.h.network_settings())
    )
    with pytest.raises(WrongChain):
        await wrong.start()
    await wrong.close()
