"""x402 payments in front of an existing ASGI app (Starlette, FastAPI): a pure ASGI middleware.

::

    app = FastAPI()
    app.add_middleware(
        PaymentMiddleware,
        settings=load_settings("verifier.toml"),
        paths=[
            PaidPath("/report", accepts=[AcceptSettings(network=..., asset="USDC",
                                                        pay_to="0x…", price="0.01")]),
            PaidPath("/rows", accepts=[...], price=rows_price, max_amount=1_000_000),
        ],
    )

    @app.get("/report")
    async def report(receipt: Receipt = Depends(paid_receipt)) -> dict: ...

A request to a paid path without a proof gets ``402`` with a challenge; with a proof it is
settled by the gate library and the worker pool (``Gate.settle``), exactly as the HTTP gate
settles it (``verifier.asgi``): the same answers, headers and delivery policy (``delivery``,
``replay_window``, ``access_period``: by default one payment buys one response, and the same
proof within ``replay_window`` gets that same response again, without calling the app twice).
The app runs only for a payment that counts, and finds the receipt in
``request.state.x402_receipt`` (``paid_receipt`` is the FastAPI dependency that returns it).
Paid responses are buffered (at most ``max_stored_response_bytes`` are kept for replays), so a
paid path does not stream; other paths pass through untouched, streaming and all.

**Price per request**: ``price(request)`` returns the amount in base units (``rows * unit``,
say); it is resolved before the challenge is issued and is part of the challenge's
authenticated terms, and it is resolved again from the paid request: a client that asks for a
challenge for 1 row and then sends the proof with 1,000 rows is refused, since the terms differ.
``max_amount`` caps it (a request priced above is refused with ``400``, before any challenge).
The resource URL is the path with the query, so one challenge pays for one query.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from verifier.asgi import RETRY_AFTER, PaidRoute, _error, _json_402
from verifier.delivery import LEASE_MARGIN, StoredResponse, UpstreamFailed
from verifier.gate import Gate, Offer
from verifier.models import SCHEME, Failure, ReasonCode, Receipt, ResourceInfo, failure
from verifier.settings import AcceptSettings, RouteSettings, Settings
from verifier.trace import TraceMiddleware
from verifier.wire import proof_header, response_headers

log = logging.getLogger(__name__)

Price = Callable[[Request], int | Awaitable[int]]
STATE_KEY = "x402_receipt"


@dataclass(frozen=True)
class PaidPath:
    """One paid path of an app: its rails, an optional per-request price, its delivery."""

    path: str
    accepts: Sequence[AcceptSettings]
    price: Price | None = None
    max_amount: int | None = None
    description: str = ""
    delivery: Literal["once", "entitlement"] = "once"
    replay_window: int = 300
    access_period: int | None = None
    max_stored_response_bytes: int | None = None
    # The methods that must pay (default: every method); others pass through to the app.
    methods: frozenset[str] | None = None

    def route(self) -> RouteSettings:
        return RouteSettings(
            path=self.path,
            description=self.description,
            body="",  # never served: the app answers (``_AppRoute._produce``)
            accepts=list(self.accepts),
            delivery=self.delivery,
            replay_window=self.replay_window,
            access_period=self.access_period,
            max_stored_response_bytes=self.max_stored_response_bytes,
        )


class PriceRefused(Exception):
    """The request's price is not one the path takes (above ``max_amount``, or below 1)."""


