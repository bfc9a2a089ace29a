"""End to end on LiteSVM: gate -> Redis -> arq worker -> Solana adapter -> local RPC -> receipt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from chains.solana import SolanaAdapter
from devchain.solana_ledger import NETWORK
from tests.harness_solana import SolanaEnv, SolanaShop, solana_env, solana_shop
from tests.support import SettingsFactory, ext, reason
from verifier.adapter import NotFinal, Query, TxNotFound
from verifier.models import Failure, Finality, ReasonCode, Receipt
from verifier.settings import NetworkSettings


@pytest.fixture
def env() -> SolanaEnv:
    return solana_env()


@pytest.fixture
async def shop(
    env: SolanaEnv, make_settings: SettingsFactory, redis: Any
) -> AsyncIterator[SolanaShop]:
    async with solana_shop(env.settings(make_settings)) as s:
        yield s


async def test_spl_transfer_with_memo_legacy_transaction(shop: SolanaShop, env: SolanaEnv) -> None:
    accept, offers = shop.offer()
    ledger = env.ledger
    source, dest = ledger.ata(env.payer.pubkey(), env.usdc), ledger.ata(env.payee, env.usdc)
    ixs = [
        ledger.token_transfer_ix(
            env.usdc, source, dest, env.payer.pubkey(), 100_000, checked=False
        ),
        ledger.memo_ix(accept.extra.memo),
    ]
    tx = ledger.execute(ixs, [env.payer], legacy=True)
    assert ledger.records[tx].result["version"] == "legacy"
    outcome = await shop.settle(shop.proof(accept, tx), offers)
    e = ext(outcome)
    assert e["paidAmount"] == "100000" and e["bound"] is True
    assert isinstance(outcome, Receipt)  # as ext() checked
    assert outcome.payer == str(env.payer.pubkey()) and outcome.transaction == tx
    assert e["consumptionKey"] == f"{NETWORK}:{tx}" and e["blockRef"] == str(
        ledger.records[tx].slot
    )


async def test_transfer_checked_v0(shop: SolanaShop, env: SolanaEnv) -> None:
    accept, offers = shop.offer()
    tx = env.ledger.execute(
        env.token_payment(env.usdc, env.payee, 250_000, memo=accept.extra.memo), [env.payer]
    )
    parsed = env.ledger.records[tx].result["transaction"]["message"]["instructions"][1]["parsed"]
    assert parsed["type"] == "transferChecked"
    assert ext(await shop.settle(shop.proof(accept, tx), offers))["paidAmount"] == "250000"


async def test_token_2022_transfer_fee_counts_net(shop: SolanaShop, env: SolanaEnv) -> None:
    accept, offers = shop.offer(asset="FEE", amount=100_000)
    gross = env.token_payment(env.fee_mint, env.payee, 100_000, memo=accept.extra.memo)
    short = await shop.settle(shop.proof(accept, env.ledger.execute(gross, [env.payer])), offers)
    assert reason(short) is ReasonCode.AMOUNT_TOO_LOW  # 1% withheld: 99 000 arrived
    accept, offers = shop.offer(asset="FEE", amount=100_000)
    grossed_up = env.token_payment(env.fee_mint, env.payee, 101_011, memo=accept.extra.memo)
    outcome = await shop.settle(
        shop.proof(accept, env.ledger.execute(grossed_up, [env.payer])), offers
    )
    assert ext(outcome)["paidAmount"] == "100000"  # 101 011 - fee 1 011 (1%, rounded up)


async def test_ata_created_in_the_same_transaction(shop: SolanaShop, env: SolanaEnv) -> None:
    newcomer = Keypair().pubkey()
    assert env.ledger.svm.get_account(env.ledger.ata(newcomer, env.usdc)) is None
    accept, offers = shop.offer(pay_to=str(newcomer))
    tx = env.ledger.execute(
        env.token_payment(env.usdc, newcomer, 100_000, memo=accept.extra.memo), [env.payer]
    )
    meta = env.ledger.records[tx].result["meta"]
    assert len(meta["preTokenBalances"]) < len(meta["postTokenBalances"])
    assert ext(await shop.settle(shop.proof(accept, tx), offers))["paidAmount"] == "100000"


async def test_native_sol(shop: SolanaShop, env: SolanaEnv) -> None:
    accept, offers = shop.offer(asset="native", amount=5_000_000)
    ixs = [
        env.ledger.sol_transfer_ix(env.payer.pubkey(), env.payee, 5_000_000),
        env.ledger.memo_ix(accept.extra.memo, "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"),
    ]
    outcome = await shop.settle(shop.proof(accept, env.ledger.execute(ixs, [env.payer])), offers)
    assert ext(outcome)["paidAmount"] == "5000000" and ext(outcome)["bound"] is True


async def test_wrong_mint(shop: SolanaShop, env: SolanaEnv) -> None:
    accept, offers = shop.offer()
    tx = env.ledger.execute(
        env.token_payment(env.other, env.payee, 100_000, memo=accept.extra.memo), [env.payer]
    )
    assert reason(await shop.settle(shop.proof(accept, tx), offers)) is ReasonCode.WRONG_ASSET


async def test_token_accounts_that_are_not_the_payees_ata(shop: SolanaShop, env: SolanaEnv) -> None:
    ledger = env.ledger
    source = ledger.ata(env.payer.pubkey(), env.usdc)
    # Right mint, account owned by someone else; then an account of the payee that is not its ATA.
    for owner in (env.stranger, env.payee):
        account = ledger.open_plain_account(owner, env.usdc)
        accept, offers = shop.offer()
        ixs = [
            ledger.token_transfer_ix(env.usdc, source, account, env.payer.pubkey(), 100_000),
            ledger.memo_ix(accept.extra.memo),
        ]
        outcome = await shop.settle(shop.proof(accept, ledger.execute(ixs, [env.payer])), offers)
        assert reason(outcome) is ReasonCode.WRONG_RECIPIENT, owner


@pytest.mark.parametrize("heir", ["payee", "stranger"])
async def test_paying_account_changes_owner_in_the_same_transaction(
    shop: SolanaShop, env: SolanaEnv, heir: str
) -> None:
    # The owner pays the payee from a token account, then hands that account over (SetAuthority
    # AccountOwner) in the same transaction: its pre balance is the old owner's, its post
    # balance the new owner's. What reached the payee's ATA is paid, by the old owner.
    ledger = env.ledger
    owner = ledger.wallet()
    account = ledger.open_account(owner.pubkey(), env.usdc, 300_000)
    new_owner = env.payee if heir == "payee" else env.stranger
    accept, offers = shop.offer()
    ixs = [
        ledger.token_transfer_ix(
            env.usdc, account, ledger.ata(env.payee, env.usdc), owner.pubkey(), 100_000
        ),
        ledger.set_owner_ix(env.usdc, account, owner.pubkey(), new_owner),
        ledger.memo_ix(accept.extra.memo),
    ]
    tx = ledger.execute(ixs, [owner])
    meta = ledger.records[tx].result["meta"]
    held = {(b["owner"], b["uiTokenAmount"]["amount"]) for b in meta["postTokenBalances"]}
    assert (str(new_owner), "200000") in held
    outcome = await shop.settle(shop.proof(accept, tx), offers)
    assert isinstance(outcome, Receipt), outcome
    assert ext(outcome)["paidAmount"] == "100000" and ext(outcome)["bound"] is True
    assert outcome.payer == str(owner.pubkey())


async def test_failed_transaction(shop: SolanaShop, env: SolanaEnv) -> None:
    accept, offers = shop.offer()
    ixs = env.token_payment(env.usdc, env.payee, 100_000, memo=accept.extra.memo, sender=env.poor)
    tx = env.ledger.execute(ixs, [env.poor], allow_failure=True)
    assert env.ledger.records[tx].result["meta"]["err"] is not None
    assert reason(await shop.settle(shop.proof(accept, tx), offers)) is ReasonCode.TX_REVERTED


@pytest.mark.parametrize(
    ("memo", "expected"),
    [
        (None, ReasonCode.BINDING_MISSING),
        ("ping", ReasonCode.BINDING_MISSING),
        ("0" * 64, ReasonCode.BINDING_MISMATCH),  # commits to some other challenge
    ],
)
async def test_memo_missing_or_wrong(
    shop: SolanaShop, env: SolanaEnv, memo: str | None, expected: ReasonCode
) -> None:
    accept, offers = shop.offer(binding="required")
    tx = env.ledger.execute(env.token_payment(env.usdc, env.payee, 100_000, memo=memo), [env.payer])
    assert reason(await shop.settle(shop.proof(accept, tx), offers)) is expected


async def test_payer_signature_binds_without_memo(shop: SolanaShop, env: SolanaEnv) -> None:
    accept, offers = shop.offer(binding="signature")
    tx = env.ledger.execute(env.token_payment(env.usdc, env.payee, 100_000, memo=None), [env.payer])
    forged = await shop.settle(shop.proof(accept, tx, shop.sign(accept, tx, Keypair())), offers)
    assert reason(forged) is ReasonCode.BINDING_MISSING
    accept, offers = shop.offer(binding="signature")
    tx = env.ledger.execute(env.token_payment(env.usdc, env.payee, 100_000, memo=None), [env.payer])
    outcome = await shop.settle(shop.proof(accept, tx, shop.sign(accept, tx, env.payer)), offers)
    assert ext(outcome)["bound"] is True


async def test_v0_transaction_with_lookup_table(shop: SolanaShop, env: SolanaEnv) -> None:
    ledger = env.ledger
    dest = ledger.ata(env.payee, env.usdc)
    table = ledger.lookup_table([dest, env.usdc.address])
    accept, offers = shop.offer()
    ixs = [
        ledger.token_transfer_ix(
            env.usdc, ledger.ata(env.payer.pubkey(), env.usdc), dest, env.payer.pubkey(), 100_000
        ),
        ledger.memo_ix(accept.extra.memo),
    ]
    tx = ledger.execute(ixs, [env.payer], tables=[table])
    result = ledger.records[tx].result
    assert result["version"] == 0 and result["meta"]["loadedAddresses"]["writable"] == [str(dest)]
    assert ext(await shop.settle(shop.proof(accept, tx), offers))["paidAmount"] == "100000"


async def test_not_yet_visible_then_processed_then_confirmed(
    shop: SolanaShop, env: SolanaEnv
) -> None:
    accept, offers = shop.offer()
    ixs = env.token_payment(env.usdc, env.payee, 100_000, memo=accept.extra.memo)
    tx = env.ledger.execute(ixs, [env.payer], commitment="hidden")
    header = shop.proof(accept, tx)
    assert reason(await shop.settle(header, offers, wait=0.5)) is ReasonCode.TX_NOT_FOUND
    env.ledger.set_commitment(tx, "processed")
    pending = await shop.settle(header, offers, wait=0.5)
    assert isinstance(pending, Failure) and pending.transient
    assert pending.error_reason is ReasonCode.INSUFFICIENT_CONFIRMATIONS
    env.ledger.set_commitment(tx, "confirmed")
    assert ext(await shop.settle(header, offers))["paidAmount"] == "100000"


async def test_replay_with_another_nonce(shop: SolanaShop, env: SolanaEnv) -> None:
    accept, offers = shop.offer()
    tx = env.ledger.execute(
        env.token_payment(env.usdc, env.payee, 100_000, memo=accept.extra.memo), [env.payer]
    )
    first = await shop.settle(shop.proof(accept, tx), offers)
    assert isinstance(first, Receipt)
    assert await shop.settle(shop.proof(accept, tx), offers) == first
    other, offers2 = shop.offer(binding="none")
    assert reason(await shop.settle(shop.proof(other, tx), offers2)) is ReasonCode.TX_ALREADY_USED


async def test_finalized_policy_waits_for_finalization(env: SolanaEnv) -> None:
    adapter = SolanaAdapter(
        NETWORK, NetworkSettings(rpc_urls=[env.server.url], finality="finalized")
    )
    await adapter.start()
    try:
        tx = env.ledger.execute(
            env.token_payment(env.usdc, env.payee, 1, memo=None),
            [env.payer],
            commitment="confirmed",
        )
        query = Query(tx, str(env.usdc.address), str(env.payee), 1)
        with pytest.raises(NotFinal):
            await adapter.observe(query)
        env.ledger.set_commitment(tx, "finalized")
        obs = await adapter.observe(query)
        assert obs.finality is Finality.FINALIZED and obs.confirmations >= 1
        with pytest.raises(TxNotFound):
            await adapter.observe(Query(str(Signature.default()), "native", str(env.payee), 1))
    finally:
        await adapter.close()


async def test_rpc_calls_per_verification_under_load(env: SolanaEnv) -> None:
    adapter = SolanaAdapter(NETWORK, NetworkSettings(rpc_urls=[env.server.url]))
    await adapter.start()
    try:
        txs = [
            env.ledger.execute(
                env.token_payment(env.usdc, env.payee, i + 1, memo=None), [env.payer]
            )
            for i in range(40)
        ]
        env.server.reset_stats()
        observations = await asyncio.gather(
            *(adapter.observe(Query(t, str(env.usdc.address), str(env.payee), 1)) for t in txs)
        )
        assert [o.transfers[0].amount for o in observations] == list(range(1, 41))
        calls = sum(env.server.calls.values())
        assert calls / len(txs) <= 1.2, env.server.calls
    finally:
        await adapter.close()


def test_addresses_and_signatures_are_canonical() -> None:
    adapter = SolanaAdapter(NETWORK, NetworkSettings(rpc_urls=["http://127.0.0.1:9"]))
    key = Keypair().pubkey()
    assert adapter.normalize_address(f" {key} ") == str(key)
    # One character too many for the largest key (a random key plus one may still be 32 bytes).
    longest = str(Pubkey.from_bytes(bytes([255] * 32)))
    for bad in ("0x" + "ab" * 20, "1" * 31, longest + "1", ""):
        with pytest.raises(ValueError):
            adapter.normalize_address(bad)
    sig = Signature.from_bytes(bytes(range(64)))
    assert adapter.canonical_txid(f"{sig}\n") == str(sig)
    assert adapter.normalize_asset("native") == "native"
    assert str(Pubkey.default()) == adapter.normalize_asset("11111111111111111111111111111111")
