"""One id to follow a payment through every process: ``x-trace-id``, and logs that carry it.

The HTTP gate takes the request's ``x-trace-id`` when it is a safe one (1 to 128 characters of
``A-Z a-z 0-9 . _ : -``), or makes one (32 hex digits), and echoes it in the response
(``TraceMiddleware``). ``Gate.settle`` puts it in the job, the worker runs the job under it, and
the receipt carries it under ``extensions["trace"]["traceId"]`` (the trace of the request
whose job made the receipt: the same proof sent again with another id gets the same receipt).

Every log line written while a request or a job is handled carries the trace id, the job id,
the network and the scheme (``LogContext``, a filter on the handlers ``configure_logging``
installs). ``--log-format json`` writes one JSON object per line with those as fields (and
``outcome`` on the line that ends a job's attempt).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any

HEADER = "x-trace-id"
_SAFE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_FIELDS = ("trace_id", "job", "network", "scheme")

_NONE: Mapping[str, str] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "x402_log", default=_NONE
)


def accepted_trace_id(value: str | None) -> str | None:
    """``value`` if it is a trace id we take as it is, else ``None``."""
    return value if value is not None and _SAFE.match(value) else None


def new_trace_id() -> str:
    return secrets.token_hex(16)


def current_trace_id() -> str | None:
    return _context.get().get("trace_id")


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Log lines written inside carry ``fields`` (trace_id, job, network, scheme)."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class LogContext(logging.Filter):
    """Adds the current trace id, job, network and scheme to every record (``-`` if none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _context.get()
        for name in _FIELDS:
            if not hasattr(record, name):
                setattr(record, name, fields.get(name, "-"))
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the context's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*_FIELDS, "outcome"):
            value = getattr(record, name, None)
            if value not in (None, "-"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(trace_id)s]: %(message)s"


def configure_logging(level: int, log_format: str = "text") -> None:
    """The process's logging: ``text`` (with the trace id) or ``json`` lines, on stderr."""
    handler = logging.StreamHandler()
    handler.addFilter(LogContext())
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class TraceMiddleware:
    """Pure ASGI: the request's trace id (taken or made) for its handling, echoed back."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope.get("headers", ()):
            if name == b"x-trace-id":
                given = accepted_trace_id(value.decode("latin-1"))
                break
        trace_id = given or new_trace_id()
        echo = (HEADER.encode(), trace_id.encode())

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", []) if h[0].lower() != echo[0]]
                message["headers"] = [*kept, echo]
            await send(message)

        with log_context(trace_id=trace_id):
            await self.app(scope, receive, send_with_trace)
