"""Helpers shared by the tests: an in-process worker and a connected gate."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from verifier.gate import Gate
from verifier.settings import Settings
from verifier.worker import make_worker

KEY = "test-key-0123456789abcdef0123456789abcdef"
# Real recorded chain API responses (with their provenance in RECORDED/README.md), kept in the
# repository so that a fresh clone tests its parsers and servers against them.
RECORDED = Path(__file__).parent / "fixtures" / "recorded"
SettingsFactory = Callable[..., Settings]


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
