"""The uvicorn server that ``x402-verifier gate`` runs, built from ``Settings``, with its limits.

Every limit is a ``[gate]`` setting, and each bounds what one client can hold:

* ``header_timeout``: a connection must send a complete request line and headers within this
  many seconds of opening, or of the previous response; else it is closed. Without it a
  "slowloris" client holds a connection forever by sending a header byte now and then (uvicorn
  has no such timeout; its keep-alive timer stops at the first byte).
* ``keep_alive_timeout``: an idle connection between requests is closed after this long.
* ``max_connections``: connections served at once; a request on one more gets ``503`` and its
  connection is closed. Bounds the requests in flight (each holds memory and a Redis wait)
  when clients arrive faster than payments verify. Connections beyond it are still accepted,
  so one that sends nothing is closed by ``header_timeout``.
* ``max_header_bytes``: the request line and headers together; more gets ``431`` with a JSON
  error, as soon as the incomplete head passes the limit (h11 refuses it; the protocol answers
  for it) or when the whole head arrived in one read (h11 checks only incomplete ones, so
  ``RequestLimits`` does). Bounds the memory a request's head takes; at least 32 KiB, since an
  x402 proof header alone may be 16 KiB (a larger proof is the gate's ``invalid_payload``).
* ``max_body_bytes``: a larger request body gets ``413``: before any of it is read when its
  ``Content-Length`` says so, or as soon as a chunked body passes the limit while the app reads
  it. The gate reads bodies only to forward them upstream; the rest of a refused body, or a
  body nobody reads, is read and discarded until ``header_timeout`` after the response (the
  connection is not closed at once, so that a client still sending reads its answer instead of
  a reset).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import ClassVar

import h11
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from verifier.settings import Settings


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request's line and headers.

    The deadline starts when the connection opens and after each response, and ends when h11
    has parsed the next request's headers (uvicorn then starts a new request cycle).
    """

    header_timeout: ClassVar[float] = 10.0
    _deadline: asyncio.TimerHandle | None = None
    # The cycle whose response started the wait (None on a new connection).
    _waiting_after: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._wait_for_headers()
        super().on_response_complete()  # may parse a pipelined request already

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._waiting_after or self.transport.is_closing():
            self._stop_waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _wait_for_headers(self) -> None:
        self._stop_waiting()
        self._waiting_after = self.cycle
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_too_late)

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers any h11 protocol error with a bare 400; a head that grew past the
        # limit gets the 431 that RequestLimits gives a complete one.
        limit = self.config.h11_max_incomplete_event_size
        if limit is None or len(self.conn.trailing_data[0]) <= limit:
            super().send_400_response(msg)
            return
        body = json.dumps({"error": _too_large_head(limit)}, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # h11 cannot read on after the refused head
        ]
        response = h11.Response(
            status_code=431, headers=headers, reason=b"Request Header Fields Too Large"
        )
        for event in (response, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _headers_too_late(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.debug(
                "closing a connection without request headers after %ss", self.header_timeout
            )
            self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for one server (uvicorn instantiates it per connection)."""

    class Protocol(HeaderTimeoutProtocol):
        header_timeout = seconds

    return Protocol


class _BodyTooLarge(Exception):
    """Raised inside the app's ``receive()``, so that it stops reading the body."""


class RequestLimits:
    """ASGI wrapper: ``431`` for a request head over ``max_header_bytes`` (that h11 let through,
    having received it at once), ``413`` for a body over ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        # The request line and headers as sent ("GET /p?q HTTP/1.1", "name: value", CRLFs).
        head = len(scope["method"]) + len(scope["raw_path"]) + len(scope["query_string"]) + 13
        head += sum(len(name) + len(value) + 4 for name, value in headers)
        if head > self.max_header_bytes:
            await _refusal(431, _too_large_head(self.max_header_bytes))(scope, receive, send)
            return
        declared = next((v for k, v in headers if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _refusal(413, self._too_large)(scope, receive, send)
            return
        received = 0
        refused = started = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                refused = True
                raise _BodyTooLarge
            return message

        async def unless_refused(message: Message) -> None:
            nonlocal started
            # Once refused, the app's own answer (a 500 for the exception) gives way to the 413.
            if not refused:
                started = True
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except _BodyTooLarge:
            if started:  # too late for a 413: uvicorn closes the connection
                raise
        if refused and not started:
            await _refusal(413, self._too_large)(scope, receive, send)

    @property
    def _too_large(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes"


def _too_large_head(limit: int) -> str:
    return f"request headers larger than {limit} bytes"


def _refusal(status: int, error: str) -> JSONResponse:
    # No "Connection: close": a client still sending its body would get a reset, not this answer.
    return JSONResponse({"error": error}, status_code=status)


def check_listen(host: str, port: int) -> None:
    """``OSError`` (address in use, not this host's) if the gate could not listen on ``host:port``.

    Binds and closes a socket per address the way asyncio's ``create_server`` will (with
    ``SO_REUSEADDR``), so that ``x402-verifier gate`` says so in one line before it connects.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)


def build_server(
    settings: Settings,
    app: ASGIApp | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    max_body_bytes: int | None = None,
) -> uvicorn.Server:
    """A uvicorn ``Server`` for ``app`` (default: the gate of ``settings.routes``) within the
    gate's limits; ``run()`` it, or ``await serve()``."""
    if app is None:
        from verifier.asgi import create_app

        app = create_app(settings)
    gate = settings.gate
    config = uvicorn.Config(
        RequestLimits(
            app,
            max_body_bytes=gate.max_body_bytes if max_body_bytes is None else max_body_bytes,
            max_header_bytes=gate.max_header_bytes,
        ),
        host=host or gate.host,
        port=gate.port if port is None else port,
        http=header_timeout_protocol(gate.header_timeout),
        # The gate serves no WebSocket; an upgraded connection would outlive the header deadline.
        ws="none",
        # uvicorn counts the connection asking among those open: one more serves max_connections.
        limit_concurrency=gate.max_connections + 1,
        timeout_keep_alive=gate.keep_alive_timeout,
        h11_max_incomplete_event_size=gate.max_header_bytes,
        log_level="warning",
        access_log=False,
    )
    return uvicorn.Server(config)
