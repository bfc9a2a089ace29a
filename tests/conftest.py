"""Shared fixtures: a real redis-server on a free port, settings, a gate and an in-process worker.

The EVM fixtures (a real anvil node with the test token deployed) live in ``evm_fixtures.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from devchain.redis_server import RedisNotFound, RedisServer
from verifier.gate import Gate
from verifier.settings import Settings
from verifier.worker import make_worker

pytest_plugins: list[str] = []

KEY = "test-key-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer().start()
    except RedisNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(redis_server: RedisServer) -> SettingsFactory:
    """Settings for tests: our Redis, a fixed key, fast retries. Keyword sections merge."""

    def factory(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "redis_url": redis_server.url,
            "challenge": {"active": "k1", "keys": {"k1": KEY}},
            "worker": {
                "poll_delay": 0.01,
                "retry_base": 0.05,
                "retry_max": 0.2,
                "job_timeout": 5,
                "grace_seconds": 0,
                "clock_skew": 5,
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return Settings(**base)

    return factory


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, **overrides: Any) -> AsyncIterator[Any]:
    """An arq worker in this event loop, stopped (and its adapters closed) on exit."""
    worker = make_worker(settings, handle_signals=False, **overrides)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        # Let jobs in flight finish (arq writes their results), then stop polling and close.
        worker.allow_pick_jobs = False
        await asyncio.wait(list(worker.tasks.values()) or [asyncio.sleep(0)], timeout=10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(asyncio.CancelledError):
            await worker.close()


@contextlib.asynccontextmanager
async def connected_gate(settings: Settings) -> AsyncIterator[Gate]:
    gate = await Gate.connect(settings)
    try:
        yield gate
    finally:
        await gate.close()
