"""End to end on TON: gate, Redis, arq worker, TON adapter, local toncenter v3, receipt."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any, TypedDict, cast

import pytest

from chains.http import AiohttpTransport, HttpReply, HttpRequest
from chains.ton import TONAdapter
from chains.ton.toncenter import V3Transaction
from devchain.ton_chain import account_for
from tests.harness_ton import MASTER, NETWORK, PAYEE, PAYER, STRANGER, TonEnv, friendly, ton_env
from tests.support import SettingsFactory, Shop, connected_gate, ext, reason, running_worker
from verifier.adapter import ConfigError, Query, RpcUnavailable
from verifier.gate import Gate
from verifier.models import (
    Failure,
    ReasonCode,
    Receipt,
)
from verifier.settings import NetworkSettings

RESOURCE = "http://ton.test/item"


class _Terms(TypedDict):
    asset: str
    amount: int


TON: _Terms = {"asset": "native", "amount": 20_000_000}
JETTON: _Terms = {"asset": "JUSD", "amount": 1_500_000}


class TonShop(Shop):
    def __init__(self, gate: Gate, env: TonEnv) -> None:
        super().__init__(gate, RESOURCE, network=NETWORK, pay_to=friendly(PAYEE), **TON)
        self.env = env

    settle = Shop.settle_tx  # type: ignore[assignment]


@pytest.fixture
async def shop(make_settings: SettingsFactory, redis: Any) -> AsyncIterator[TonShop]:
    with ton_env() as env:
        assets = [{"network": NETWORK, "symbol": "JUSD", "asset": MASTER, "decimals": 6}]
        settings = make_settings(networks={NETWORK: env.network_settings()}, assets=assets)
        async with connected_gate(settings) as gate, running_worker(settings):
            yield TonShop(gate, env)


def strip_pin(requests: list[str]) -> list[str]:
    assert requests.count("/api/v3/masterchainInfo") <= 1
    return [r for r in requests if r != "/api/v3/masterchainInfo"]


def paid(outcome: Receipt | Failure) -> str:
    return str(ext(outcome)["paidAmount"])


async def test_ton_payment_with_comment_and_hash_forms(shop: TonShop) -> None:
    accept, offers = shop.offer()
    tx = shop.env.ledger.pay_ton(PAYER, PAYEE, 25_000_000, accept.extra.memo)
    url_safe = base64.urlsafe_b64encode(bytes.fromhex(tx)).decode()
    before = len(shop.env.server.requests)
    outcome = await shop.settle(accept, url_safe, offers)
    assert isinstance(outcome, Receipt), outcome
    assert outcome.transaction == tx and outcome.payer == PAYER
    ext = outcome.extensions["onchain-proof"]
    assert ext["paidAmount"] == "25000000" and ext["bound"] is True
    assert ext["consumptionKey"] == f"{NETWORK}:{tx}"
    assert abs(ext["blockTime"] - time.time()) < 60
    # one toncenter request for a verification (the transaction by hash), besides the
    # masterchainInfo read that pins the network once when the worker starts
    assert strip_pin(shop.env.server.requests[before:]) == ["/api/v3/transactions"]


async def test_jetton_payment_with_forward_comment(shop: TonShop) -> None:
    accept, offers = shop.offer(**JETTON)
    _, owner_tx = shop.env.ledger.pay_jetton(MASTER, PAYER, PAYEE, 1_500_000, accept.extra.memo)
    assert owner_tx is not None
    outcome = await shop.settle(accept, owner_tx, offers)  # the owner's notification
    assert paid(outcome) == "1500000" and isinstance(outcome, Receipt)
    assert outcome.payer == PAYER and outcome.extensions["onchain-proof"]["bound"] is True
    other, offers2 = shop.offer(**JETTON)
    # the payee wallet's transaction is the same payment: its master derives that wallet
    wallet_tx2, _ = shop.env.ledger.pay_jetton(MASTER, PAYER, PAYEE, 1_500_000, other.extra.memo)
    before = len(shop.env.server.requests)
    assert paid(await shop.settle(other, wallet_tx2, offers2)) == "1500000"
    assert strip_pin(shop.env.server.requests[before:]) == ["/api/v3/transactions"]  # cached


async def test_fake_jetton_wallet_does_not_count(shop: TonShop) -> None:
    accept, offers = shop.offer(**JETTON)
    fake = account_for("look-alike jetton wallet")
    tx = shop.env.ledger.fake_notification(fake, PAYER, PAYEE, 10**9, accept.extra.memo)
    assert reason(await shop.settle(accept, tx, offers)) is ReasonCode.WRONG_ASSET


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ({"bounced": True}, ReasonCode.TRANSFER_NOT_FOUND),
        ({"aborted": True}, ReasonCode.TX_REVERTED),
        ({"comment": None}, ReasonCode.BINDING_MISSING),
        ({"comment": "another challenge"}, ReasonCode.BINDING_MISSING),
        ({"to": STRANGER}, ReasonCode.WRONG_RECIPIENT),
    ],
)
async def test_ton_payments_that_do_not_count(
    shop: TonShop, how: dict[str, Any], expected: ReasonCode
) -> None:
    accept, offers = shop.offer()
    comment = how.pop("comment", accept.extra.memo)
    to = how.pop("to", PAYEE)
    tx = shop.env.ledger.pay_ton(PAYER, to, 20_000_000, comment, **how)
    outcome = await shop.settle(accept, tx, offers)
    assert isinstance(outcome, Failure) and not outcome.transient, outcome
    assert outcome.error_reason is expected, outcome


async def test_locator_picks_the_transaction_with_the_commitment(shop: TonShop) -> None:
    accept, offers = shop.offer()
    ledger, memo = shop.env.ledger, accept.extra.memo
    ledger.pay_ton(PAYER, PAYEE, 20_000_000, "someone else's order")
    ledger.pay_ton(PAYER, PAYEE, 20_000_000, memo, aborted=True)
    ledger.pay_ton(PAYER, PAYEE, 20_000_000, memo, bounced=True)
    good = ledger.pay_ton(PAYER, PAYEE, 20_000_000, memo)
    ledger.pay_ton(STRANGER, PAYEE, 5, "later noise")
    locator = f"ton:{friendly(PAYEE, bounceable=False)}|{accept.extra.nonce}"
    outcome = await shop.settle(accept, locator, offers)
    assert isinstance(outcome, Receipt), outcome
    assert outcome.transaction == good
    assert outcome.extensions["onchain-proof"]["consumptionKey"] == f"{NETWORK}:{good}"
    # the same payment named by its hash is the same consumption: no second use
    other, offers2 = shop.offer(binding="none")
    assert reason(await shop.settle(other, good, offers2)) is ReasonCode.TX_ALREADY_USED
    stranger_locator = f"ton:{PAYEE}|n1.someone.elses.nonce"
    third, offers3 = shop.offer()
    assert reason(await shop.settle(third, stranger_locator, offers3)) is (
        ReasonCode.INVALID_PAYLOAD
    )


async def test_jetton_locator_scans_the_payee_wallet(shop: TonShop) -> None:
    accept, offers = shop.offer(**JETTON)
    shop.env.ledger.pay_jetton(MASTER, PAYER, PAYEE, 7, "noise")
    wallet_tx, _ = shop.env.ledger.pay_jetton(MASTER, PAYER, PAYEE, 1_500_000, accept.extra.memo)
    outcome = await shop.settle(accept, f"ton:{PAYEE}|{accept.extra.nonce}", offers)
    assert isinstance(outcome, Receipt) and outcome.transaction == wallet_tx, outcome


@pytest.mark.parametrize(
    "form",
    [
        PAYEE,
        friendly(PAYEE),
        friendly(PAYEE, bounceable=False),
        friendly(PAYEE, testnet=True, bounceable=False),
    ],
)
async def test_offer_address_forms(shop: TonShop, form: str) -> None:
    accept, offers = shop.offer(pay_to=form)
    tx = shop.env.ledger.pay_ton(PAYER, PAYEE, 20_000_000, accept.extra.memo)
    outcome = await shop.settle(accept, tx, offers)
    assert isinstance(outcome, Receipt) and outcome.pay_to == form, outcome


async def test_not_indexed_then_not_final_then_final(shop: TonShop) -> None:
    accept, offers = shop.offer()
    ledger = shop.env.ledger
    tx = ledger.pay_ton(PAYER, PAYEE, 20_000_000, accept.extra.memo, pending=True, hidden=True)
    first = await shop.settle(accept, tx, offers, wait=0.5)
    assert isinstance(first, Failure) and first.error_reason is ReasonCode.TX_NOT_FOUND
    ledger.set_hidden(tx, False)
    second = await shop.settle(accept, tx, offers, wait=0.5)
    assert isinstance(second, Failure) and second.transient
    assert second.error_reason is ReasonCode.INSUFFICIENT_CONFIRMATIONS
    ledger.finalize(tx)
    final = await shop.settle(accept, tx, offers)
    assert isinstance(final, Receipt), final
    assert final.extensions["onchain-proof"]["blockRef"].startswith(f"{ledger.mc_seqno}:")


async def test_rate_limits_and_server_errors_are_retried(shop: TonShop) -> None:
    accept, offers = shop.offer()
    tx = shop.env.ledger.pay_ton(PAYER, PAYEE, 20_000_000, accept.extra.memo)
    shop.env.server.fail_next(429)
    shop.env.server.fail_next(503, 2)
    outcome = await shop.settle(accept, tx, offers)
    assert isinstance(outcome, Receipt), outcome


async def test_one_jetton_payment_pays_once_by_either_transaction(shop: TonShop) -> None:
    """The payee wallet's internal_transfer and the owner's notification are one payment."""
    first, offers = shop.offer(binding="none", **JETTON)
    wallet_tx, owner_tx = shop.env.ledger.pay_jetton(MASTER, PAYER, PAYEE, 1_500_000, "x")
    assert owner_tx is not None
    receipt = await shop.settle(first, wallet_tx, offers)
    assert isinstance(receipt, Receipt) and receipt.transaction == wallet_tx, receipt
    second, offers2 = shop.offer(binding="none", **JETTON)
    assert reason(await shop.settle(second, owner_tx, offers2)) is ReasonCode.TX_ALREADY_USED
    # and the other way round: a proof by the notification names the wallet's transaction
    third, offers3 = shop.offer(binding="none", **JETTON)
    wallet_tx, owner_tx = shop.env.ledger.pay_jetton(MASTER, PAYER, PAYEE, 1_500_000, "y")
    assert owner_tx is not None
    by_owner = await shop.settle(third, owner_tx, offers3)
    assert isinstance(by_owner, Receipt) and by_owner.transaction == wallet_tx, by_owner
    assert by_owner.extensions["onchain-proof"]["consumptionKey"] == f"{NETWORK}:{wallet_tx}"
    fourth, offers4 = shop.offer(binding="none", **JETTON)
    assert reason(await shop.settle(fourth, wallet_tx, offers4)) is ReasonCode.TX_ALREADY_USED


def _mangled(tx: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(tx))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("now",), _DELETE),  # no block time: never a final tx_before_challenge
        (("now",), "soon"),
        (("account",), None),
        (("in_msg", "destination"), None),
        (("in_msg", "source"), "not an address"),
        (("in_msg", "value"), "12.5"),
        (("in_msg", "message_content", "body"), "!!not base64!!"),
        (("description",), "ord"),
        (("in_msg",), ["a list"]),
    ],
)
async def test_malformed_toncenter_transactions_are_transient(
    shop: TonShop, path: tuple[str, ...], value: Any
) -> None:
    accept, _ = shop.offer()
    tx = shop.env.ledger.pay_ton(PAYER, PAYEE, 20_000_000, accept.extra.memo)
    record = shop.env.ledger.txs[tx].v3
    adapter = TONAdapter(NETWORK, NetworkSettings(rpc_urls=[shop.env.server.url]))
    query = Query(tx, "native", PAYEE, 1, accept.extra.memo, int(time.time()) - 5)
    intact = cast(V3Transaction, record)  # the ledger keeps toncenter's JSON as a plain dict
    assert (await adapter._observation(intact, query)).transfers  # the intact one reads fine
    with pytest.raises(RpcUnavailable):
        await adapter._observation(_mangled(record, path, value), query)  # type: ignore[arg-type]


async def test_locator_pages_past_a_busy_payee(make_settings: SettingsFactory, redis: Any) -> None:
    with ton_env() as env:
        assets = [{"network": NETWORK, "symbol": "JUSD", "asset": MASTER, "decimals": 6}]
        small_pages = env.network_settings(options={"scan_limit": 2})
        settings = make_settings(networks={NETWORK: small_pages}, assets=assets)
        async with connected_gate(settings) as gate, running_worker(settings):
            shop = TonShop(gate, env)
            accept, offers = shop.offer()
            for i in range(5):  # more unrelated traffic than one page holds
                env.ledger.pay_ton(STRANGER, PAYEE, 5, f"noise {i}")
            good = env.ledger.pay_ton(PAYER, PAYEE, 20_000_000, accept.extra.memo)
            outcome = await shop.settle(accept, f"ton:{PAYEE}|{accept.extra.nonce}", offers)
            assert isinstance(outcome, Receipt), outcome
            assert outcome.transaction == good


def _pay(env: TonEnv, terms: dict[str, Any], src: str, amount: int, memo: str, **how: Any) -> str:
    """A payment of the offer's asset to the payee; the hash a locator resolves to."""
    if terms["asset"] == "native":
        return env.ledger.pay_ton(src, PAYEE, amount, memo, **how)
    wallet_tx, _ = env.ledger.pay_jetton(MASTER, src, PAYEE, amount, memo, **how)
    return wallet_tx


