"""End to end on a real anvil node: gate -> Redis -> arq worker -> EVM adapter -> receipt."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson
import pytest

from tests.evm_fixtures import NETWORK, PAYEE, PAYER, RESOURCE, STRANGER, EvmEnv, Shop
from tests.support import ext, reason
from verifier.models import Failure, ReasonCode, Receipt


async def test_good_erc20_payment(shop: Shop) -> None:
    accept, offers = shop.offer()
    tx = shop.pay(accept)
    outcome = await shop.settle(shop.proof(accept, tx), offers)
    assert isinstance(outcome, Receipt), outcome
    assert outcome.transaction == tx.lower() and outcome.network == NETWORK
    assert outcome.payer == PAYER.lower() and outcome.pay_to == PAYEE
    assert outcome.amount == "100000" and outcome.nonce == accept.extra.nonce
    e = ext(outcome)
    assert e["paidAmount"] == "100000" and e["bound"] is True and e["confirmations"] >= 1
    assert e["consumptionKey"] == f"{NETWORK}:{tx.lower()}"
    assert abs(e["blockTime"] - time.time()) < 60


async def test_native_coin_payment(shop: Shop) -> None:
    accept, offers = shop.offer(asset="native", amount=10**15)
    tx = shop.env.chain.native_transfer(PAYER, PAYEE, 10**15, data=bytes.fromhex(accept.extra.memo))
    outcome = await shop.settle(shop.proof(accept, tx), offers)
    assert isinstance(outcome, Receipt), outcome
    assert ext(outcome)["paidAmount"] == str(10**15) and ext(outcome)["bound"]


async def test_overpayment_is_accepted_and_reported(shop: Shop) -> None:
    accept, offers = shop.offer()
    outcome = await shop.settle(shop.proof(accept, shop.pay(accept, 250_000)), offers)
    assert isinstance(outcome, Receipt), outcome
    assert outcome.amount == "100000" and ext(outcome)["paidAmount"] == "250000"


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ({"amount": 99_999}, ReasonCode.AMOUNT_TOO_LOW),
        ({"token": "other"}, ReasonCode.WRONG_ASSET),
        ({"to": STRANGER}, ReasonCode.WRONG_RECIPIENT),
        ({"memo": False}, ReasonCode.BINDING_MISSING),
    ],
)
async def test_payments_that_do_not_count(
    shop: Shop, how: dict[str, Any], expected: ReasonCode
) -> None:
    accept, offers = shop.offer()
    if how.get("token") == "other":
        how = {**how, "token": shop.env.other_token}
    outcome = await shop.settle(shop.proof(accept, shop.pay(accept, **how)), offers)
    assert isinstance(outcome, Failure) and not outcome.transient
    assert outcome.error_reason is expected, outcome


async def test_reverted_transaction(shop: Shop) -> None:
    accept, offers = shop.offer()
    poor = shop.env.chain
    tx = poor.token_transfer(
        shop.env.token,
        STRANGER,
        PAYEE,
        10**30,
        suffix=bytes.fromhex(accept.extra.memo),
        gas=200_000,
    )
    assert poor.receipt(tx)["status"] == "0x0"
    assert reason(await shop.settle(shop.proof(accept, tx), offers)) is ReasonCode.TX_REVERTED


async def test_transfer_split_across_two_logs_with_signature_binding(shop: Shop) -> None:
    accept, offers = shop.offer(binding="signature")
    tx = shop.env.chain.multi_transfer(shop.env.token, PAYER, [PAYEE, PAYEE], [40_000, 70_000])
    unsigned = await shop.settle(shop.proof(accept, tx), offers)
    assert reason(unsigned) is ReasonCode.BINDING_MISSING
    accept2, offers2 = shop.offer(binding="signature")
    tx2 = shop.env.chain.multi_transfer(shop.env.token, PAYER, [PAYEE, PAYEE], [40_000, 70_000])
    outcome = await shop.settle(shop.proof(accept2, tx2, shop.sign(accept2, tx2)), offers2)
    assert isinstance(outcome, Receipt), outcome
    assert ext(outcome)["paidAmount"] == "110000" and ext(outcome)["bound"] is True


async def test_signature_by_someone_else_does_not_bind(shop: Shop) -> None:
    from devchain.anvil import ANVIL_KEYS

    accept, offers = shop.offer()
    tx = shop.pay(accept, memo=False)
    forged = shop.sign(accept, tx, key=ANVIL_KEYS[4])
    outcome = await shop.settle(shop.proof(accept, tx, forged), offers)
    assert reason(outcome) is ReasonCode.BINDING_MISSING
    garbage = await shop.settle(shop.proof(shop.offer()[0], tx, "0x1234"), offers)
    assert isinstance(garbage, Failure)


async def test_contract_wallet_binds_with_eip1271(shop: Shop) -> None:
    chain = shop.env.chain
    wallet = chain.deploy_wallet(PAYER)
    chain.mint(shop.env.token, wallet, 10**9)
    accept, offers = shop.offer(binding="signature")
    call = (
        bytes.fromhex("a9059cbb")
        + bytes(12)
        + bytes.fromhex(PAYEE[2:])
        + (100_000).to_bytes(32, "big")
    )
    tx = chain.wallet_execute(wallet, PAYER, shop.env.token, 0, call)
    outcome = await shop.settle(shop.proof(accept, tx, shop.sign(accept, tx)), offers)
    assert isinstance(outcome, Receipt), outcome
    assert outcome.payer == wallet.lower() and ext(outcome)["bound"] is True


async def test_malformed_transfer_log_is_not_a_payment(shop: Shop) -> None:
    accept, offers = shop.offer(binding="none")
    tx = shop.env.chain.emit_malformed_transfer(shop.env.token, PAYER, PAYEE, 100_000)
    assert reason(await shop.settle(shop.proof(accept, tx), offers)) is (
        ReasonCode.TRANSFER_NOT_FOUND
    )


async def test_transaction_before_the_challenge(shop: Shop) -> None:
    early, _ = shop.offer()
    tx = shop.pay(early)
    later, offers = shop.offer(now=time.time() + 30)  # issued after the block (skew is 5 s)
    outcome = await shop.settle(shop.proof(later, tx), offers)
    assert reason(outcome) is ReasonCode.TX_BEFORE_CHALLENGE


async def test_pending_until_deep_enough_then_accepted(shop: Shop) -> None:
    accept, offers = shop.offer(min_confirmations=3)
    tx = shop.pay(accept)
    header = shop.proof(accept, tx)
    pending = await shop.settle(header, offers, wait=0.5)
    assert isinstance(pending, Failure) and pending.transient
    assert pending.error_reason is ReasonCode.INSUFFICIENT_CONFIRMATIONS
    shop.env.chain.mine(2)
    outcome = await shop.settle(header, offers)
    assert isinstance(outcome, Receipt), outcome
    assert ext(outcome)["confirmations"] >= 3


async def test_unknown_transaction_is_pending_not_rejected(shop: Shop) -> None:
    accept, offers = shop.offer()
    outcome = await shop.settle(shop.proof(accept, "0x" + "12" * 32), offers, wait=0.5)
    assert isinstance(outcome, Failure) and outcome.transient
    assert outcome.error_reason is ReasonCode.TX_NOT_FOUND


async def test_same_proof_twice_gets_the_same_receipt(shop: Shop) -> None:
    accept, offers = shop.offer()
    tx = shop.pay(accept)
    first = await shop.settle(shop.proof(accept, tx), offers)
    second = await shop.settle(shop.proof(accept, tx), offers)
    upper = await shop.settle(shop.proof(accept, "0x" + tx[2:].upper()), offers)
    assert isinstance(first, Receipt)
    assert second == first and upper == first


async def test_same_transaction_with_another_nonce(shop: Shop) -> None:
    accept, offers = shop.offer(binding="none")
    tx = shop.pay(accept)
    assert isinstance(await shop.settle(shop.proof(accept, tx), offers), Receipt)
    other, offers2 = shop.offer(binding="none")
    assert reason(await shop.settle(shop.proof(other, tx), offers2)) is ReasonCode.TX_ALREADY_USED
    # A memo-bound offer: the calldata commits to the first nonce, which already consumed it;
    # neither the new challenge nor a payer signature for it can take the transaction.
    bound, offers3 = shop.offer()
    assert reason(await shop.settle(shop.proof(bound, tx), offers3)) is ReasonCode.TX_ALREADY_USED
    signed = await shop.settle(shop.proof(bound, tx, shop.sign(bound, tx)), offers3)
    assert reason(signed) is ReasonCode.TX_ALREADY_USED


async def test_same_nonce_with_another_transaction(shop: Shop) -> None:
    accept, offers = shop.offer()
    assert isinstance(await shop.settle(shop.proof(accept, shop.pay(accept)), offers), Receipt)
    again = await shop.settle(shop.proof(accept, shop.pay(accept)), offers)
    assert reason(again) is ReasonCode.NONCE_ALREADY_USED


async def test_edited_accept_that_lowers_the_amount(shop: Shop) -> None:
    accept, offers = shop.offer()
    cheap = accept.model_copy(update={"amount": "1"})
    tx = shop.pay(accept, 1)
    outcome = await shop.settle(shop.proof(cheap, tx), offers)
    assert reason(outcome) is ReasonCode.NONCE_UNKNOWN


async def test_challenge_for_another_price_is_refused(shop: Shop) -> None:
    accept, _ = shop.offer(amount=1)  # a valid challenge, but not what this route sells
    tx = shop.pay(accept)
    outcome = await shop.settle(shop.proof(accept, tx), shop.offers())
    assert reason(outcome) is ReasonCode.INVALID_PAYLOAD


async def test_expired_challenge(shop: Shop) -> None:
    accept, offers = shop.offer(now=time.time() - 700)  # 600 s offers, issued 700 s ago
    tx = shop.pay(accept)
    assert reason(await shop.settle(shop.proof(accept, tx), offers)) is ReasonCode.PAYMENT_EXPIRED


async def test_forged_nonce(shop: Shop) -> None:
    accept, offers = shop.offer()
    forged_nonce = accept.extra.nonce[:-4] + "AAAA"
    extra = accept.extra.model_copy(update={"nonce": forged_nonce})
    forged = accept.model_copy(update={"extra": extra})
    tx = shop.pay(accept)
    assert reason(await shop.settle(shop.proof(forged, tx), offers)) is ReasonCode.NONCE_UNKNOWN


@pytest.mark.parametrize(
    "header",
    [
        "not base64 at all!",
        base64.b64encode(b"[]").decode(),
        base64.b64encode(b'{"x402Version": 2, "accepted": 5}').decode(),
        "QUFB" * 10_000,
    ],
)
async def test_malformed_headers(shop: Shop, header: str) -> None:
    outcome = await shop.settle(header, shop.offers())
    assert reason(outcome) is ReasonCode.INVALID_PAYLOAD


@pytest.mark.parametrize("tx", ["0x1234", "hello", "0x" + "zz" * 32, "0x" + "ab" * 33])
async def test_garbage_transaction_ids(shop: Shop, tx: str) -> None:
    accept, offers = shop.offer()
    outcome = await shop.settle(shop.proof(accept, tx), offers)
    assert reason(outcome) is ReasonCode.INVALID_PAYLOAD


async def test_unknown_network(shop: Shop) -> None:
    accept, offers = shop.offer()
    elsewhere = accept.model_copy(update={"network": "eip155:1"})
    outcome = await shop.settle(shop.proof(elsewhere, "0x" + "ab" * 32), offers)
    assert reason(outcome) is ReasonCode.NONCE_UNKNOWN  # the MAC covers the network


async def test_twenty_concurrent_submissions_of_one_proof(shop: Shop) -> None:
    accept, offers = shop.offer()
    header = shop.proof(accept, shop.pay(accept))
    outcomes = await asyncio.gather(*(shop.settle(header, offers) for _ in range(20)))
    assert all(isinstance(o, Receipt) for o in outcomes), outcomes
    assert len({o.model_dump_json() for o in outcomes}) == 1
    stream = await shop.gate.redis.xrange(shop.gate.store.keys.stream)
    mine = [r for _, r in stream if orjson.loads(r[b"receipt"])["nonce"] == accept.extra.nonce]
    assert len(mine) == 1


async def test_resource_is_part_of_the_challenge(shop: Shop) -> None:
    accept, _ = shop.offer()
    tx = shop.pay(accept)
    outcome = await shop.gate.settle(
        shop.proof(accept, tx), resource=RESOURCE + "/premium", offers=None, timeout=5
    )
    assert reason(outcome) is ReasonCode.NONCE_UNKNOWN


def test_env_is_real(evm: EvmEnv) -> None:
    assert evm.chain.chain_id() == 31337
    assert evm.chain.balance_of(evm.token, PAYER) > 0
