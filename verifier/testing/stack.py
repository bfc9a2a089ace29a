"""The real stack a test settles proofs through: a connected gate and an arq worker in the
test's event loop, against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

from verifier.gate import Gate
from verifier.settings import Settings
from verifier.worker import make_worker


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
        running = [t for t in worker.tasks.values() if not t.done()]
        if running:
            await asyncio.wait(running, timeout=10)
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


# ``[worker]`` for tests: jobs picked at once, retries within a second, no grace past expiry,
# and a small clock skew, so that a pending or too-early proof shows in a test's time.
FAST_WORKER: dict[str, Any] = {
    "poll_delay": 0.01,
    "retry_base": 0.05,
    "retry_max": 0.2,
    "job_timeout": 5,
    "grace_seconds": 0,
    "clock_skew": 5,
}


def suite_settings(
    redis_url: str,
    networks: dict[str, dict[str, Any]],
    assets: list[dict[str, Any]],
) -> Settings:
    """Settings for one test: a fresh challenge key, ``FAST_WORKER``, and a queue and key prefix of
    its own on ``redis_url``, so that what one test leaves retrying never reaches the next one
    and a Redis that holds other data can serve."""
    run = secrets.token_hex(6)
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "queue_name": f"x402-conformance:{run}",
        "store": {"prefix": f"x402c-{run}"},
        "challenge": {"active": "k1", "keys": {"k1": secrets.token_hex(32)}},
        "worker": FAST_WORKER,
        "networks": networks,
        "assets": assets,
    }
    return Settings(**values)
