"""Helpers shared by the tests: an in-process worker, a connected gate, a shop selling through
it, an HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn

from devchain.service import NotInstalled, Service, free_port
from verifier.challenge import memo_for
from verifier.gate import Gate, Offer
from verifier.models import (
    SCHEME,
    Accept,
    AcceptExtra,
    Failure,
    PaymentPayload,
    ProofBody,
    ReasonCode,
    Receipt,
    ResourceInfo,
)
from verifier.settings import AcceptSettings, Settings
from verifier.testing import connected_gate as connected_gate
from verifier.testing import running_worker as running_worker
from verifier.wire import decode_payment_required, encode_json

KEY = "test-key-0123456789abcdef0123456789abcdef"
# Real recorded chain API responses (with their provenance in RECORDED/README.md), kept in the
# repository so that a fresh clone tests its parsers and servers against them.
RECORDED = Path(__file__).parent / "fixtures" / "recorded"
SettingsFactory = Callable[..., Settings]
S = TypeVar("S", bound=Service)


def an_accept(nonce: str, *, network: str, asset: str, pay_to: str, **extra: Any) -> Accept:
    """An offer of 100000 base units for ``nonce`` (and its memo), 600 s to pay it, with
    ``extra`` added to its ``extra``: an Accept made by hand, for the codecs and the checks."""
    return Accept(
        scheme=SCHEME,
        network=network,
        asset=asset,
        amount="100000",
        pay_to=pay_to,
        max_timeout_seconds=600,
        extra=AcceptExtra(nonce=nonce, memo=memo_for(nonce), **extra),
    )


def started(service: S) -> S:
    """``service.start()``; a binary that is not installed fails the test with the message that
    says how to install it, not with a traceback."""
    try:
        return service.start()
    except NotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)


class Shop:
    """A gate selling one resource, as a web server would use it: offers on the shop's terms
    (``terms``, changed per call), challenges, proofs, and their settlement."""

    def __init__(self, gate: Gate, resource: str, **terms: Any) -> None:
        self.gate = gate
        self.resource = resource
        self.terms = terms

    def offers(self, **terms: Any) -> list[Offer]:
        return self.gate.offers([AcceptSettings(**{**self.terms, **terms})])

    def offer(self, now: float | None = None, **terms: Any) -> tuple[Accept, list[Offer]]:
        """The Accept a client reads from the 402 (decoded from the wire), and the offers."""
        offers = self.offers(**terms)
        required = self.gate.challenge(ResourceInfo(url=self.resource), offers, now=now)
        return decode_payment_required(encode_json(required)).accepts[0], offers

    @staticmethod
    def proof(accept: Accept, tx: str, signature: str | None = None) -> str:
        body = ProofBody(nonce=accept.extra.nonce, tx_hash=tx, signature=signature)
        return encode_json(PaymentPayload(accepted=accept, payload=body))

    async def settle(self, header: str, offers: list[Offer], wait: float = 10) -> Receipt | Failure:
        return await self.gate.settle(header, resource=self.resource, offers=offers, timeout=wait)

    async def settle_tx(
        self,
        accept: Accept,
        tx: str,
        offers: list[Offer],
        signature: str | None = None,
        wait: float = 10,
    ) -> Receipt | Failure:
        """The outcome of a proof that ``tx`` pays ``accept``."""
        return await Shop.settle(self, self.proof(accept, tx, signature), offers, wait)


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
