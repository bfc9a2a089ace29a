"""A Starlette gate that speaks the x402 headers, for the routes in the configuration.

* No proof: ``402`` with ``PAYMENT-REQUIRED`` (base64 JSON) and the same JSON as the body.
* A good proof: ``200`` with the resource (a static body, or the upstream's response when the
  route proxies) and the receipt in ``PAYMENT-RESPONSE`` and ``X-PAYMENT-RESPONSE``.
* A bad proof: ``402`` with the failure in ``PAYMENT-RESPONSE`` and a fresh challenge.
* A pending proof (not confirmed within ``gate.settle_timeout``): ``402`` with the transient
  failure and ``Retry-After``; the verification keeps running, send the same proof again.
* Too many proofs in verification for one challenge (``gate.max_proofs_per_nonce``): ``429``
  with the failure (``too_many_proofs``) and ``Retry-After``.
* Redis unreachable: ``503`` with ``Retry-After``; nothing was consumed, the same proof works later.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from verifier.gate import Gate, Offer
from verifier.models import Failure, PaymentRequired, ReasonCode, ResourceInfo
from verifier.settings import RouteSettings, Settings
from verifier.wire import PAYMENT_REQUIRED, encode_json, proof_header, response_headers

log = logging.getLogger(__name__)

# Headers that describe one hop or carry the payment, never forwarded upstream or back.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "payment-signature",
    "x-payment",
}


def _json_402(required: PaymentRequired, extra: dict[str, str] | None = None) -> Response:
    body = required.model_dump_json(by_alias=True, exclude_none=True)
    headers = {PAYMENT_REQUIRED: encode_json(required), **(extra or {})}
    return Response(body, status_code=402, headers=headers, media_type="application/json")


class PaidRoute:
    def __init__(
        self, gate: Gate, route: RouteSettings, upstream: httpx.AsyncClient | None
    ) -> None:
        self.gate = gate
        self.route = route
        self.offers: list[Offer] = gate.offers(route.accepts)
        self.upstream = upstream

    def resource(self, request: Request) -> ResourceInfo:
        base = self.gate.settings.gate.public_url or str(request.base_url)
        return ResourceInfo(
            url=base.rstrip("/") + self.route.path,
            description=self.route.description or None,
            mime_type=self.route.mime_type,
        )

    async def __call__(self, request: Request) -> Response:
        resource = self.resource(request)
        header = proof_header(request.headers)
        if header is None:
            return _json_402(self.gate.challenge(resource, self.offers, error="payment required"))
        try:
            outcome = await self.gate.settle(header, resource=resource.url, offers=self.offers)
        except RedisError as exc:
            # The proof is not lost: the client keeps it and sends it again.
            log.error("settle failed, Redis unavailable: %s", exc)
            return Response(
                '{"error": "verification queue unavailable, retry the same proof"}',
                status_code=503,
                headers={"Retry-After": "2"},
                media_type="application/json",
            )
        paid = response_headers(outcome)
        if isinstance(outcome, Failure) and outcome.error_reason is ReasonCode.TOO_MANY_PROOFS:
            # Not a payment problem: this challenge has enough proofs in verification already.
            return Response(
                outcome.model_dump_json(by_alias=True, exclude_none=True),
                status_code=429,
                headers={**paid, "Retry-After": "2"},
                media_type="application/json",
            )
        if isinstance(outcome, Failure):
            extra = dict(paid)
            if outcome.transient:
                extra["Retry-After"] = "2"
            fresh = self.gate.challenge(resource, self.offers, error=outcome.error_reason.value)
            return _json_402(fresh, extra)
        if self.route.body is not None:
            return Response(self.route.body, headers=paid, media_type=self.route.mime_type)
        return await self._proxy(request, paid)

    async def _proxy(self, request: Request, paid: dict[str, str]) -> Response:
        assert self.upstream is not None and self.route.upstream is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = self.route.upstream
        if request.url.query:
            url = f"{url}?{request.url.query}"
        try:
            reply = await self.upstream.request(
                request.method, url, headers=headers, content=await request.body()
            )
        except httpx.HTTPError as exc:
            # Paid, but the upstream failed: the receipt goes back so the client can retry
            # with the same proof (it gets the same receipt) instead of paying again.
            return Response(f"upstream unavailable: {exc}", status_code=502, headers=paid)
        out = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP}
        out.pop("content-encoding", None)
        out.update(paid)
        return Response(reply.content, status_code=reply.status_code, headers=out)


def create_app(settings: Settings, gate: Gate | None = None) -> Starlette:
    """The ASGI app for ``settings.routes``. Connects its own ``Gate`` unless given one."""
    state: dict[str, object] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = gate is None
        g = await Gate.connect(settings) if gate is None else gate
        async with httpx.AsyncClient(timeout=settings.gate.upstream_timeout) as client:
            for route in settings.routes:
                handler = PaidRoute(g, route, client if route.upstream else None)
                state[route.path] = handler
            yield
        if own:
            await g.close()

    def endpoint(path: str) -> Callable[[Request], Awaitable[Response]]:
        async def paid(request: Request) -> Response:
            handler = state[path]
            assert isinstance(handler, PaidRoute)
            return await handler(request)

        return paid

    async def health(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    routes = [Route("/healthz", health, methods=["GET"])]
    routes += [
        Route(r.path, endpoint(r.path), methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])
        for r in settings.routes
    ]
    return Starlette(routes=routes, lifespan=lifespan)
