"""JSON-RPC 2.0 over HTTP (EVM, Solana): batches, several URLs with failover.

Everything that goes wrong here is ``RpcUnavailable`` (transient), at this edge: the transport's
failures and HTTP statuses (``chains.http``), malformed replies and JSON-RPC errors
(``RpcError``, which keeps the node's message).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import orjson

from chains.base import RpcAdapter
from chains.endpoints import Endpoints
from chains.http import HttpApi, HttpRequest, Transport
from verifier.adapter import RpcUnavailable

_JSON = {"content-type": "application/json"}


class RpcError(RpcUnavailable):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, method: str, error: Any) -> None:
        message = error.get("message") if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        super().__init__(f"{method}: JSON-RPC error {code}: {message}")
        self.code = code
        self.rpc_message = str(message)


class JsonRpcClient(HttpApi):
    """JSON-RPC calls against an ordered list of URLs (``chains.endpoints.Endpoints``)."""

    def __init__(self, endpoints: Endpoints, transport: Transport) -> None:
        super().__init__(endpoints, transport, headers=_JSON)
        self._ids = itertools.count(1)

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
        return await self.exchange(HttpRequest("POST", url, None, orjson.dumps(body), self.headers))

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


class JsonRpcAdapter(RpcAdapter[JsonRpcClient]):
    """``chains.base.RpcAdapter`` over JSON-RPC (EVM, Solana): ``self.api`` is a
    ``JsonRpcClient``."""

    def open_api(self, endpoints: Endpoints, transport: Transport) -> JsonRpcClient:
        return JsonRpcClient(endpoints, transport)
