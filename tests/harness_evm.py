"""The EVM harness for the conformance suite: the session's anvil node and test tokens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devchain.anvil import ANVIL_ACCOUNTS
from tests.conformance import AS_OFFERED, Pay
from tests.evm_fixtures import NETWORK, PAYER, EvmEnv, Shop
from verifier.models import Accept

# The order n of secp256k1: a signature with r or s not below it is malformed.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class EvmHarness:
    network = NETWORK
    symbol = "USDC"
    decimals = 6
    min_confirmations = 1
    unknown_tx = "0x" + "5a" * 32
    garbage_tx = "0xnot-a-hash"

    def __init__(self, env: EvmEnv) -> None:
        self.env = env
        self.asset = env.token
        self.other_asset = env.other_token
        self.pay_to = ANVIL_ACCOUNTS[6]
        self.stranger = ANVIL_ACCOUNTS[7]

    def network_settings(self) -> dict[str, Any]:
        return {"rpc_urls": [self.env.anvil.url], "head_cache_seconds": 0}

    def wrong_network(self) -> str:
        return "eip155:8453"

    async def pay(self, accept: Accept, how: Pay = AS_OFFERED) -> str:
        suffix = bytes.fromhex(accept.extra.memo) if how.memo else b""
        value = int(accept.amount) if how.amount is None else how.amount
        sender = ANVIL_ACCOUNTS[8] if how.fail else PAYER  # account 8 holds no tokens: reverts
        return self.env.chain.token_transfer(
            how.asset or self.asset,
            sender,
            how.to or accept.pay_to,
            value,
            suffix=suffix,
            gas=200_000 if how.fail else None,
        )

    def sign(self, accept: Accept, tx: str) -> str:
        return Shop.sign(accept, tx)

    def malformed_signatures(self, accept: Accept, tx: str) -> list[str]:
        real = bytes.fromhex(self.sign(accept, tx).removeprefix("0x"))  # r || s || v
        order = SECP256K1_N.to_bytes(32, "big")
        return [
            "0x" + "ff" * 65,
            "0x" + (order + real[32:]).hex(),  # r = n
            "0x" + (real[:32] + order + real[64:]).hex(),  # s = n
            "0x" + real[:64].hex(),  # no v
            "0x" + "zz" * 65,
        ]


@contextlib.asynccontextmanager
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[EvmHarness]:
    yield EvmHarness(request.getfixturevalue("evm"))
