"""The EVM harness for the conformance suite: the session's anvil node and test tokens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devchain.anvil import ANVIL_ACCOUNTS
from tests.evm_fixtures import NETWORK, PAYER, EvmEnv
from verifier.models import Accept


class EvmHarness:
    network = NETWORK
    symbol = "USDC"
    decimals = 6
    min_confirmations = 1

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

    async def pay(
        self,
        accept: Accept,
        *,
        amount: int | None = None,
        memo: bool = True,
        to: str | None = None,
        asset: str | None = None,
        fail: bool = False,
    ) -> str:
        suffix = bytes.fromhex(accept.extra.memo) if memo else b""
        value = int(accept.amount) if amount is None else amount
        sender = ANVIL_ACCOUNTS[8] if fail else PAYER  # account 8 holds no tokens: reverts
        return self.env.chain.token_transfer(
            asset or self.asset,
            sender,
            to or accept.pay_to,
            value,
            suffix=suffix,
            gas=200_000 if fail else None,
        )

    def unknown_tx(self) -> str:
        return "0x" + "5a" * 32

    def garbage_tx(self) -> str:
        return "0xnot-a-hash"


@contextlib.asynccontextmanager
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[EvmHarness]:
    yield EvmHarness(request.getfixturevalue("evm"))