class _AppRoute(PaidRoute):
    """``PaidRoute`` whose resource is the wrapped app's response, priced per request."""

    def __init__(self, gate: Gate, paid: PaidPath, app: Any) -> None:
        super().__init__(gate, paid.route(), None)
        self.paid = paid
        self.app = app
        self.scope: dict[str, Any] = {}

    def resource(self, request: Request) -> ResourceInfo:
        base = self.gate.settings.gate.public_url or str(request.base_url)
        query = f"?{request.url.query}" if request.url.query else ""
        return ResourceInfo(
            url=base.rstrip("/") + self.route.path + query,
            description=self.route.description or None,
        )

    async def offers_for(self, request: Request) -> list[Offer]:
        if self.paid.price is None:
            return self.offers
        try:
            amount = self.paid.price(request)
            if inspect.isawaitable(amount):
                amount = await amount
        except (ValueError, TypeError, KeyError) as exc:  # e.g. rows=abc in the query
            raise PriceRefused(f"this request cannot be priced: {exc}") from exc
        if not isinstance(amount, int) or amount < 1:
            raise PriceRefused(f"the price of this request ({amount!r}) is not a positive amount")
        if self.paid.max_amount is not None and amount > self.paid.max_amount:
            raise PriceRefused(f"this request costs {amount}, above the cap {self.paid.max_amount}")
        return [dataclasses.replace(offer, amount=amount) for offer in self.offers]

    async def _produce(self, request: Request, content: bytes) -> StoredResponse | UpstreamFailed:
        """Run the app for this paid request and keep what it answered."""
        status = 500
        headers: list[tuple[str, str]] = []
        body = bytearray()
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": content, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.extend(
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"content-length", b"x-trace-id")
                )
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        scope = {**request.scope, "state": {**request.scope.get("state", {})}}
        receipt = request.scope.get("state", {}).get(STATE_KEY)
        scope["state"][STATE_KEY] = receipt
        await self.app(scope, receive, send)
        if status >= 500:
            return UpstreamFailed(f"the app failed ({status})")
        return StoredResponse(status, tuple(headers), bytes(body))


class PaymentMiddleware:
    """Pure ASGI middleware: payments on ``paths``, everything else passed through."""

    def __init__(
        self,
        app: Any,
        *,
        paths: Sequence[PaidPath],
        settings: Settings | None = None,
        gate: Gate | None = None,
    ) -> None:
        if (settings is None) == (gate is None):
            raise TypeError("give settings (the middleware connects its own gate) or a gate")
        self.app = app
        self._settings = settings if settings is not None else gate.settings  # type: ignore[union-attr]
        self._gate = gate
        self._paths = {p.path: p for p in paths}
        self._routes: dict[str, _AppRoute] = {}
        self._traced = TraceMiddleware(self._dispatch)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"] not in self._paths:
            await self.app(scope, receive, send)
            return
        await self._traced(scope, receive, send)

    async def _dispatch(self, scope: Any, receive: Any, send: Any) -> None:
        gate = await self._connected()
        path = scope["path"]
        route = self._routes.get(path)
        if route is None:
            route = self._routes[path] = _AppRoute(gate, self._paths[path], self.app)
        request = Request(scope, receive)
        if route.paid.methods is not None and request.method not in route.paid.methods:
            await self.app(scope, receive, send)
            return
        try:
            response = await route(request)
        except PriceRefused as exc:
            response = Response(
                orjson.dumps({"error": str(exc)}), status_code=400, media_type="application/json"
            )
        await response(scope, receive, send)

    async def _connected(self) -> Gate:
        if self._gate is None:
            self._gate = await Gate.connect(self._settings)
            self._own = True
        return self._gate

    async def _lifespan(self, scope: Any, receive: Any, send: Any) -> None:
        async def wrapped_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.shutdown.complete" and getattr(self, "_own", False):
                with contextlib.suppress(Exception):
                    assert self._gate is not None
                    await self._gate.close()
            await send(message)

        await self.app(scope, receive, wrapped_send)


def paid_receipt(request: Request) -> Receipt:
    """FastAPI dependency: the receipt of the payment this request made (``Depends``)."""
    receipt = request.scope.get("state", {}).get(STATE_KEY)
    if not isinstance(receipt, Receipt):
        raise RuntimeError(
            f"{request.url.path} is not a paid path of PaymentMiddleware: no receipt"
        )
    return receipt


# -- a FastAPI dependency, without the middleware --------------------------------------------

# KEYS: called (when the payment's first call on this path began), calling (a call in
# progress). ARGV: now, retention s, "once" | access period s, in-progress lease s.
_BEGIN_CALL = """
local first = redis.call('GET', KEYS[1])
if not first then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  if ARGV[3] == 'once' then
    redis.call('SET', KEYS[2], '1', 'EX', ARGV[4])
  end
  return 'begun'
end
if ARGV[3] ~= 'once' then
  if tonumber(ARGV[1]) - tonumber(first) <= tonumber(ARGV[3]) then
    return 'begun'
  end
  return 'redeemed'
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'busy'
end
return 'redeemed'
"""
STORE_DOWN = "verification store unavailable, retry the same proof"


