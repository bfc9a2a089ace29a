"""Shared fixtures: a real redis-server on a free port, settings, a gate and an in-process worker.

The EVM fixtures (a real anvil node with the test token deployed) live in ``evm_fixtures.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from devchain.redis_server import RedisServer
from tests.support import KEY, SettingsFactory, started
from verifier.settings import Settings
from verifier.testing import FAST_WORKER

pytest_plugins = ["tests.evm_fixtures"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = started(RedisServer())
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def make_settings(redis_server: RedisServer) -> SettingsFactory:
    """Settings for tests: our Redis, a fixed key, fast retries. Keyword sections merge."""

    def factory(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "redis_url": redis_server.url,
            "challenge": {"active": "k1", "keys": {"k1": KEY}},
            "worker": FAST_WORKER,
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return Settings(**base)

    return factory
