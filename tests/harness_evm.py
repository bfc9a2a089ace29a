"""The EVM harness for the conformance suite: the session's anvil node and test tokens."""

from __future__ import annotations

from typing import Any

from devchain.anvil import ANVIL_ACCOUNTS
from tests.evm_fixtures import NETWORK, EvmEnv, Shop, send
from verifier.models import Accept
from verifier.testing import Harness, Payment

# The order n of secp256k1: a signature with r or s not below it is malformed.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class EvmHarness(Harness):
    network = NETWORK
    symbol = "USDC"
    decimals = 6
    pay_to = ANVIL_ACCOUNTS[6]
    stranger = ANVIL_ACCOUNTS[7]

    def __init__(self, env: EvmEnv) -> None:
        self.env = env
        self.asset, self.other_asset = env.token, env.other_token

    def network_settings(self) -> dict[str, Any]:
        return {"rpc_urls": [self.env.anvil.url], "head_cache_seconds": 0}

    def wrong_network(self) -> str:
        return "eip155:8453"

    async def send(self, payment: Payment) -> str:
        return send(self.env, payment)

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

    def unknown_tx(self) -> str:
        return "0x" + "5a" * 32

    def garbage_tx(self) -> str:
        return "0xnot-a-hash"
