"""A local toncenter-v3-shaped HTTP server over a ``TonLedger``, for tests and the demo.

Serves ``GET /api/v3/masterchainInfo``, ``GET /api/v3/transactions`` (by ``hash`` in hex, base64
or base64url, or by ``account`` with ``start_utime``/``limit``/``sort``), ``GET
/api/v3/transactionsByMessage`` (by ``msg_hash`` and ``direction``: ``in`` for the transaction
that received the message, ``out`` for the one that sent it) and ``POST
/api/v3/runGetMethod`` (``get_wallet_address`` of the ``masters`` given: the wallet registered
with ``TonLedger.set_jetton_wallet``, else the local derivation), in the real reply
shapes. Switches for what a real indexer does: a transaction not indexed yet
(``ledger.set_hidden``), not in a masterchain block yet (``pay_*(pending=True)`` then
``ledger.finalize``), and failures (``fail_next(status, count)`` answers 5xx or 429).
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

from pytoniq_core import Address, Slice, begin_cell

from devchain.http_server import LocalHTTPServer, Reply, Request, json_reply
from devchain.ton_chain import TonLedger, raw_address


def _hex_hash(ref: str) -> str | None:
    """Lowercase hex of a 32-byte hash given as toncenter takes it (hex, base64 or base64url);
    None if it is not one."""
    text = ref.strip()
    try:
        if len(text) == 64:
            raw = bytes.fromhex(text)
        else:
            raw = base64.urlsafe_b64decode(
                text.replace("+", "-").replace("/", "_").rstrip("=") + "="
            )
    except ValueError:  # binascii.Error included
        return None
    return raw.hex() if len(raw) == 32 else None


class ToncenterServer(LocalHTTPServer):
    """The server, on 127.0.0.1 and a free port, in a daemon thread."""

    protocol_version = "HTTP/1.1"

    def __init__(self, ledger: TonLedger | None = None, masters: set[str] | None = None) -> None:
        super().__init__()
        self.ledger = ledger or TonLedger()
        self.masters = set(masters or ())
        self.requests: list[str] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()

    def handle(self, request: Request) -> Reply:
        body: dict[str, Any] | None = None
        if request.method == "POST":
            try:
                parsed = json.loads(request.body or b"{}")
            except ValueError:
                return _error(400, "bad json")
            body = parsed if isinstance(parsed, dict) else {}
        self.requests.append(request.path)
        failure = self._take_failure()
        if failure is not None:
            return _error(failure, "injected failure")
        query = {k: v[0] for k, v in request.query.items()}
        try:
            if request.path == "/api/v3/masterchainInfo":
                return json_reply(200, self.masterchain_info())
            if request.path == "/api/v3/transactions":
                return json_reply(200, self.transactions(query))
            if request.path == "/api/v3/transactionsByMessage":
                return json_reply(200, self.transactions_by_message(query))
            if request.path == "/api/v3/runGetMethod" and body is not None:
                return json_reply(*self.run_get_method(body))
        except (ValueError, KeyError, IndexError) as exc:
            return _error(422, str(exc))
        return _error(404, "not found")

    def fail_next(self, status: int, count: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    # -- routes ------------------------------------------------------------------------------

    def masterchain_info(self) -> dict[str, Any]:
        def block(seqno: int) -> dict[str, Any]:
            return {
                "workchain": -1,
                "shard": "8000000000000000",
                "seqno": seqno,
                "root_hash": base64.b64encode(seqno.to_bytes(32, "big")).decode(),
                "file_hash": base64.b64encode(seqno.to_bytes(32, "little")).decode(),
                "global_id": self.ledger.global_id,
                "version": 0,
                "gen_utime": "0",
            }

        return {"first": block(1), "last": block(self.ledger.mc_seqno)}

    def transactions(self, q: dict[str, str]) -> dict[str, Any]:
        ledger = self.ledger
        with ledger._lock:
            if "hash" in q:
                key = _hex_hash(q["hash"])
                rec = ledger.txs.get(key or "")
                found = [rec] if rec is not None and not rec.hidden else []
            else:
                account = raw_address(q["account"])
                since = int(q.get("start_utime", 0))
                found = [
                    r
                    for h in ledger.by_account.get(account, [])
                    if not (r := ledger.txs[h]).hidden and r.now >= since
                ]
                found.sort(key=lambda r: r.lt, reverse=q.get("sort", "desc") == "desc")
                offset = int(q.get("offset", 0))
                found = found[offset : offset + int(q.get("limit", 10))]
            txs = [json.loads(json.dumps(r.v3)) for r in found]
        return {"transactions": txs, "address_book": {}}

    def transactions_by_message(self, q: dict[str, str]) -> dict[str, Any]:
        ledger = self.ledger
        key = _hex_hash(q["msg_hash"])
        outgoing = q.get("direction", "out") == "out"
        with ledger._lock:
            found = []
            for rec in ledger.txs.values():
                msgs = rec.v3.get("out_msgs") or [] if outgoing else [rec.v3.get("in_msg") or {}]
                if not rec.hidden and any(_hex_hash(m.get("hash", "")) == key for m in msgs):
                    found.append(json.loads(json.dumps(rec.v3)))
        return {"transactions": found[: int(q.get("limit", 10))], "address_book": {}}

    def run_get_method(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        master = raw_address(str(body.get("address")))
        if master not in self.masters or body.get("method") != "get_wallet_address":
            return 200, {"gas_used": 0, "exit_code": 11, "stack": []}
        arg = Slice.one_from_boc(base64.b64decode(body["stack"][0]["value"]))
        owner = raw_address(arg.load_address())
        wallet = Address(self.ledger.jetton_wallet(master, owner))
        cell = begin_cell().store_address(wallet).end_cell()
        value = base64.b64encode(cell.to_boc()).decode()
        return 200, {"gas_used": 4_000, "exit_code": 0, "stack": [{"type": "cell", "value": value}]}


def _error(status: int, message: str) -> Reply:
    return json_reply(status, {"error": message, "code": status})
