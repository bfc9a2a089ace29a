"""The EVM adapter alone and behind a broken transport: pinning, failover, RPC outages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from chains.evm import EVMAdapter, transfers_from_logs
from tests.evm_fixtures import NETWORK, PAYEE, PAYER, PAYER_KEY, EvmEnv, Shop
from tests.harness_evm import SECP256K1_N
from tests.rpc_proxy import RpcProxy
from tests.support import SettingsFactory, connected_gate, running_worker
from verifier.adapter import InvalidProof, Query, RpcUnavailable, TxNotFound, WrongChain
from verifier.challenge import proof_message
from verifier.models import Failure, ReasonCode, Receipt
from verifier.settings import NetworkSettings


def adapter(url: str, network: str = NETWORK, **cfg: Any) -> EVMAdapter:
    return EVMAdapter.create(network, NetworkSettings(rpc_urls=[url], **cfg))


async def test_wrong_chain_refuses_to_start(evm: EvmEnv) -> None:
    a = adapter(evm.anvil.url, network="eip155:8453")
    with pytest.raises(WrongChain, match="serves chain 31337"):
        await a.start()


async def test_unreachable_url_is_pinned_on_first_use(evm: EvmEnv) -> None:
    with RpcProxy(evm.anvil.url) as proxy:
        proxy.status = 503
        a = adapter(proxy.url)
        await a.start()  # unreachable now: started anyway, checked later
        with pytest.raises(RpcUnavailable):
            await a.observe(Query("0x" + "00" * 32, "native", "0x" + "00" * 20, 1))
        proxy.status = None
        with pytest.raises(TxNotFound):
            await a.observe(Query("0x" + "00" * 32, "native", "0x" + "00" * 20, 1))
        await a.close()


def test_normalization() -> None:
    a = adapter("http://127.0.0.1:1")
    good = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    assert a.normalize_address(good) == good.lower()
    assert a.normalize_address(good.lower()) == good.lower()
    assert a.normalize_address("0x" + good[2:].upper()) == good.lower()
    with pytest.raises(ValueError, match="checksum"):
        a.normalize_address(good.replace("fC", "Fc"))
    for bad in ["0x12", "833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "0x" + "g" * 40]:
        with pytest.raises(ValueError):
            a.normalize_address(bad)
    assert a.canonical_txid(" 0x" + "AB" * 32 + " ") == "0x" + "ab" * 32
    with pytest.raises(InvalidProof):
        a.canonical_txid("0x" + "ab" * 31)


def test_transfer_log_shapes() -> None:
    topic = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    word = "0x" + "00" * 12 + "11" * 20
    dirty = "0x" + "ff" * 12 + "11" * 20
    good = {"address": "0xAA", "topics": [topic, word, word], "data": "0x" + "00" * 31 + "05"}
    logs: list[Any] = [
        good,
        {**good, "topics": [topic, word]},  # wrong topic count
        {**good, "data": "0x" + "00" * 64},  # wrong data length
        {**good, "topics": [topic, dirty, word]},  # address word with dirty padding
        {**good, "removed": True},
    ]
    found = transfers_from_logs(logs)
    assert [(t.asset, t.amount) for t in found] == [("0xaa", 5)]


async def test_malformed_signatures_are_false_not_errors(evm: EvmEnv) -> None:
    message = proof_message(NETWORK, "n1.k1.0.600.x.y", "0x" + "ab" * 32)
    real = bytes(Account.sign_message(encode_defunct(primitive=message), PAYER_KEY).signature)
    order, one = SECP256K1_N.to_bytes(32, "big"), (1).to_bytes(32, "big")
    malformed = [
        "0x" + "ff" * 65,
        "0x" + (order + real[32:]).hex(),  # r = n
        "0x" + (real[:32] + order + real[64:]).hex(),  # s = n
        "0x" + (one + one + b"\x05").hex(),  # v out of range
        "0x" + "00" * 65,
        "0x" + real[:64].hex(),
        "0x" + real.hex() + "00",
        "0xzz",
        "",
    ]
    wallet = evm.chain.deploy_wallet(PAYER)  # asked through EIP-1271 when recovery fails
    a = adapter(evm.anvil.url)
    await a.start()
    try:
        for account in (PAYER.lower(), wallet.lower()):
            assert await a.verify_signature(account, message, "0x" + real.hex()), account
            for signature in malformed:
                assert await a.verify_signature(account, message, signature) is False, signature
    finally:
        await a.close()


async def test_rpc_down_then_back(evm: EvmEnv, make_settings: SettingsFactory, redis: Any) -> None:
    with RpcProxy(evm.anvil.url) as proxy:
        settings = make_settings(
            networks={NETWORK: {"rpc_urls": [proxy.url], "head_cache_seconds": 0}},
            assets=[{"network": NETWORK, "symbol": "USDC", "asset": evm.token, "decimals": 6}],
        )
        async with connected_gate(settings) as gate, running_worker(settings):
            shop = Shop(gate, evm)
            accept, offers = shop.offer()
            tx = shop.pay(accept)
            proxy.status = 503
            down = await shop.settle(shop.proof(accept, tx), offers, wait=1)
            assert isinstance(down, Failure) and down.transient
            assert down.error_reason is ReasonCode.RPC_UNAVAILABLE
            proxy.status = 429
            limited = await shop.settle(shop.proof(accept, tx), offers, wait=0.5)
            assert isinstance(limited, Failure) and limited.transient
            proxy.status = None
            back = await shop.settle(shop.proof(accept, tx), offers)
            assert isinstance(back, Receipt), back


async def test_failover_to_the_second_url(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Any
) -> None:
    with RpcProxy(evm.anvil.url) as broken:
        broken.status = 502
        settings = make_settings(
            networks={NETWORK: {"rpc_urls": [broken.url, evm.anvil.url], "head_cache_seconds": 0}},
            assets=[{"network": NETWORK, "symbol": "USDC", "asset": evm.token, "decimals": 6}],
        )
        async with connected_gate(settings) as gate, running_worker(settings):
            shop = Shop(gate, evm)
            accept, offers = shop.offer()
            outcome = await shop.settle(shop.proof(accept, shop.pay(accept)), offers)
            assert isinstance(outcome, Receipt), outcome
            assert broken.requests >= 1


async def test_head_and_block_reads_are_shared(evm: EvmEnv) -> None:
    tx = evm.chain.token_transfer(evm.token, PAYER, PAYEE, 1)
    with RpcProxy(evm.anvil.url) as proxy:
        a = adapter(proxy.url, head_cache_seconds=5)
        await a.start()
        before = proxy.requests
        q = Query(tx.lower(), evm.token.lower(), PAYEE.lower(), 1)
        seen = await asyncio.gather(*(a.observe(q) for _ in range(10)))
        # 10 batched tx+receipt reads, one shared head read, one shared block read.
        assert proxy.requests - before == 12
        assert {o.block_ref for o in seen} == {seen[0].block_ref}
        assert seen[0].transfers[0].amount == 1
        await a.close()


async def test_a_cached_head_older_than_the_block_is_read_again(evm: EvmEnv) -> None:
    a = adapter(evm.anvil.url, head_cache_seconds=60)
    await a.start()
    first = evm.chain.token_transfer(evm.token, PAYER, PAYEE, 1)
    await a.observe(Query(first.lower(), evm.token.lower(), PAYEE.lower(), 1))
    later = evm.chain.token_transfer(evm.token, PAYER, PAYEE, 2)  # a block past the cached head
    seen = await a.observe(Query(later.lower(), evm.token.lower(), PAYEE.lower(), 1))
    assert seen.confirmations == 1
    await a.close()
