"""EVM fixtures: a real anvil node with the test contracts deployed, and a shop selling on it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from devchain.anvil import ANVIL_ACCOUNTS, ANVIL_KEYS, Anvil, AnvilNotFound, DevChain
from tests.support import Checkout, SettingsFactory, connected_gate, running_worker
from verifier.challenge import proof_message
from verifier.gate import Gate
from verifier.models import Accept
from verifier.settings import Settings

NETWORK = "eip155:31337"
PAYER, PAYER_KEY = ANVIL_ACCOUNTS[1], ANVIL_KEYS[1]
PAYEE = ANVIL_ACCOUNTS[2]
STRANGER = ANVIL_ACCOUNTS[3]
RESOURCE = "http://shop.test/report"


@dataclass(frozen=True)
class EvmEnv:
    anvil: Anvil
    chain: DevChain
    token: str
    other_token: str
    batcher: str  # a bundler's batch contract (``Batcher.pull``)


@pytest.fixture(scope="session")
def evm() -> Iterator[EvmEnv]:
    try:
        node = Anvil()
        node.start()
    except AnvilNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    chain = DevChain(node.url)
    token = chain.deploy_token()
    other = chain.deploy_token(name="Other Coin", symbol="OTH", decimals=6)
    for t in (token, other):
        chain.mint(t, PAYER, 10**15)
    yield EvmEnv(node, chain, token, other, chain.deploy_batcher())
    node.stop()


def evm_settings(make_settings: SettingsFactory, env: EvmEnv, **net: Any) -> Settings:
    return make_settings(
        networks={NETWORK: {"rpc_urls": [env.anvil.url], "head_cache_seconds": 0, **net}},
        assets=[{"network": NETWORK, "symbol": "USDC", "asset": env.token, "decimals": 6}],
    )


class Shop(Checkout):
    """A gate selling one resource on the local chain, as a web server would use it."""

    def __init__(self, gate: Gate, env: EvmEnv) -> None:
        super().__init__(
            gate, RESOURCE, network=NETWORK, asset="USDC", pay_to=PAYEE, amount=100_000
        )
        self.env = env

    settle = Checkout.submit

    @staticmethod
    def sign(accept: Accept, tx: str, key: str = PAYER_KEY) -> str:
        message = proof_message(NETWORK, accept.extra.nonce, tx.lower())
        signed = Account.sign_message(encode_defunct(primitive=message), private_key=key)
        return "0x" + bytes(signed.signature).hex()

    def pay(
        self,
        accept: Accept,
        amount: int | None = None,
        *,
        memo: bool = True,
        token: str | None = None,
        to: str | None = None,
    ) -> str:
        suffix = bytes.fromhex(accept.extra.memo) if memo else b""
        return self.env.chain.token_transfer(
            token or self.env.token,
            PAYER,
            to or accept.pay_to,
            int(accept.amount) if amount is None else amount,
            suffix=suffix,
        )


@pytest.fixture
async def shop(evm: EvmEnv, make_settings: SettingsFactory, redis: Any) -> AsyncIterator[Shop]:
    settings = evm_settings(make_settings, evm)
    async with connected_gate(settings) as gate, running_worker(settings):
        yield Shop(gate, evm)


def wait_until(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)
