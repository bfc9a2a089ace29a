"""A small async JSON-RPC 2.0 client: batches, several URLs with failover, shared reads.

Adapters map everything that goes wrong here to ``RpcUnavailable`` (transient), at this edge:
transport errors, timeouts, HTTP 429 and 5xx, malformed replies and JSON-RPC errors. Only
idempotent reads go through it, so retrying on another URL is always safe.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

import aiohttp
import orjson

from chains.endpoints import Endpoints
from verifier.adapter import RpcUnavailable

T = TypeVar("T")
_JSON = {"content-type": "application/json"}


class RpcError(RpcUnavailable):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, method: str, error: Any) -> None:
        message = error.get("message") if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        super().__init__(f"{method}: JSON-RPC error {code}: {message}")
        self.code = code
        self.rpc_message = str(message)


class JsonRpcClient:
    """JSON-RPC over one pooled ``aiohttp`` session and an ordered list of URLs.

    aiohttp rather than httpx here: this is the worker's hot path, and aiohttp's C parser makes
    each call several times cheaper in CPU (measured with ``make bench``).

    Failover and network pinning across the URLs: ``chains.endpoints.Endpoints``.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 10.0,
        pin: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.endpoints = Endpoints(urls, pin)
        self._ids = itertools.count(1)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0  # HTTP round trips, for the benchmark and tests

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running loop, and kept for the worker's life: one pool of
        # keep-alive connections shared by every job.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call_url(self, url: str, method: str, params: list[Any]) -> Any:
        """One call to one URL, no failover (network pinning, diagnostics)."""
        i = next(self._ids)
        reply = await self._post(
            url, {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
        )
        return self._unpack(reply, [i], [(method, params)])[0]

    async def call(self, method: str, params: list[Any]) -> Any:
        (result,) = await self.batch([(method, params)])
        return result

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Results of ``calls`` in order, in one HTTP request (a JSON-RPC batch when > 1)."""
        ids = [next(self._ids) for _ in calls]
        body: Any = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p}
            for i, (m, p) in zip(ids, calls, strict=True)
        ]
        if len(body) == 1:
            body = body[0]

        async def attempt(url: str) -> list[Any]:
            return self._unpack(await self._post(url, body), ids, calls)

        return await self.endpoints.first(attempt)

    async def _post(self, url: str, body: Any) -> Any:
        self.requests_sent += 1
        try:
            async with self._http().post(url, data=orjson.dumps(body), headers=_JSON) as reply:
                status = reply.status
                raw = await reply.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RpcUnavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
        if status == 429 or status >= 500:
            raise RpcUnavailable(f"{url}: HTTP {status}")
        if status != 200:
            raise RpcUnavailable(f"{url}: unexpected HTTP {status}")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RpcUnavailable(f"{url}: reply is not JSON") from exc

    @staticmethod
    def _unpack(replies: Any, ids: list[int], calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        if isinstance(replies, dict):
            replies = [replies]
        if not isinstance(replies, list):
            raise RpcUnavailable("JSON-RPC reply is neither an object nor a list")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        results = []
        for i, (method, _) in zip(ids, calls, strict=True):
            reply = by_id.get(i)
            if reply is None:
                raise RpcUnavailable(f"{method}: no reply in the batch")
            if reply.get("error") is not None:
                raise RpcError(method, reply["error"])
            if "result" not in reply:
                raise RpcUnavailable(f"{method}: reply has no result")
            results.append(reply["result"])
        return results


class SharedReads(Generic[T]):
    """A short-lived cache with single flight: concurrent jobs asking for the same value (the
    chain head, one block) share one RPC call, and reuse its answer for ``ttl`` seconds."""

    def __init__(self, ttl: float, max_entries: int = 512) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._values: dict[Hashable, tuple[float, T]] = {}
        self._inflight: dict[Hashable, asyncio.Future[T]] = {}

    def forget(self, key: Hashable) -> None:
        self._values.pop(key, None)

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        hit = self._values.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            value = await fetch()
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters, if any, get it through await
            raise
        else:
            fut.set_result(value)
            if self.ttl > 0:
                if len(self._values) >= self.max_entries:
                    self._values.clear()
                self._values[key] = (time.monotonic(), value)
            return value
        finally:
            del self._inflight[key]