@pytest.mark.parametrize("terms", [TON, JETTON], ids=["native", "jetton"])
async def test_locator_is_not_taken_by_dust_carrying_the_public_comment(
    shop: TonShop, terms: dict[str, Any]
) -> None:
    """The commitment is public: anyone can send 1 unit with it before the payer pays. The
    locator resolves to the candidate that pays the offer, not to the earliest."""
    accept, offers = shop.offer(**terms)
    memo = accept.extra.memo
    _pay(shop.env, terms, STRANGER, 1, memo)  # the attacker's dust lands first
    good = _pay(shop.env, terms, PAYER, terms["amount"], memo)
    _pay(shop.env, terms, STRANGER, 1, memo)
    outcome = await shop.settle(accept, f"ton:{PAYEE}|{accept.extra.nonce}", offers)
    assert isinstance(outcome, Receipt), outcome
    assert outcome.transaction == good and outcome.payer == PAYER
    assert paid(outcome) == str(terms["amount"])


@pytest.mark.parametrize("terms", [TON, JETTON], ids=["native", "jetton"])
async def test_locator_with_only_short_candidates_is_amount_too_low(
    shop: TonShop, terms: dict[str, Any]
) -> None:
    """When no candidate pays the offer, the earliest one is judged: an honest amount_too_low
    for what the payer sent, not a tx_not_found."""
    accept, offers = shop.offer(**terms)
    memo = accept.extra.memo
    _pay(shop.env, terms, PAYER, terms["amount"] - 1, memo)
    _pay(shop.env, terms, STRANGER, 1, memo)
    outcome = await shop.settle(accept, f"ton:{PAYEE}|{accept.extra.nonce}", offers)
    assert isinstance(outcome, Failure) and not outcome.transient, outcome
    assert outcome.error_reason is ReasonCode.AMOUNT_TOO_LOW
    assert f"paid {terms['amount'] - 1}," in outcome.error_message


