"""A local Horizon-shaped HTTP server over ``StellarLedger``, for tests and the demo.

It serves the three endpoints a verifier reads, in Horizon's JSON shape:

* ``GET /`` — the root, with ``network_passphrase`` and ``history_latest_ledger``;
* ``GET /transactions/{hash}`` — by outer or inner hash, 404 (Horizon's problem JSON) if unknown;
* ``GET /transactions/{hash}/operations`` — every operation (``join=transactions`` embeds the
  transaction into each record).

Switches for what a real Horizon cannot be made to do on demand: ``hide(hash)`` answers 404 for a
transaction until ``reveal(hash)`` ("included"), and ``fail_next(n, status)`` answers the next
``n`` requests with ``status`` (503, 429, …). ``requests`` counts what was served.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from devchain.http_server import LocalHTTPServer, Reply, Request
from devchain.stellar_ledger import StellarLedger, view

_TX = re.compile(r"^/transactions/([0-9a-fA-F]{64})(/operations)?/?$")
NOT_FOUND = {
    "type": "https://stellar.org/horizon-errors/not_found",
    "title": "Resource Missing",
    "status": 404,
    "detail": "The resource at the url requested was not found.",
}


class HorizonServer(LocalHTTPServer):
    """Runs in a daemon thread; usable from sync code (the demo) and async tests alike."""

    methods = ("GET",)

    def __init__(self, ledger: StellarLedger) -> None:
        super().__init__()
        self.ledger = ledger
        self.hidden: set[str] = set()
        self.requests = 0
        self.paths: list[str] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()

    def handle(self, request: Request) -> Reply:
        status, body = self.answer(request.target)
        kind = "application/hal+json" if status == 200 else "application/problem+json"
        latest = (("latest-ledger", str(self.ledger.latest)),)
        return Reply(status, orjson.dumps(body), kind, latest)

    def hide(self, tx_hash: str) -> None:
        self.hidden.add(tx_hash.lower())

    def reveal(self, tx_hash: str) -> None:
        self.hidden.discard(tx_hash.lower())

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._failures = [status] * n

    def answer(self, raw_path: str) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        with self._lock:
            self.requests += 1
            self.paths.append(raw_path)
            if self._failures:
                status = self._failures.pop()
                return status, {"status": status, "title": "injected failure"}
        if parts.path in ("", "/"):
            return 200, self._root()
        m = _TX.match(parts.path)
        record = None if m is None else self.ledger.find(m.group(1))
        if m is None or record is None or self._hidden(record.hashes):
            return 404, NOT_FOUND
        requested = m.group(1).lower()
        tx = view(record, requested)
        if not m.group(2):
            return 200, tx
        join = "transactions" in query.get("join", [])
        records = [{**op, "transaction": tx} if join else op for op in record.ops]
        link = f"{self.url}{parts.path}"
        return 200, {
            "_links": {
                "self": {"href": f"{link}?{parts.query}"},
                "next": {"href": f"{link}?cursor={records[-1]['paging_token']}"},
                "prev": {"href": f"{link}?cursor={records[0]['paging_token']}&order=desc"},
            },
            "_embedded": {"records": records},
        }

    def _hidden(self, hashes: set[str]) -> bool:
        return any(h in self.hidden for h in hashes)

    def _root(self) -> dict[str, Any]:
        latest = self.ledger.latest
        return {
            "_links": {"transaction": {"href": f"{self.url}/transactions/{{hash}}"}},
            "horizon_version": "local-model",
            "core_version": "local-model",
            "ingest_latest_ledger": latest,
            "history_latest_ledger": latest,
            "history_latest_ledger_closed_at": "",
            "history_elder_ledger": 1,
            "core_latest_ledger": latest,
            "network_passphrase": self.ledger.passphrase,
            "current_protocol_version": 22,
            "supported_protocol_version": 22,
            "core_supported_protocol_version": 22,
        }
