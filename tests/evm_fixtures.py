"""EVM fixtures: a real anvil node with the test contracts deployed, and a shop selling on it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from devchain.anvil import ANVIL_ACCOUNTS, ANVIL_KEYS, Anvil, DevChain
from tests import support
from tests.support import SettingsFactory, connected_gate, running_worker, started
from verifier.challenge import proof_message
from verifier.gate import Gate
from verifier.models import Accept
from verifier.settings import Settings
from verifier.testing import Payment

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
    node = started(Anvil())
    chain = DevChain(node.url)
    token = chain.deploy_token()
    other = chain.deploy_token(name="Other Coin", symbol="OTH", decimals=6)
    for t in (token, other):
        chain.mint(t, PAYER, 10**15)
    yield EvmEnv(node, chain, token, other, chain.deploy_batcher())
    node.stop()


def evm_settings(make_settings: SettingsFactory, env: EvmEnv, **sections: Any) -> Settings:
    """Settings on the local chain, its USDC registered; ``sections`` as ``make_settings``'s."""
    return make_settings(
        networks={NETWORK: {"rpc_urls": [env.anvil.url], "head_cache_seconds": 0}},
        assets=[{"network": NETWORK, "symbol": "USDC", "asset": env.token, "decimals": 6}],
        **sections,
    )


class Shop(support.Shop):
    """A gate selling one resource on the local chain, as a web server would use it."""

    def __init__(self, gate: Gate, env: EvmEnv) -> None:
        super().__init__(
            gate, RESOURCE, network=NETWORK, asset="USDC", pay_to=PAYEE, amount=100_000
        )
        self.env = env

    @staticmethod
    def sign(accept: Accept, tx: str, key: str = PAYER_KEY) -> str:
        message = proof_message(NETWORK, accept.extra.nonce, tx.lower())
        signed = Account.sign_message(encode_defunct(primitive=message), private_key=key)
        return "0x" + bytes(signed.signature).hex()

    def pay(
        self, accept: Accept, amount: int | None = None, *, token: str | None = None, **how: Any
    ) -> str:
        """The test token to the payee with the commitment, unless ``how`` (``memo``, ``to``)
        or ``token`` say otherwise."""
        return send(
            self.env, Payment.of(accept, amount=amount, asset=token or self.env.token, **how)
        )


def send(env: EvmEnv, payment: Payment) -> str:
    """An ERC-20 ``transfer`` with the commitment as a calldata suffix; a failing one comes from
    an account that holds no tokens, with the gas given so that it is mined (and reverts)."""
    return env.chain.token_transfer(
        payment.asset,
        ANVIL_ACCOUNTS[8] if payment.fail else PAYER,
        payment.to,
        payment.amount,
        suffix=bytes.fromhex(payment.memo) if payment.memo else b"",
        gas=200_000 if payment.fail else None,
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