async def test_locator_pages_past_dust_to_the_payment(
    make_settings: SettingsFactory, redis: Any
) -> None:
    """A page full of dust with the commitment does not end the scan before the payment."""
    with ton_env() as env:
        small_pages = env.network_settings(options={"scan_limit": 2})
        settings = make_settings(networks={NETWORK: small_pages})
        async with connected_gate(settings) as gate, running_worker(settings):
            shop = TonShop(gate, env)
            accept, offers = shop.offer()
            for _ in range(3):
                env.ledger.pay_ton(STRANGER, PAYEE, 1, accept.extra.memo)
            good = env.ledger.pay_ton(PAYER, PAYEE, TON["amount"], accept.extra.memo)
            outcome = await shop.settle(accept, f"ton:{PAYEE}|{accept.extra.nonce}", offers)
            assert isinstance(outcome, Receipt), outcome
            assert outcome.transaction == good


async def test_locator_waits_for_a_pending_candidate_rather_than_judge_dust(
    shop: TonShop,
) -> None:
    """Dust is final, the payment is not in a masterchain block yet: not yet, rather than a
    final amount_too_low that the payment, once final, could not undo."""
    accept, offers = shop.offer()
    ledger, memo = shop.env.ledger, accept.extra.memo
    locator = f"ton:{PAYEE}|{accept.extra.nonce}"
    ledger.pay_ton(STRANGER, PAYEE, 1, memo)
    good = ledger.pay_ton(PAYER, PAYEE, TON["amount"], memo, pending=True)
    first = await shop.settle(accept, locator, offers, wait=0.5)
    assert isinstance(first, Failure) and first.transient, first
    assert first.error_reason is ReasonCode.INSUFFICIENT_CONFIRMATIONS
    ledger.finalize(good)
    outcome = await shop.settle(accept, locator, offers)
    assert isinstance(outcome, Receipt) and outcome.transaction == good, outcome


