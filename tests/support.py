"""Helpers shared by the tests: an in-process worker, a connected gate, an HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import uvicorn

from devchain.redis_server import free_port
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


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """An ASGI app on a real socket (uvicorn, lifespan included); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