class PaymentRequiredError(HTTPException):
    """What ``require_payment`` raises when a request has not paid (yet): ``response`` is the
    gate's answer (``402`` with a challenge, ``400``, ``429``, ``503``). FastAPI's default
    handler sends its status and headers (``PAYMENT-REQUIRED``, ``PAYMENT-RESPONSE``,
    ``Retry-After``) with ``{"detail": <the body>}``; ``payment_error_handler`` sends the gate's
    body as it is."""

    def __init__(self, response: Response) -> None:
        body = orjson.loads(bytes(response.body)) if response.body else None
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        super().__init__(response.status_code, detail=body, headers=headers)
        self.response = response


async def payment_error_handler(request: Request, exc: Exception) -> Response:
    """``app.add_exception_handler(PaymentRequiredError, payment_error_handler)``: the gate's
    own answer, body and all."""
    assert isinstance(exc, PaymentRequiredError)
    return exc.response


def require_payment(
    accepts: Sequence[AcceptSettings],
    *,
    price: Price | None = None,
    max_amount: int | None = None,
    description: str = "",
    delivery: Literal["once", "entitlement"] = "once",
    access_period: int = 300,
    settings: Settings | None = None,
    gate: Gate | None = None,
) -> RequirePayment:
    """A FastAPI dependency that makes a route paid and gives its handler the receipt::

        paid = require_payment(accepts, settings=load_settings("verifier.toml"))

        @app.get("/report")
        async def report(receipt: Annotated[Receipt, Depends(paid)]) -> dict: ...

    Without a proof the request gets the gate's ``402`` and challenge (``PaymentRequiredError``);
    with one it is settled by the gate library and the worker pool (``Gate.settle``), and the
    handler runs with the receipt and answers with ``PAYMENT-RESPONSE`` set. A failure gets the
    gate's answer (a fresh challenge and the reason; ``429``; ``503`` with ``Retry-After`` when
    Redis is down). ``price(request)`` and ``max_amount`` work as in ``PaidPath`` (a request
    that cannot be priced, or above the cap, gets ``400``). Give ``gate`` (one per process), or
    ``settings`` and it connects one at the first request (``await paid.aclose()`` at shutdown
    closes it).

    **What one payment buys.** A dependency cannot keep the handler's response for replays, as
    the middleware does, so: ``delivery="once"`` (the default), a payment buys one handler call on
    this path. The same proof again gets ``402`` ``payment_already_redeemed``, also when the
    first call's response was lost (use ``PaymentMiddleware`` to replay it instead); while the
    first call is still running (up to ``gate.upstream_timeout`` + 10 s) it gets ``503`` with
    ``Retry-After`` instead, since that call may yet fail. A call that does not complete, the
    handler (or a dependency after this one) raising, FastAPI refusing the request's parameters
    (``422``), gives the payment back: the same proof may be sent again. ``"entitlement"``: any
    number of calls for ``access_period`` seconds after the first, which starts the period
    whatever it answers. The marks are kept in Redis as long as the payment's receipt, so they
    never expire into a second use.

    **Headers.** FastAPI adds a dependency's headers to the response it makes of the handler's
    return value, not to a ``Response`` the handler returns itself: such a handler sets them,
    ``JSONResponse(..., headers=verifier.wire.response_headers(receipt))``.
    """
    if (settings is None) == (gate is None):
        raise TypeError("give settings (the dependency connects its own gate) or a gate")
    paid = PaidPath(
        "/", accepts=accepts, price=price, max_amount=max_amount, description=description
    )
    return RequirePayment(paid, delivery, access_period, settings, gate)