@pytest.mark.parametrize("proof", ["owner", "wallet", "locator"])
async def test_zero_jetton_transfer_with_forwarded_ton_is_too_low(
    shop: TonShop, proof: str
) -> None:
    """A jetton transfer of 0 that forwards TON to the payee is a short payment of the jetton
    (amount_too_low), not a payment in another asset (wrong_asset), whichever of its two
    transactions the proof names, or a locator."""
    accept, offers = shop.offer(**JETTON)
    forwarded = 2 * JETTON["amount"]  # more nanotons than the offer's jetton units
    wallet_tx, owner_tx = shop.env.ledger.pay_jetton(
        MASTER, PAYER, PAYEE, 0, accept.extra.memo, forward_ton=forwarded
    )
    assert owner_tx is not None
    tx = {"owner": owner_tx, "wallet": wallet_tx}.get(proof, f"ton:{PAYEE}|{accept.extra.nonce}")
    outcome = await shop.settle(accept, tx, offers)
    assert isinstance(outcome, Failure) and not outcome.transient, outcome
    assert outcome.error_reason is ReasonCode.AMOUNT_TOO_LOW, outcome
    assert "paid 0," in outcome.error_message


async def test_zero_jetton_notification_reports_both_transfers(shop: TonShop) -> None:
    """The owner's notification of a 0-jetton transfer shows the jetton transfer of 0 (not
    dropped) and the forwarded TON as a native transfer from the payee's jetton wallet."""
    forwarded = 30_000_000
    _, owner_tx = shop.env.ledger.pay_jetton(MASTER, PAYER, PAYEE, 0, "c", forward_ton=forwarded)
    assert owner_tx is not None
    adapter = TONAdapter(NETWORK, NetworkSettings(rpc_urls=[shop.env.server.url]))
    await adapter.start()
    try:
        obs = await adapter.observe(Query(owner_tx, MASTER, PAYEE, 1, amount=1))
    finally:
        await adapter.close()
    wallet = shop.env.ledger.jetton_wallet(MASTER, PAYEE)
    assert sorted((t.asset, t.sender, t.recipient, t.amount) for t in obs.transfers) == sorted(
        [(MASTER, PAYER, PAYEE, 0), ("native", wallet, PAYEE, forwarded)]
    )


