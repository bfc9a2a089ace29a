"""One suite, every chain family: the kit's cases (``verifier.testing``) against each built-in
adapter's local chain, as a third-party adapter runs them against its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from devchain.redis_server import RedisServer
from tests.evm_fixtures import EvmEnv
from tests.harness_evm import EvmHarness
from tests.harness_solana import SolanaHarness, solana_env
from tests.harness_stellar import StellarHarness, stellar_env
from tests.harness_ton import TonHarness, ton_env
from verifier.testing import AdapterConformance


@pytest.fixture
def redis_url(redis_server: RedisServer, redis: Redis) -> str:
    """The session's Redis, flushed for each test (the ``redis`` fixture)."""
    return redis_server.url


class TestEVM(AdapterConformance):
    @pytest.fixture
    def harness(self, evm: EvmEnv) -> EvmHarness:
        return EvmHarness(evm)


class TestSolana(AdapterConformance):
    @pytest.fixture
    def harness(self) -> SolanaHarness:
        return SolanaHarness(solana_env())


class TestStellar(AdapterConformance):
    @pytest.fixture
    def harness(self) -> Iterator[StellarHarness]:
        with stellar_env() as env:
            yield StellarHarness(env)


class TestTON(AdapterConformance):
    @pytest.fixture
    def harness(self) -> Iterator[TonHarness]:
        with ton_env() as env:
            yield TonHarness(env)
