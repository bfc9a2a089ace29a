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

import contextlib
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response

from verifier.asgi import PaidRoute
from verifier.delivery import StoredResponse, UpstreamFailed
from verifier.gate import Gate, Offer
from verifier.models import Receipt, ResourceInfo
from verifier.settings import AcceptSettings, RouteSettings, Settings
from verifier.trace import TraceMiddleware

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