class RequirePayment:
    """The dependency ``require_payment`` makes (its docstring says what it does)."""

    def __init__(
        self,
        paid: PaidPath,
        delivery: Literal["once", "entitlement"],
        access_period: int,
        settings: Settings | None,
        gate: Gate | None,
    ) -> None:
        self.paid = paid
        self.delivery = delivery
        self.access_period = access_period
        self._settings = settings
        self._gate = gate
        self._own = gate is None
        self._connecting = asyncio.Lock()
        self._script: AsyncScript | None = None

    async def _connected(self) -> Gate:
        if self._gate is None:
            async with self._connecting:  # concurrent first requests connect one gate
                if self._gate is None:
                    assert self._settings is not None
                    self._gate = await Gate.connect(self._settings)
        return self._gate

    async def aclose(self) -> None:
        """Close the gate this dependency connected (not one it was given)."""
        if self._own and self._gate is not None:
            await self._gate.close()
            self._gate, self._script = None, None  # the script is bound to that gate's client

    async def __call__(self, request: Request, response: Response) -> AsyncIterator[Receipt]:
        g = await self._connected()
        route = _DependencyRoute(g, self.paid, request.url.path)
        try:
            offers = await route.offers_for(request)
        except PriceRefused as exc:
            raise PaymentRequiredError(_error(400, str(exc), {})) from None
        resource = route.resource(request)
        header = proof_header(request.headers)
        if header is None:
            challenge = g.challenge(resource, offers, error="payment required")
            raise PaymentRequiredError(_json_402(challenge))
        keys: list[str] = []
        state = b""
        try:
            outcome = await g.settle(header, resource=resource.url, offers=offers)
            if isinstance(outcome, Receipt):
                keys = self._keys(g, outcome, request.url.path)
                state = await self._begin(g, keys)
        except RedisError as exc:
            log.error("paid request failed, Redis unavailable: %s", exc)
            down = _error(503, STORE_DOWN, {"Retry-After": RETRY_AFTER})
            raise PaymentRequiredError(down) from None
        except Exception:
            # A bug must not cost a payment: nothing was consumed, the same proof retries.
            log.exception("paid request to %s failed unexpectedly", request.url.path)
            note = "the gate failed unexpectedly, retry the same proof"
            raise PaymentRequiredError(_error(503, note, {"Retry-After": RETRY_AFTER})) from None
        if isinstance(outcome, Failure):
            raise PaymentRequiredError(route._refused(resource, outcome, offers))
        paid = response_headers(outcome)
        if state == b"busy":  # not final: the first call may still fail and give the payment back
            note = "this payment's call on this path is in progress, send the same proof again"
            raise PaymentRequiredError(_error(503, note, {**paid, "Retry-After": RETRY_AFTER}))
        if state == b"redeemed":
            done = failure(
                ReasonCode.PAYMENT_ALREADY_REDEEMED,
                "this payment has bought its call on this path"
                if self.delivery == "once"
                else "the access period this payment bought has ended",
                network=outcome.network,
                nonce=outcome.nonce,
                transaction=outcome.transaction,
            )
            raise PaymentRequiredError(route._refused(resource, done, offers))
        for name, value in paid.items():
            response.headers[name] = value
        request.state.x402_receipt = outcome
        try:
            yield outcome
        except Exception:
            if self.delivery == "once":  # nothing was delivered: the same proof may come again
                with contextlib.suppress(RedisError):
                    await g.redis.delete(*keys)
            raise
        finally:
            if self.delivery == "once":  # the call is over (a crash leaves it to expire)
                with contextlib.suppress(RedisError):
                    await g.redis.delete(keys[1])

    def _keys(self, gate: Gate, receipt: Receipt, path: str) -> list[str]:
        ck, keys = _ck(receipt), gate.store.keys
        return [keys.called(ck, path), keys.calling(ck, path)]

    async def _begin(self, gate: Gate, keys: list[str]) -> bytes:
        """``begun``, ``busy`` (a call on this payment is in progress) or ``redeemed``."""
        store = gate.settings.store
        retention = max(store.used_tx_retention, store.receipt_retention)
        period = "once" if self.delivery == "once" else str(self.access_period)
        lease = int(gate.settings.gate.upstream_timeout + LEASE_MARGIN)
        if self._script is None:
            self._script = gate.redis.register_script(_BEGIN_CALL)
        state = await self._script(keys=keys, args=[int(time.time()), retention, period, lease])
        return state if isinstance(state, bytes) else str(state).encode()


class _DependencyRoute(_AppRoute):
    """The pricing and answers of ``_AppRoute`` for one path of a ``require_payment`` route."""

    def __init__(self, gate: Gate, paid: PaidPath, path: str) -> None:
        super().__init__(gate, dataclasses.replace(paid, path=path), None)


def _ck(receipt: Receipt) -> str:
    return str(receipt.extensions[SCHEME]["consumptionKey"])
