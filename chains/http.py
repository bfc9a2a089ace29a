"""The HTTP edge every chain API client sends through, and the one place its failures are mapped.

A ``Transport`` is any async callable from an ``HttpRequest`` to an ``HttpReply``; it raises
``RpcUnavailable`` when nothing came back (refused, reset, timed out). The default is
``AiohttpTransport``: one pooled session per adapter, created inside the running loop and kept
for the worker's life. Tests pass their own callable to an adapter (``create(...,
transport=...)``) to answer what a real node cannot be made to do, instead of patching.

``HttpApi`` is what the protocol clients (``chains.jsonrpc``, ``chains.rest``) share: the URLs
with failover and pinning (``chains.endpoints``), the transport, the request count, and the
mapping of a reply to JSON or to a transient error: HTTP 429 and 5xx, any other status but 200,
and a body that is not JSON are all ``RpcUnavailable``. Only idempotent reads go through here,
so trying the next URL after a failure is always safe.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from chains.endpoints import Endpoints
from verifier.adapter import RpcUnavailable, TransientError, rpc_observed


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str  # "GET" or "POST"
    url: str
    params: Mapping[str, str | int] | None = None  # the query string, in this order
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes


class Transport(Protocol):
    async def __call__(self, request: HttpRequest) -> HttpReply: ...


class AiohttpTransport:
    """The default transport: one ``aiohttp`` session with a pool of keep-alive connections.

    aiohttp rather than httpx: this is the worker's hot path, and aiohttp's C parser makes each
    call several times cheaper in CPU (measured with ``make bench``).
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, request: HttpRequest) -> HttpReply:
        if self._session is None:  # created lazily, inside the running loop
            connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        try:
            async with self._session.request(
                request.method,
                request.url,
                params=request.params,
                data=request.body,
                headers=request.headers,
            ) as reply:
                return HttpReply(reply.status, await reply.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RpcUnavailable(f"{request.url}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpApi:
    """An API reached over HTTP at several URLs: failover, pinning, replies read as JSON.

    ``not_found``: the error a 404 means on this API (``TxNotFound`` on Horizon, where it is an
    answer about the transaction); without it a 404 is an unexpected status, ``RpcUnavailable``.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        transport: Transport,
        *,
        headers: Mapping[str, str] | None = None,
        not_found: type[TransientError] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.transport = transport
        self.headers = dict(headers or {})
        self.not_found = not_found
        self.requests_sent = 0  # HTTP round trips, for the benchmark and tests

    async def exchange(self, request: HttpRequest) -> Any:
        """``request`` sent once, its reply's JSON; every failure is a ``TransientError``."""
        self.requests_sent += 1
        start = time.perf_counter()
        try:
            reply = await self.transport(request)
        except BaseException:
            rpc_observed(request.url, time.perf_counter() - start, ok=False)
            raise
        rpc_observed(
            request.url, time.perf_counter() - start, ok=reply.status == 200 or reply.status == 404
        )
        where = request.url
        if reply.status == 404 and self.not_found is not None:
            raise self.not_found(f"{where}: not found")
        if reply.status == 429 or reply.status >= 500:
            raise RpcUnavailable(f"{where}: HTTP {reply.status}")
        if reply.status != 200:
            raise RpcUnavailable(f"{where}: unexpected HTTP {reply.status}")
        try:
            return orjson.loads(reply.body)
        except orjson.JSONDecodeError as exc:
            raise RpcUnavailable(f"{where}: reply is not JSON") from exc
