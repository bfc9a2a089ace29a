"""REST with JSON replies (Horizon, toncenter): GET and POST against several base URLs.

Every reply must be a JSON object; anything else, and every failure of ``chains.http``, is
``RpcUnavailable``. Paths are appended to a base URL (``https://toncenter.com`` +
``/api/v3/transactions``), so a base may carry a path prefix of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from chains.http import HttpApi, HttpRequest
from verifier.adapter import RpcUnavailable

Params = Mapping[str, str | int]


class RestClient(HttpApi):
    """JSON over HTTP against an ordered list of base URLs, with failover."""

    async def request_url(
        self, url: str, path: str, *, params: Params | None = None, body: Any = None
    ) -> Any:
        """One request to one base URL, no failover (network pinning)."""
        where = url.rstrip("/") + path
        if body is None:
            request = HttpRequest("GET", where, params, None, self.headers)
        else:
            headers = {**self.headers, "content-type": "application/json"}
            request = HttpRequest("POST", where, params, orjson.dumps(body), headers)
        data = await self.exchange(request)
        if not isinstance(data, dict):
            raise RpcUnavailable(f"{where}: reply is not a JSON object")
        return data

    async def request(self, path: str, *, params: Params | None = None, body: Any = None) -> Any:
        """The reply of the first base URL that answers, trying them in order of preference."""
        return await self.endpoints.first(
            lambda url: self.request_url(url, path, params=params, body=body)
        )
