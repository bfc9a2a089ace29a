"""A local Solana JSON-RPC server over a ``SolanaLedger`` (LiteSVM), for tests and the demo.

It answers ``getTransaction`` (the recorded jsonParsed result, honouring the requested
commitment and ``maxSupportedTransactionVersion``), ``getSignatureStatuses``, ``getSlot``,
``getGenesisHash``, ``getHealth`` and ``getVersion``, single or batched, from a thread, so that
worker processes and any event loop can use it. It counts requests and calls per method.
"""

from __future__ import annotations

import json
from typing import Any

from devchain.http_server import LocalHTTPServer, Reply, Request, json_reply
from devchain.solana_ledger import GENESIS_HASH, LEVELS, SolanaLedger


class RpcFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class SolanaRpcServer(LocalHTTPServer):
    methods = ("POST",)

    def __init__(self, ledger: SolanaLedger, genesis_hash: str = GENESIS_HASH) -> None:
        super().__init__()
        self.ledger = ledger
        self.genesis_hash = genesis_hash
        self.requests = 0
        self.calls: dict[str, int] = {}

    def handle(self, request: Request) -> Reply:
        return json_reply(200, self.rpc(json.loads(request.body)))

    def reset_stats(self) -> None:
        with self.ledger.lock:
            self.requests = 0
            self.calls.clear()

    def rpc(self, body: Any) -> Any:
        """The reply to a JSON-RPC body: one call or a batch."""
        with self.ledger.lock:
            self.requests += 1
        if isinstance(body, list):
            return [self._one(call) for call in body]
        return self._one(body)

    def _one(self, call: dict[str, Any]) -> dict[str, Any]:
        method, params = call.get("method", ""), call.get("params") or []
        with self.ledger.lock:
            self.calls[method] = self.calls.get(method, 0) + 1
        try:
            result = self._answer(method, params)
        except RpcFault as exc:
            error = {"code": exc.code, "message": str(exc)}
            return {"jsonrpc": "2.0", "id": call.get("id"), "error": error}
        return {"jsonrpc": "2.0", "id": call.get("id"), "result": result}

    def _answer(self, method: str, params: list[Any]) -> Any:
        ledger = self.ledger
        config = params[-1] if params and isinstance(params[-1], dict) else {}
        commitment = config.get("commitment", "finalized")
        with ledger.lock:
            if method == "getGenesisHash":
                return self.genesis_hash
            if method == "getHealth":
                return "ok"
            if method == "getVersion":
                return {"feature-set": 0, "solana-core": "litesvm"}
            if method == "getSlot":
                return ledger.slot
            if method == "getTransaction":
                if commitment not in ("confirmed", "finalized"):
                    raise RpcFault(-32602, f"Method does not support commitment {commitment}")
                record = ledger.records.get(params[0])
                if record is None or LEVELS.index(record.commitment) < LEVELS.index(commitment):
                    return None
                version = record.result["version"]
                if version != "legacy" and config.get("maxSupportedTransactionVersion") is None:
                    raise RpcFault(
                        -32015,
                        "Transaction version (0) is not supported by the requesting client. "
                        "Please try the request again with the following configuration "
                        "parameter: `maxSupportedTransactionVersion=0`",
                    )
                if config.get("encoding") != "jsonParsed":
                    raise RpcFault(-32602, "this local server only speaks jsonParsed")
                return record.result
            if method == "getSignatureStatuses":
                values: list[dict[str, Any] | None] = []
                for signature in params[0]:
                    record = ledger.records.get(signature)
                    if record is None or record.commitment == "hidden":
                        values.append(None)
                        continue
                    final = record.commitment == "finalized"
                    values.append(
                        {
                            "confirmationStatus": record.commitment,
                            "confirmations": None if final else max(0, ledger.slot - record.slot),
                            "err": record.err,
                            "slot": record.slot,
                            "status": {"Ok": None} if record.err is None else {"Err": record.err},
                        }
                    )
                return {"context": {"slot": ledger.slot}, "value": values}
        raise RpcFault(-32601, "Method not found")
