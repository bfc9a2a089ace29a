"""A client of the x402 facilitator HTTP API: ``GET /supported``, ``POST /verify``, ``/settle``.

Workers use it to settle exact payments through a facilitator (``verifier.settlement``). Bodies
are the reference shapes: ``{x402Version, paymentPayload, paymentRequirements}`` in, and
``{isValid, invalidReason, payer}`` / ``{success, errorReason, transaction, network, payer}``
out. What goes wrong on the way is said precisely and classed once, here:

* transient (``RpcUnavailable``, retried by the job with the same payload): a connection that
  fails or times out, HTTP ``408``, ``429`` and ``5xx``, and a ``2xx`` whose body is not the
  expected JSON (a proxy's error page);
* final (``FinalError``, ``settlement_refused``): any other ``4xx`` (a wrong token, a payload the
  facilitator rejects as malformed), with the facilitator's message, bounded.

Messages name the facilitator by host only: its URL may carry a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from verifier.errors import FinalError, RpcUnavailable
from verifier.models import ReasonCode

MAX_RESPONSE_BYTES = 64 * 1024
_TRANSIENT_STATUS = {408, 429}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    is_valid: bool
    invalid_reason: str | None
    payer: str | None


@dataclass(frozen=True, slots=True)
class SettleResult:
    success: bool
    error_reason: str | None
    transaction: str | None
    network: str | None
    payer: str | None


class FacilitatorClient:
    """One facilitator, one connection pool; ``headers`` go with every request (auth)."""

    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 15.0
    ) -> None:
        self.url = url.rstrip("/")
        self.host = urlsplit(url).hostname or "?"
        self._http = httpx.AsyncClient(
            headers={"content-type": "application/json", **(headers or {})},
            timeout=timeout,
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def supported(self) -> set[tuple[str, str]]:
        """The (scheme, network) pairs the facilitator settles for x402 version 2."""
        body = await self._request("GET", "/supported")
        kinds = body.get("kinds")
        if not isinstance(kinds, list):
            raise RpcUnavailable(f"facilitator {self.host}: /supported has no list of kinds")
        return {
            (str(k["scheme"]), str(k["network"]))
            for k in kinds
            if isinstance(k, dict)
            and k.get("x402Version", 2) == 2
            and isinstance(k.get("scheme"), str)
            and isinstance(k.get("network"), str)
        }

    async def verify(self, payload: dict[str, Any], requirements: dict[str, Any]) -> VerifyResult:
        body = await self._request("POST", "/verify", _body(payload, requirements))
        if not isinstance(body.get("isValid"), bool):
            raise RpcUnavailable(f"facilitator {self.host}: /verify answered no isValid")
        return VerifyResult(
            is_valid=body["isValid"],
            invalid_reason=_text(body.get("invalidReason") or body.get("invalidMessage")),
            payer=_text(body.get("payer")),
        )

    async def settle(self, payload: dict[str, Any], requirements: dict[str, Any]) -> SettleResult:
        body = await self._request("POST", "/settle", _body(payload, requirements))
        if not isinstance(body.get("success"), bool):
            raise RpcUnavailable(f"facilitator {self.host}: /settle answered no success")
        return SettleResult(
            success=body["success"],
            error_reason=_text(body.get("errorReason") or body.get("errorMessage")),
            transaction=_text(body.get("transaction")),
            network=_text(body.get("network")),
            payer=_text(body.get("payer")),
        )

    async def _request(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        where = f"facilitator {self.host}{path}"
        try:
            reply = await self._http.request(method, self.url + path, content=body)
        except httpx.TimeoutException as exc:
            raise RpcUnavailable(f"{where} timed out") from exc
        except httpx.HTTPError as exc:
            raise RpcUnavailable(f"{where} is unreachable: {type(exc).__name__}") from exc
        raw = reply.content[: MAX_RESPONSE_BYTES + 1]
        if reply.status_code in _TRANSIENT_STATUS or reply.status_code >= 500:
            raise RpcUnavailable(f"{where} answered HTTP {reply.status_code}")
        if reply.status_code >= 400:
            # The reference facilitator answers a refused verification with 400 and a body;
            # a body of the expected shape is that answer, anything else a refusal of ours.
            parsed = _json(raw)
            if parsed is not None and ("isValid" in parsed or "success" in parsed):
                return parsed
            message = raw[:300].decode("utf-8", "replace")
            raise FinalError(
                f"{where} refused the request (HTTP {reply.status_code}): {message}",
                ReasonCode.SETTLEMENT_REFUSED,
            )
        parsed = _json(raw)
        if parsed is None or len(raw) > MAX_RESPONSE_BYTES:
            raise RpcUnavailable(f"{where} answered {reply.status_code} without a JSON object")
        return parsed


def _body(payload: dict[str, Any], requirements: dict[str, Any]) -> bytes:
    version = payload.get("x402Version", 2)
    return orjson.dumps(
        {"x402Version": version, "paymentPayload": payload, "paymentRequirements": requirements}
    )


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:300]
