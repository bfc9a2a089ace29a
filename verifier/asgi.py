"""A Starlette gate that speaks the x402 headers, for the routes in the configuration.

* No proof: ``402`` with ``PAYMENT-REQUIRED`` (base64 JSON) and the same JSON as the body.
* A good proof: ``200`` with the resource (a static body, or the upstream's response when the
  route proxies) and the receipt in ``PAYMENT-RESPONSE`` and ``X-PAYMENT-RESPONSE``, as far as the
  route's delivery policy allows (``verifier.delivery``): by default one payment buys one
  delivery, replayed to the same proof for ``replay_window`` seconds, and after that the proof
  gets ``402`` with the final ``payment_already_redeemed``.
* A bad proof: ``402`` with the failure in ``PAYMENT-RESPONSE`` and a fresh challenge.
* A pending proof (not confirmed within ``gate.settle_timeout``): ``402`` with the transient
  failure and ``Retry-After``; the verification keeps running, send the same proof again.
* Too many proofs in verification for one challenge (``gate.max_proofs_per_nonce``): ``429``
  with the failure (``too_many_proofs``) and ``Retry-After``.
* The upstream fails (no answer, a timeout, a 5xx): ``502`` with the receipt and ``Retry-After``;
  the payment was not used, send the same proof again.
* Redis unreachable, or anything unexpected: ``503`` with ``Retry-After`` (never a 500); nothing
  was consumed, the same proof works later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from verifier.delivery import (
    Busy,
    Delivery,
    Redeemed,
    Result,
    Served,
    StoredResponse,
    Unstored,
    UpstreamFailed,
)
from verifier.gate import Gate, Offer
from verifier.metrics import render
from verifier.models import (
    SCHEME,
    Failure,
    PaymentRequired,
    ReasonCode,
    Receipt,
    ResourceInfo,
    failure,
)
from verifier.settings import RouteSettings, Settings
from verifier.trace import TraceMiddleware
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
# Not passed back from the upstream either: the gate writes the payment headers itself, and
# httpx has already decoded the body.
_NOT_RETURNED = _HOP | {
    "content-encoding",
    "payment-required",
    "payment-response",
    "x-payment-response",
}
RETRY_AFTER = "2"


def _json_402(required: PaymentRequired, extra: dict[str, str] | None = None) -> Response:
    body = required.model_dump_json(by_alias=True, exclude_none=True)
    headers = {PAYMENT_REQUIRED: encode_json(required), **(extra or {})}
    return Response(body, status_code=402, headers=headers, media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str]) -> Response:
    body = orjson.dumps({"error": message})
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _content_type(mime: str) -> str:
    # What Starlette would send for this media type.
    return f"{mime}; charset=utf-8" if mime.startswith("text/") and "charset" not in mime else mime


class PaidRoute:
    def __init__(
        self, gate: Gate, route: RouteSettings, upstream: httpx.AsyncClient | None
    ) -> None:
        self.gate = gate
        self.route = route
        self.offers: list[Offer] = gate.offers(route.accepts)
        self.upstream = upstream
        self.delivery = Delivery(gate, route)

    def resource(self, request: Request) -> ResourceInfo:
        base = self.gate.settings.gate.public_url or str(request.base_url)
        return ResourceInfo(
            url=base.rstrip("/") + self.route.path,
            description=self.route.description or None,
            mime_type=self.route.mime_type,
        )

    async def offers_for(self, request: Request) -> list[Offer]:
        """The offers for this request: the route's (``verifier.middleware`` prices per request)."""
        return self.offers

    async def __call__(self, request: Request) -> Response:
        resource = self.resource(request)
        header = proof_header(request.headers)
        offers = await self.offers_for(request)
        if header is None:
            return _json_402(self.gate.challenge(resource, offers, error="payment required"))
        paid: dict[str, str] = {}
        try:
            outcome = await self.gate.settle(header, resource=resource.url, offers=offers)
            if isinstance(outcome, Failure):
                return self._refused(resource, outcome, offers)
            request.state.x402_receipt = outcome  # what an app behind it reads (middleware)
            paid = response_headers(outcome)
            content = await request.body() if self.upstream is not None else b""
            result = await self.delivery.deliver(
                _consumption_key(outcome), lambda: self._produce(request, content)
            )
            return self._answer(resource, outcome, result, paid, offers)
        except RedisError as exc:
            # The proof is not lost: the client keeps it and sends it again.
            log.error("paid request failed, Redis unavailable: %s", exc)
            note = "verification store unavailable, retry the same proof"
            return _error(503, note, {**paid, "Retry-After": RETRY_AFTER})
        except Exception:
            # A bug must not cost a payment: nothing was consumed, the same proof retries.
            log.exception("paid request to %s failed unexpectedly", self.route.path)
            note = "the gate failed unexpectedly, retry the same proof"
            return _error(503, note, {**paid, "Retry-After": RETRY_AFTER})

    def _refused(
        self, resource: ResourceInfo, outcome: Failure, offers: list[Offer] | None = None
    ) -> Response:
        extra = response_headers(outcome)
        if outcome.error_reason is ReasonCode.TOO_MANY_PROOFS:
            # Not a payment problem: this challenge has enough proofs in verification already.
            body = outcome.model_dump_json(by_alias=True, exclude_none=True)
            headers = {**extra, "Retry-After": RETRY_AFTER}
            return Response(body, status_code=429, headers=headers, media_type="application/json")
        if outcome.transient:
            extra["Retry-After"] = RETRY_AFTER
        fresh = self.gate.challenge(
            resource, self.offers if offers is None else offers, error=outcome.error_reason.value
        )
        return _json_402(fresh, extra)

    def _answer(
        self,
        resource: ResourceInfo,
        receipt: Receipt,
        result: Result,
        paid: dict[str, str],
        offers: list[Offer],
    ) -> Response:
        match result:
            case Served(response=stored):
                response = Response(stored.body, status_code=stored.status)
                # Latin-1 maps each byte to one character: the upstream's header bytes go back
                # exactly as they came.
                response.raw_headers.extend(
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in (*stored.headers, *paid.items())
                )
                return response
            case Redeemed(message=message):
                done = failure(
                    ReasonCode.PAYMENT_ALREADY_REDEEMED,
                    message,
                    network=receipt.network,
                    nonce=receipt.nonce,
                    transaction=receipt.transaction,
                )
                return self._refused(resource, done, offers)
            case Unstored(size=size, limit=limit):
                note = (
                    f"already delivered: the response ({size} bytes) is larger than "
                    f"max_stored_response_bytes ({limit}) and is not kept for replays"
                )
                return _error(409, note, paid)
            case UpstreamFailed(detail=detail):
                note = f"{detail}; the payment was not used, send the same proof again"
                return _error(502, note, {**paid, "Retry-After": RETRY_AFTER})
            case Busy():
                note = (
                    "this payment's first delivery is still in progress, send the same proof again"
                )
                return _error(503, note, {**paid, "Retry-After": RETRY_AFTER})

    async def _produce(self, request: Request, content: bytes) -> StoredResponse | UpstreamFailed:
        if self.route.body is not None:
            static = (("content-type", _content_type(self.route.mime_type)),)
            return StoredResponse(200, static, self.route.body.encode())
        assert self.upstream is not None and self.route.upstream is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = self.route.upstream
        if request.url.query:
            url = f"{url}?{request.url.query}"
        try:
            # One deadline for the whole call: httpx's timeout is per read, and a lease on the
            # delivery only lasts upstream_timeout plus a margin.
            async with asyncio.timeout(self.gate.settings.gate.upstream_timeout):
                reply = await self.upstream.request(
                    request.method, url, headers=headers, content=content
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("upstream of %s failed: %r", self.route.path, exc)
            return UpstreamFailed("the upstream did not answer")
        if reply.status_code >= 500:
            log.warning("upstream of %s answered %d", self.route.path, reply.status_code)
            return UpstreamFailed(f"the upstream failed ({reply.status_code})")
        out = tuple(
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in reply.headers.raw
            if k.decode("latin-1").lower() not in _NOT_RETURNED
        )
        return StoredResponse(reply.status_code, out, reply.content)


def _consumption_key(receipt: Receipt) -> str:
    return str(receipt.extensions[SCHEME]["consumptionKey"])


async def receipts_endpoint(request: Request, gate: Gate) -> Response:
    """``GET gate.receipts_path?tx=…[&network=…]|nonce=…|trace=…[&limit=…]``: the status read
    (``verifier.status``) behind the ``api`` bearer token."""
    from verifier.auth import bearer_ok
    from verifier.status import BadQuery, find_receipts, nothing_found, query_from_params

    def answer(status: int, content: object, headers: dict[str, str] | None = None) -> Response:
        return Response(orjson.dumps(content), status, headers, media_type="application/json")

    if not bearer_ok(request.headers.get("authorization"), gate.settings.api.token()):
        return answer(
            401,
            {"error": "a bearer token is required (Authorization: Bearer <token>)"},
            {"WWW-Authenticate": "Bearer"},
        )
    try:
        query = query_from_params(request.query_params.multi_items())
        found = await find_receipts(gate.redis, gate.settings, query)
    except BadQuery as exc:
        return answer(400, {"error": str(exc)})
    except RedisError as exc:
        log.error("status read failed, Redis unavailable: %s", exc)
        note = "verification store unavailable, try again"
        return answer(503, {"error": note}, {"Retry-After": RETRY_AFTER})
    if not found:
        return answer(404, {"error": nothing_found(query), "receipts": []})
    return answer(200, {"receipts": [r.model_dump(by_alias=True, mode="json") for r in found]})


def create_app(settings: Settings, gate: Gate | None = None) -> Starlette:
    """The ASGI app for ``settings.routes``. Connects its own ``Gate`` unless given one."""
    state: dict[str, object] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = gate is None
        g = await Gate.connect(settings) if gate is None else gate
        state["gate"] = g
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

    async def metrics(request: Request) -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)

    async def receipts(request: Request) -> Response:
        g = state["gate"]
        assert isinstance(g, Gate)
        return await receipts_endpoint(request, g)

    routes = [Route("/healthz", health, methods=["GET"])]
    if settings.gate.metrics_path:
        routes.append(Route(settings.gate.metrics_path, metrics, methods=["GET"]))
    if settings.gate.receipts_path:
        routes.append(Route(settings.gate.receipts_path, receipts, methods=["GET"]))
    routes += [
        Route(r.path, endpoint(r.path), methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])
        for r in settings.routes
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(TraceMiddleware)  # pure ASGI: x-trace-id in, out, and in every log line
    return app
