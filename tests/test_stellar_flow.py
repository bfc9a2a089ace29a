"""End to end on the local Horizon: gate -> Redis -> arq worker -> Stellar adapter -> receipt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from stellar_sdk import (
    Asset,
    Claimant,
    CreateAccount,
    CreateClaimableBalance,
    MuxedAccount,
    PathPaymentStrictReceive,
    PathPaymentStrictSend,
    Payment,
)

from tests import support
from tests.harness_stellar import FAKE_USDC, NETWORK, PAYEE, PAYER, SPONSOR, USDC, StellarEnv
from tests.harness_stellar import stellar_env as make_env
from tests.support import SettingsFactory, connected_gate, ext, reason, running_worker
from verifier.challenge import proof_message
from verifier.gate import Gate
from verifier.models import Failure, ReasonCode, Receipt

RESOURCE = "http://shop.test/stellar"
PRICE = 1_000_000  # 0.1 USDC in stroops


class Shop(support.Shop):
    """The gate selling ``RESOURCE`` for ``PRICE`` in USDC on the local Horizon."""

    def __init__(self, gate: Gate, env: StellarEnv) -> None:
        super().__init__(gate, RESOURCE, network=NETWORK, asset="USDC", pay_to=PAYEE, amount=PRICE)
        self.env = env

    settle = support.Shop.settle_tx  # type: ignore[assignment]


@pytest.fixture
async def shop(make_settings: SettingsFactory, redis: Any) -> AsyncIterator[Shop]:
    with make_env() as env:
        net = {"rpc_urls": [env.horizon.url], "head_cache_seconds": 0, "rpc_timeout": 5}
        settings = make_settings(networks={NETWORK: net})
        async with connected_gate(settings) as gate, running_worker(settings):
            yield Shop(gate, env)


async def test_usdc_payment_with_memo_hash_in_one_horizon_request(shop: Shop) -> None:
    accept, offers = shop.offer()
    assert accept.asset == USDC and accept.extra.decimals == 7
    tx = shop.env.pay(accept)
    before = len(shop.env.horizon.paths)
    outcome = await shop.settle(accept, tx, offers)
    e = ext(outcome)
    assert isinstance(outcome, Receipt)
    assert outcome.transaction == tx and outcome.payer == PAYER.public_key
    assert e["bound"] is True and e["paidAmount"] == str(PRICE)
    assert e["consumptionKey"] == f"{NETWORK}:{tx}" and e["blockRef"].isdigit()
    assert [p for p in shop.env.horizon.paths[before:] if p.startswith("/transactions")] == [
        f"/transactions/{tx}/operations?include_failed=true&join=transactions&limit=200"
    ]


async def test_xlm_payment_and_create_account(shop: Shop) -> None:
    accept, offers = shop.offer(asset="native", amount=25_000_000)
    assert ext(await shop.settle(accept, shop.env.pay(accept), offers))["paidAmount"] == "25000000"
    accept2, offers2 = shop.offer(asset="native", amount=25_000_000)
    op = CreateAccount(PAYEE, "2.5000000")
    tx, _ = shop.env.wallet.submit(PAYER, [op], memo=shop.env.memo(accept2))
    assert ext(await shop.settle(accept2, tx, offers2))["paidAmount"] == "25000000"


async def test_path_payments_count_the_destination_amount(shop: Shop) -> None:
    usdc = Asset("USDC", USDC.split(":")[1])
    accept, offers = shop.offer()
    send = PathPaymentStrictSend(PAYEE, Asset.native(), "500", usdc, "0.0500000", [])
    tx, _ = shop.env.wallet.submit(
        PAYER, [send], memo=shop.env.memo(accept), delivered={0: PRICE + 7}
    )
    assert ext(await shop.settle(accept, tx, offers))["paidAmount"] == str(PRICE + 7)
    accept2, offers2 = shop.offer()
    short = PathPaymentStrictSend(PAYEE, Asset.native(), "500", usdc, "0.0500000", [])
    tx2, _ = shop.env.wallet.submit(
        PAYER, [short], memo=shop.env.memo(accept2), delivered={0: PRICE - 1}
    )
    assert reason(await shop.settle(accept2, tx2, offers2)) is ReasonCode.AMOUNT_TOO_LOW
    accept3, offers3 = shop.offer()
    recv = PathPaymentStrictReceive(PAYEE, Asset.native(), "900", usdc, "0.1000000", [])
    tx3, _ = shop.env.wallet.submit(PAYER, [recv], memo=shop.env.memo(accept3))
    assert ext(await shop.settle(accept3, tx3, offers3))["paidAmount"] == str(PRICE)


async def test_muxed_destination(shop: Shop) -> None:
    m42 = MuxedAccount(PAYEE, 42).account_muxed
    m43 = MuxedAccount(PAYEE, 43).account_muxed
    assert m42 is not None and m43 is not None
    accept, offers = shop.offer(pay_to=m42)
    assert isinstance(await shop.settle(accept, shop.env.pay(accept, to=m42), offers), Receipt)
    wrong_id, offers2 = shop.offer(pay_to=m42)
    outcome = await shop.settle(wrong_id, shop.env.pay(wrong_id, to=m43), offers2)
    assert reason(outcome) is ReasonCode.WRONG_RECIPIENT
    plain, offers3 = shop.offer(pay_to=m42)
    outcome = await shop.settle(plain, shop.env.pay(plain, to=PAYEE), offers3)
    assert reason(outcome) is ReasonCode.WRONG_RECIPIENT
    g_offer, offers4 = shop.offer()  # a G payee is paid by a payment to any of its M forms
    assert isinstance(await shop.settle(g_offer, shop.env.pay(g_offer, to=m43), offers4), Receipt)


async def test_fee_bump_outer_and_inner_hash_are_one_payment(shop: Shop) -> None:
    accept, offers = shop.offer(binding="none")
    pay = Payment(PAYEE, Asset("USDC", USDC.split(":")[1]), "0.1000000")
    outer, inner = shop.env.wallet.submit(PAYER, [pay], fee_bump_by=SPONSOR)
    assert outer != inner
    first = await shop.settle(accept, outer, offers)
    assert isinstance(first, Receipt) and first.transaction == inner
    assert ext(first)["consumptionKey"] == f"{NETWORK}:{inner}"
    assert await shop.settle(accept, inner, offers) == first  # same nonce, inner hash: same
    other, offers2 = shop.offer(binding="none")
    assert reason(await shop.settle(other, inner, offers2)) is ReasonCode.TX_ALREADY_USED
    third, offers3 = shop.offer(binding="none")
    assert reason(await shop.settle(third, outer, offers3)) is ReasonCode.TX_ALREADY_USED


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("failed", ReasonCode.TX_REVERTED),
        ("wrong_issuer", ReasonCode.WRONG_ASSET),
        ("claimable", ReasonCode.TRANSFER_NOT_FOUND),
        ("no_memo", ReasonCode.BINDING_MISSING),
    ],
)
async def test_payments_that_do_not_count(shop: Shop, case: str, expected: ReasonCode) -> None:
    accept, offers = shop.offer()
    if case == "claimable":
        usdc = Asset("USDC", USDC.split(":")[1])
        op = CreateClaimableBalance(usdc, "0.1000000", [Claimant(PAYEE)])
        tx, _ = shop.env.wallet.submit(PAYER, [op], memo=shop.env.memo(accept))
    else:
        hows: dict[str, dict[str, Any]] = {
            "failed": {"fail": True},
            "wrong_issuer": {"asset": FAKE_USDC},
            "no_memo": {"memo": False},
        }
        how = hows[case]
        tx = shop.env.pay(accept, **how)
    outcome = await shop.settle(accept, tx, offers)
    assert isinstance(outcome, Failure) and not outcome.transient, outcome
    assert outcome.error_reason is expected, outcome


async def test_payer_signature_binds_without_memo(shop: Shop) -> None:
    accept, offers = shop.offer(binding="signature")
    tx = shop.env.pay(accept, memo=False)
    message = proof_message(NETWORK, accept.extra.nonce, tx)
    forged = SPONSOR.sign(message).hex()
    assert reason(await shop.settle(accept, tx, offers, forged)) is ReasonCode.BINDING_MISSING
    accept2, offers2 = shop.offer(binding="signature")
    tx2 = shop.env.pay(accept2, memo=False)
    good = PAYER.sign(proof_message(NETWORK, accept2.extra.nonce, tx2)).hex()
    assert ext(await shop.settle(accept2, tx2, offers2, good))["bound"] is True


async def test_horizon_404_until_included(shop: Shop) -> None:
    accept, offers = shop.offer()
    tx = shop.env.pay(accept)
    shop.env.horizon.hide(tx)
    pending = await shop.settle(accept, tx, offers, wait=0.5)
    assert isinstance(pending, Failure) and pending.transient
    assert pending.error_reason is ReasonCode.TX_NOT_FOUND
    shop.env.horizon.reveal(tx)
    assert isinstance(await shop.settle(accept, tx, offers), Receipt)


@pytest.mark.parametrize("status", [503, 429])
async def test_horizon_errors_are_retried(shop: Shop, status: int) -> None:
    accept, offers = shop.offer()
    tx = shop.env.pay(accept)
    shop.env.horizon.fail_next(3, status)
    before = shop.env.horizon.requests
    outcome = await shop.settle(accept, tx, offers)
    assert isinstance(outcome, Receipt), outcome
    assert shop.env.horizon.requests - before >= 4  # three refused, then served
