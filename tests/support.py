"""Helpers shared by the tests: an in-process worker, a connected gate, an HTTP server, a
checkout that offers, proves and settles through a gate, and the shape of a JSON value."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import uvicorn

from devchain.redis_server import free_port
from verifier.gate import Gate, Offer
from verifier.models import (
    Accept,
    Failure,
    PaymentPayload,
    ProofBody,
    ReasonCode,
    Receipt,
    ResourceInfo,
)
from verifier.settings import AcceptSettings, Settings
from verifier.wire import decode_payment_required, encode_json
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


class Checkout:
    """A gate selling one resource, as a web server uses it: offers, proofs and their outcomes.

    ``terms`` are the offer's defaults (``network``, ``asset``, ``pay_to``, ``amount``, ...), each
    call may change any of them; ``wait`` is how long a proof waits for its outcome by default.
    """

    def __init__(self, gate: Gate, resource: str, wait: float = 10, **terms: Any) -> None:
        self.gate = gate
        self.resource = resource
        self.wait = wait
        self.terms = terms

    def offers(self, **terms: Any) -> list[Offer]:
        return self.gate.offers([AcceptSettings(**{**self.terms, **terms})])

    def offer(self, now: float | None = None, **terms: Any) -> tuple[Accept, list[Offer]]:
        """The first Accept of a 402 for these terms, as a client decodes it, and the offers."""
        offers = self.offers(**terms)
        required = self.gate.challenge(ResourceInfo(url=self.resource), offers, now=now)
        return decode_payment_required(encode_json(required)).accepts[0], offers

    @staticmethod
    def proof(accept: Accept, tx: str, signature: str | None = None) -> str:
        body = ProofBody(nonce=accept.extra.nonce, txHash=tx, signature=signature)
        return encode_json(PaymentPayload(accepted=accept, payload=body))

    async def submit(
        self, header: str, offers: list[Offer], wait: float | None = None
    ) -> Receipt | Failure:
        """The outcome of the proof ``header`` (a ``PAYMENT-SIGNATURE`` value)."""
        wait = self.wait if wait is None else wait
        return await self.gate.settle(header, resource=self.resource, offers=offers, timeout=wait)

    async def settle_tx(
        self,
        accept: Accept,
        tx: str,
        offers: list[Offer],
        signature: str | None = None,
        wait: float | None = None,
    ) -> Receipt | Failure:
        """The outcome of a proof that ``tx`` pays ``accept``."""
        return await self.submit(self.proof(accept, tx, signature), offers, wait)


def reason(outcome: Receipt | Failure) -> ReasonCode | None:
    return None if isinstance(outcome, Receipt) else outcome.error_reason


def ext(outcome: Receipt | Failure) -> dict[str, Any]:
    """The receipt's ``onchain-proof`` extension; the outcome must be a receipt."""
    assert isinstance(outcome, Receipt), outcome
    data: dict[str, Any] = outcome.extensions["onchain-proof"]
    return data


def shape(value: Any) -> Any:
    """``value`` with every leaf replaced by its type's name, and lists by their first item."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__
