"""Who paid, when someone else submitted or co-signed the transaction: an EVM bundler's batch
and a Solana fee-payer relay, on real chains through the gate, Redis and the worker.

Only an owner whose funds paid the payee can bind a proof with a signature, and only for what
that owner paid; the bundler or relay that sent the transaction and paid its fee cannot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from solders.keypair import Keypair

from devchain.anvil import ANVIL_ACCOUNTS, ANVIL_KEYS
from tests.evm_fixtures import PAYEE, EvmEnv, Shop
from tests.harness_solana import SolanaEnv, SolanaShop, solana_env, solana_shop
from tests.support import SettingsFactory, ext, reason
from verifier.models import Failure, ReasonCode, Receipt

OWNER_A, KEY_A = ANVIL_ACCOUNTS[4], ANVIL_KEYS[4]
OWNER_B, KEY_B = ANVIL_ACCOUNTS[5], ANVIL_KEYS[5]
BUNDLER, BUNDLER_KEY = ANVIL_ACCOUNTS[9], ANVIL_KEYS[9]
PRICE = 100_000  # the EVM shop's default amount
SHARE_A, SHARE_B = 120_000, 80_000  # 60% and 40% of one batch; only A's share covers PRICE


# ---- EVM: a bundler submits one batch that pulls two owners' tokens -----------------------


@pytest.fixture
def owners(evm: EvmEnv) -> None:
    """Owners A and B hold the test token and let the batch contract pull it."""
    for owner in (OWNER_A, OWNER_B):
        evm.chain.mint(evm.token, owner, 10**9)
        evm.chain.approve(evm.token, owner, evm.batcher)


def batch(env: EvmEnv, owners: list[str], amounts: list[int]) -> str:
    return env.chain.batch_pull(env.batcher, BUNDLER, env.token, owners, amounts, PAYEE)


async def test_bundler_signature_does_not_bind(shop: Shop, owners: None) -> None:
    tx = batch(shop.env, [OWNER_A, OWNER_B], [SHARE_A, SHARE_B])
    assert shop.env.chain.rpc("eth_getTransactionByHash", [tx])["from"] == BUNDLER.lower()
    accept, offers = shop.offer(binding="signature")
    signed = shop.proof(accept, tx, shop.sign(accept, tx, key=BUNDLER_KEY))
    outcome = await shop.settle(signed, offers)
    assert isinstance(outcome, Failure) and not outcome.transient, outcome
    assert outcome.error_reason is ReasonCode.BINDING_MISSING, outcome


async def test_owner_signature_buys_only_that_owners_share(shop: Shop, owners: None) -> None:
    tx = batch(shop.env, [OWNER_A, OWNER_B], [SHARE_A, SHARE_B])
    accept, offers = shop.offer(binding="signature")
    by_b = await shop.settle(shop.proof(accept, tx, shop.sign(accept, tx, key=KEY_B)), offers)
    assert reason(by_b) is ReasonCode.AMOUNT_TOO_LOW, by_b
    assert isinstance(by_b, Failure) and f"paid {SHARE_B} by the signer" in by_b.error_message
    accept, offers = shop.offer(binding="signature")
    by_a = await shop.settle(shop.proof(accept, tx, shop.sign(accept, tx, key=KEY_A)), offers)
    assert isinstance(by_a, Receipt), by_a
    assert by_a.payer == OWNER_A.lower()
    assert ext(by_a)["paidAmount"] == str(SHARE_A) and ext(by_a)["bound"] is True


async def test_unbound_batch_names_the_largest_contributor(shop: Shop, owners: None) -> None:
    # B's transfer comes first in the batch, A's is the larger one.
    tx = batch(shop.env, [OWNER_B, OWNER_A], [SHARE_B, SHARE_A])
    accept, offers = shop.offer(binding="none")
    outcome = await shop.settle(shop.proof(accept, tx), offers)
    assert isinstance(outcome, Receipt), outcome
    assert outcome.payer == OWNER_A.lower()
    assert ext(outcome)["paidAmount"] == str(SHARE_A + SHARE_B) and ext(outcome)["bound"] is False


# ---- Solana: a relay pays the fee and co-signs the user's transfer ------------------------


@pytest.fixture
async def sol_shop(make_settings: SettingsFactory, redis: Any) -> AsyncIterator[SolanaShop]:
    async with solana_shop(solana_env().settings(make_settings)) as s:
        yield s


def relayed_payment(env: SolanaEnv, memo: str | None) -> tuple[str, Keypair, Keypair]:
    """A user's USDC payment to the payee (with ``memo``), its fee paid by a relay that
    co-signs it as the fee payer. Returns (signature, user, relay)."""
    ledger = env.ledger
    user, relay = ledger.wallet(), ledger.wallet()
    ledger.open_account(user.pubkey(), env.usdc, 10**9)
    ixs = [
        ledger.token_transfer_ix(
            env.usdc,
            ledger.ata(user.pubkey(), env.usdc),
            ledger.ata(env.payee, env.usdc),
            user.pubkey(),
            PRICE,
        )
    ]
    ixs += [ledger.memo_ix(memo)] if memo else []
    tx = ledger.execute(ixs, [relay, user])  # the first signer pays the fee
    keys = ledger.records[tx].result["transaction"]["message"]["accountKeys"]
    assert keys[0]["pubkey"] == str(relay.pubkey()) and keys[0]["signer"]
    return tx, user, relay


async def test_relay_cannot_take_a_payment_committed_to_the_users_challenge(
    sol_shop: SolanaShop,
) -> None:
    user_accept, user_offers = sol_shop.offer()
    relay_accept, relay_offers = sol_shop.offer(binding="signature")
    tx, user, relay = relayed_payment(sol_shop.env, user_accept.extra.memo)
    signed = sol_shop.sign(relay_accept, tx, relay)
    taken = await sol_shop.settle(sol_shop.proof(relay_accept, tx, signed), relay_offers)
    assert isinstance(taken, Failure) and not taken.transient, taken
    assert taken.error_reason is ReasonCode.BINDING_MISMATCH, taken
    outcome = await sol_shop.settle(sol_shop.proof(user_accept, tx), user_offers)
    assert isinstance(outcome, Receipt), outcome
    assert outcome.payer == str(user.pubkey()) and ext(outcome)["bound"] is True


async def test_relay_signature_does_not_bind_a_payment_without_memo(
    sol_shop: SolanaShop,
) -> None:
    user_accept, user_offers = sol_shop.offer(binding="signature")
    relay_accept, relay_offers = sol_shop.offer(binding="signature")
    tx, user, relay = relayed_payment(sol_shop.env, None)
    # The relay signed the transaction and paid its fee, but none of its funds paid the payee.
    signed = sol_shop.sign(relay_accept, tx, relay)
    taken = await sol_shop.settle(sol_shop.proof(relay_accept, tx, signed), relay_offers)
    assert isinstance(taken, Failure) and not taken.transient, taken
    assert taken.error_reason is ReasonCode.BINDING_MISSING, taken
    signed = sol_shop.sign(user_accept, tx, user)
    outcome = await sol_shop.settle(sol_shop.proof(user_accept, tx, signed), user_offers)
    assert isinstance(outcome, Receipt), outcome
    assert outcome.payer == str(user.pubkey()) and ext(outcome)["bound"] is True
