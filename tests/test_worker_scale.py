"""Scale-out: each worker added keeps its own ``max_jobs`` verifications in flight.

The RPC node is slow (every request held at the proxy), so a verification spends its time
waiting on the chain, and jobs in flight at one moment are what throughput is made of. They are
counted where every worker must mark them: arq's in-progress keys in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

from tests.evm_fixtures import NETWORK, EvmEnv, Shop
from tests.rpc_proxy import RpcProxy
from tests.support import SettingsFactory, connected_gate, running_worker
from verifier.models import Failure, Receipt
from verifier.settings import Settings

MAX_JOBS = 4
RPC_DELAY = 1.0  # seconds every RPC request is held: long enough to see jobs pile up


async def peak_in_flight(redis: Redis, done: asyncio.Event) -> int:
    """The most in-progress keys seen at once until ``done`` is set."""
    peak = 0
    while not done.is_set():
        peak = max(peak, len(await redis.keys(in_progress_key_prefix + "*")))
        await asyncio.sleep(0.02)
    return peak


@contextlib.asynccontextmanager
async def workers(settings: Settings, count: int) -> AsyncIterator[list[Any]]:
    async with contextlib.AsyncExitStack() as stack:
        started = [await stack.enter_async_context(running_worker(settings)) for _ in range(count)]
        deadline = time.monotonic() + 30
        while not all("verifier" in w.ctx for w in started):  # adapters started, chain pinned
            assert time.monotonic() < deadline, "workers did not start"
            await asyncio.sleep(0.05)
        yield started


@pytest.mark.parametrize("count", [1, 3])
async def test_each_worker_adds_max_jobs_in_flight(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Redis, count: int
) -> None:
    with RpcProxy(evm.anvil.url) as proxy:
        settings = make_settings(
            # max_jobs in the settings, as in production: the queue read limit follows it.
            # A verification makes a few sequential RPC requests: give it time for all of them.
            worker={"max_jobs": MAX_JOBS, "job_timeout": 20},
            networks={NETWORK: {"rpc_urls": [proxy.url], "head_cache_seconds": 0}},
            assets=[{"network": NETWORK, "symbol": "USDC", "asset": evm.token, "decimals": 6}],
        )
        async with connected_gate(settings) as gate, workers(settings, count):
            shop = Shop(gate, evm)
            proofs = []
            for _ in range(3 * MAX_JOBS + 3):  # more than three workers can hold at once
                accept, offers = shop.offer()
                proofs.append((shop.proof(accept, shop.pay(accept)), offers))
            proxy.delay = RPC_DELAY
            done = asyncio.Event()
            sampler = asyncio.create_task(peak_in_flight(redis, done))
            outcomes: list[Receipt | Failure] = await asyncio.gather(
                *(shop.settle(header, offers, wait=60) for header, offers in proofs)
            )
            done.set()
            peak = await sampler
            proxy.delay = 0
    assert all(isinstance(o, Receipt) for o in outcomes), outcomes
    assert peak == count * MAX_JOBS, f"{count} worker(s) held at most {peak} jobs at once"
