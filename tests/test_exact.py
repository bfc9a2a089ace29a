"""The exact scheme, settled locally by the worker pool: real anvil with an EIP-3009 token, real
Redis, payloads signed by the reference x402 client's own EVM exact scheme.

Every refusal is final with its reason and broadcasts nothing (the relayer's transaction count
does not move); every payment is settled once (the payee is credited once, the relayer sends one
transaction), whatever is sent again or at once.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from eth_account import Account
from redis.asyncio import Redis

import chains.evm.eip3009 as eip3009
from tests.evm_fixtures import NETWORK, PAYEE, STRANGER
from tests.exact_fixtures import (
    PAYER,
    POOR_KEY,
    PRICE,
    RELAYER,
    STRANGER_KEY,
    ExactEnv,
    ExactShop,
    exact_env,
    exact_settings,
    header,
    later,
    relayer_key,
    resign,
    sign_inner,
)
from tests.support import SettingsFactory, connected_gate, running_worker
from verifier.errors import ConfigError
from verifier.models import Failure, ReasonCode, Receipt
from verifier.registry import build_adapters
from verifier.settlement import Authorizations

__all__ = ["exact_env", "relayer_key"]  # fixtures


@pytest.fixture
async def shop(exact_env: ExactEnv, make_settings: SettingsFactory, relayer_key: str) -> ExactShop:  # type: ignore[misc]
    settings = exact_settings(make_settings, exact_env)
    async with connected_gate(settings) as gate, running_worker(settings):
        yield ExactShop(gate, exact_env)


async def test_a_reference_client_payload_is_settled_once(shop: ExactShop) -> None:
    env = shop.env
    before, sent = env.balance(PAYEE), env.relayer_count()
    proof, offers = shop.paid_header()
    receipt = await shop.settle(proof, offers)
    assert isinstance(receipt, Receipt), receipt
    assert (receipt.scheme, receipt.payer, receipt.amount) == ("exact", PAYER.lower(), str(PRICE))
    assert env.balance(PAYEE) == before + PRICE
    assert env.relayer_count() == sent + 1
    tx = env.chain.rpc("eth_getTransactionByHash", [receipt.transaction])
    assert tx["to"].lower() == env.token.lower()  # the settlement is the relayer's own call
    # The same header again: the same receipt, nothing sent, nobody charged twice.
    assert await shop.settle(proof, offers) == receipt
    assert env.balance(PAYEE) == before + PRICE and env.relayer_count() == sent + 1


async def test_fifty_concurrent_copies_across_gates_cause_one_broadcast(
    shop: ExactShop,
) -> None:
    env = shop.env
    before, sent = env.balance(PAYEE), env.relayer_count()
    proof, offers = shop.paid_header()
    async with connected_gate(shop.gate.settings) as other_gate:  # another web server process
        other = ExactShop(other_gate, env)
        outcomes = await asyncio.gather(
            *((shop if i % 2 else other).settle(proof, offers) for i in range(50))
        )
    assert all(isinstance(o, Receipt) for o in outcomes), outcomes
    assert len({o.transaction for o in outcomes}) == 1
    assert env.relayer_count() == sent + 1
    assert env.balance(PAYEE) == before + PRICE


async def test_a_used_authorization_under_a_fresh_challenge_never_pays_twice(
    shop: ExactShop,
) -> None:
    env = shop.env
    accept, offers = shop.offer()
    inner = sign_inner(accept)
    first = await shop.settle(header(accept, inner), offers)
    assert isinstance(first, Receipt), first
    sent, credited = env.relayer_count(), env.balance(PAYEE)
    again, again_offers = shop.offer()  # a new challenge, the same signed authorization
    outcome = await shop.settle(header(again, inner), again_offers)
    assert isinstance(outcome, Failure) and not outcome.transient, outcome
    assert outcome.error_reason is ReasonCode.AUTHORIZATION_ALREADY_USED
    assert env.relayer_count() == sent and env.balance(PAYEE) == credited


def _refusals(token: str) -> list[tuple[str, dict[str, object], ReasonCode]]:
    return [
        ("value too low", {"value": str(PRICE - 1)}, ReasonCode.AMOUNT_TOO_LOW),
        ("another payee", {"to": "0x" + "42" * 20}, ReasonCode.WRONG_RECIPIENT),
        ("expired", {"validBefore": later(2)}, ReasonCode.AUTHORIZATION_EXPIRED),
        ("not yet valid", {"validAfter": later(120)}, ReasonCode.AUTHORIZATION_NOT_YET_VALID),
    ]


@pytest.mark.parametrize("case", range(4))
async def test_a_misfit_authorization_is_refused_and_nothing_is_broadcast(
    shop: ExactShop, case: int
) -> None:
    env = shop.env
    name, changes, expected = _refusals(env.token)[case]
    accept, offers = shop.offer()
    inner = resign(sign_inner(accept), env.token, **changes)  # type: ignore[arg-type]
    sent = env.relayer_count()
    outcome = await shop.settle(header(accept, inner), offers)
    assert isinstance(outcome, Failure) and not outcome.transient, (name, outcome)
    assert outcome.error_reason is expected, (name, outcome)
    assert env.relayer_count() == sent


async def test_a_signature_not_by_from_is_refused(shop: ExactShop) -> None:
    env = shop.env
    accept, offers = shop.offer()
    inner = sign_inner(accept)
    forged = resign(inner, env.token, STRANGER_KEY)  # from stays the payer's address
    sent = env.relayer_count()
    outcome = await shop.settle(header(accept, forged), offers)
    assert isinstance(outcome, Failure) and outcome.error_reason is ReasonCode.AUTHORIZATION_INVALID
    assert env.relayer_count() == sent


async def test_an_authorization_signed_for_another_chain_is_refused(shop: ExactShop) -> None:
    env = shop.env
    accept, offers = shop.offer()
    other_chain = resign(sign_inner(accept), env.token, chain_id=8453)
    sent = env.relayer_count()
    outcome = await shop.settle(header(accept, other_chain), offers)
    assert isinstance(outcome, Failure) and outcome.error_reason is ReasonCode.AUTHORIZATION_INVALID
    assert env.relayer_count() == sent


async def test_a_payer_without_the_balance_is_refused_before_any_broadcast(
    shop: ExactShop,
) -> None:
    env = shop.env
    sent = env.relayer_count()
    proof, offers = shop.paid_header(key=POOR_KEY)
    outcome = await shop.settle(proof, offers)
    assert isinstance(outcome, Failure) and outcome.error_reason is ReasonCode.INSUFFICIENT_BALANCE
    assert env.relayer_count() == sent


async def test_an_authorization_already_sent_by_someone_else_is_that_payment(
    shop: ExactShop,
) -> None:
    # The payer (or a worker whose answer was lost) sent the authorization already: the
    # transfer to the payee happened, so that transaction is the settlement, found through
    # the token's AuthorizationUsed log, and nothing is sent again.
    env = shop.env
    accept, offers = shop.offer()
    inner = sign_inner(accept)
    auth = eip3009.Authorization.from_wire(inner["authorization"])
    calldata = eip3009.transfer_with_authorization_calldata(
        auth, bytes.fromhex(inner["signature"][2:])
    )
    sent_by_other = env.chain.send_transaction(STRANGER, env.token, calldata)
    assert env.chain.receipt(sent_by_other)["status"] == "0x1"
    before, sent = env.balance(PAYEE), env.relayer_count()
    receipt = await shop.settle(header(accept, inner), offers)
    assert isinstance(receipt, Receipt), receipt
    assert receipt.transaction == sent_by_other.lower()
    assert env.relayer_count() == sent and env.balance(PAYEE) == before


async def test_a_contract_wallet_pays_with_an_eip1271_signature(shop: ExactShop) -> None:
    env = shop.env
    owner_key = POOR_KEY  # the wallet's owner signs; the wallet holds the tokens
    owner = Account.from_key(owner_key).address
    wallet = env.chain.deploy_wallet(owner)
    env.chain.mint(env.token, wallet, 10**9)
    accept, offers = shop.offer()
    inner = resign(sign_inner(accept), env.token, owner_key, **{"from": wallet})
    # The owner's key recovers the owner, not the wallet: only EIP-1271 makes it the wallet's.
    before, sent = env.balance(PAYEE), env.relayer_count()
    receipt = await shop.settle(header(accept, inner), offers)
    assert isinstance(receipt, Receipt), receipt
    assert receipt.payer == wallet.lower()
    assert env.balance(PAYEE) == before + PRICE and env.relayer_count() == sent + 1
    # Signed by anyone else for the wallet: refused, nothing sent.
    accept, offers = shop.offer()
    forged = resign(sign_inner(accept), env.token, STRANGER_KEY, **{"from": wallet})
    refused = await shop.settle(header(accept, forged), offers)
    assert isinstance(refused, Failure) and refused.error_reason is ReasonCode.AUTHORIZATION_INVALID
    assert env.relayer_count() == sent + 1


async def test_a_stuck_settlement_is_replaced_at_the_same_nonce_and_counted_once(
    exact_env: ExactEnv, make_settings: SettingsFactory, relayer_key: str, redis: Redis
) -> None:
    env = exact_env
    settings = exact_settings(
        make_settings,
        env,
        settlement={"mode": "local", "replace_after": 1, "gas_bump_percent": 50},
        worker={"retry_base": 0.2, "retry_max": 0.3},
    )
    env.chain.set_automine(False)  # nothing is mined: the settlement waits in the mempool
    try:
        async with connected_gate(settings) as gate, running_worker(settings):
            shop = ExactShop(gate, env)
            before, sent = env.balance(PAYEE), env.relayer_count()
            proof, offers = shop.paid_header()
            pending = await shop.settle(proof, offers, wait=3)  # past replace_after
            assert isinstance(pending, Failure) and pending.transient, pending
            txpool = env.chain.rpc("txpool_content", [])["pending"]
            mine = {k.lower(): v for k, v in txpool.items()}.get(RELAYER.lower(), {})
            versions = list(mine.values())
            assert len(mine) == 1, mine  # one nonce, whatever the number of versions
            [key] = [k async for k in redis.scan_iter("*:authorization:*")]
            txids = json.loads(await redis.hget(key, "txids") or b"[]")  # type: ignore[misc]
            assert len(txids) >= 2, txids  # sent, then replaced at higher fees
            fees = [
                int(env.chain.rpc("eth_getTransactionByHash", [t])["maxFeePerGas"], 16)
                for t in txids
                if env.chain.rpc("eth_getTransactionByHash", [t])
            ]
            env.chain.mine(1)
            receipt = await shop.settle(proof, offers, wait=20)
    finally:
        env.chain.set_automine(True)
    assert isinstance(receipt, Receipt), receipt
    assert env.relayer_count() == sent + 1
    assert env.balance(PAYEE) == before + PRICE
    assert versions  # the mempool held our transaction
    assert receipt.transaction in txids
    assert fees == sorted(fees)  # each version priced above the one it replaced


async def test_a_worker_refuses_to_start_when_the_token_domain_is_not_the_registry_s(
    exact_env: ExactEnv, make_settings: SettingsFactory, relayer_key: str, redis: Redis
) -> None:
    settings = exact_settings(make_settings, exact_env)
    [adapter] = build_adapters(settings).values()
    await adapter.start()
    try:
        settlement = settings.networks[NETWORK].settlement
        wrong = {exact_env.token: ("USDC", "2")}  # Base Sepolia's name, not this token's
        settler = adapter.local_settler(  # type: ignore[attr-defined]
            settlement, relayer_key, Authorizations(redis, "x402"), wrong
        )
        with pytest.raises(ConfigError, match=r"domain is \('USD Coin', '2'\), the asset"):
            await settler.start()
        right = {exact_env.token: ("USD Coin", "2")}
        await adapter.local_settler(  # type: ignore[attr-defined]
            settlement, relayer_key, Authorizations(redis, "x402"), right
        ).start()
    finally:
        await adapter.close()


async def test_a_settlement_beaten_by_another_use_of_the_authorization_is_that_payment(
    exact_env: ExactEnv, make_settings: SettingsFactory, relayer_key: str
) -> None:
    # Our broadcast waits in the mempool; someone sends the same authorization with a higher
    # tip, and it is mined first: ours reverts, but the payee was paid, by the other one.
    env = exact_env
    settings = exact_settings(make_settings, env, worker={"retry_base": 0.2, "retry_max": 0.3})
    env.chain.set_automine(False)
    try:
        async with connected_gate(settings) as gate, running_worker(settings):
            shop = ExactShop(gate, env)
            before = env.balance(PAYEE)
            accept, offers = shop.offer()
            inner = sign_inner(accept)
            pending = await shop.settle(header(accept, inner), offers, wait=1)
            assert isinstance(pending, Failure) and pending.transient, pending
            auth = eip3009.Authorization.from_wire(inner["authorization"])
            data = eip3009.transfer_with_authorization_calldata(
                auth, bytes.fromhex(inner["signature"][2:])
            )
            tip = hex(100 * 10**9)
            other = env.chain.rpc(
                "eth_sendTransaction",
                [
                    {
                        "from": STRANGER,
                        "to": env.token,
                        "data": "0x" + data.hex(),
                        "gas": hex(200_000),
                        "maxFeePerGas": tip,
                        "maxPriorityFeePerGas": tip,
                    }
                ],
            )
            env.chain.mine(1)
            receipt = await shop.settle(header(accept, inner), offers, wait=20)
    finally:
        env.chain.set_automine(True)
    assert isinstance(receipt, Receipt), receipt
    assert receipt.transaction == other.lower()
    assert env.balance(PAYEE) == before + PRICE