class _Overlap:
    """A pass-through to the local toncenter that counts the account scans in flight at once
    (each held 50 ms, so that scans started together overlap)."""

    def __init__(self) -> None:
        self.inner = AiohttpTransport(10)
        self.now = self.most = 0

    async def __call__(self, request: HttpRequest) -> HttpReply:
        scan = request.url.endswith("/transactions") and "account" in (request.params or {})
        if not scan:
            return await self.inner(request)
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.05)
            return await self.inner(request)
        finally:
            self.now -= 1


@pytest.mark.parametrize("bound", [2, 6])
async def test_locator_scans_in_flight_are_bounded(shop: TonShop, bound: int) -> None:
    """Each scan holds a page of parsed transactions: at most ``scan_concurrency`` run at once
    (what bounds the worker's memory with many locator proofs in flight), and the proofs
    waiting for a scan are all answered."""
    proofs = []
    for _ in range(6):
        accept, _ = shop.offer()
        tx = shop.env.ledger.pay_ton(PAYER, PAYEE, TON["amount"], accept.extra.memo)
        locator = f"ton:{PAYEE}|{accept.extra.nonce}"
        proofs.append((tx, Query(locator, "native", PAYEE, 1, accept.extra.memo, int(time.time()))))
    transport = _Overlap()
    config = NetworkSettings(**shop.env.network_settings(options={"scan_concurrency": bound}))
    adapter = TONAdapter(NETWORK, config, transport=transport)
    await adapter.start()
    try:
        observed = await asyncio.gather(*(adapter.observe(q) for _, q in proofs))
    finally:
        await adapter.close()
    assert [obs.txid for obs in observed] == [tx for tx, _ in proofs]
    assert transport.most == bound  # as many as allowed ran together, no more


@pytest.mark.parametrize("value", [0, -1, "8", 2.5, True])
def test_scan_concurrency_must_be_a_positive_whole_number(value: Any) -> None:
    with pytest.raises(ConfigError, match="scan_concurrency"):
        TONAdapter(
            NETWORK,
            NetworkSettings(rpc_urls=["http://127.0.0.1:9"], options={"scan_concurrency": value}),
        )
