"""The status read for support: which receipts the verifier holds, and what they say.

``x402-verifier receipts`` and the gate's ``GET gate.receipts_path`` (default
``/x402/receipts``, behind the ``api`` bearer token) look receipts up in Redis, by exactly one
of:

- nothing: the latest ``limit`` receipts, newest first (the receipts stream);
- ``tx``: a transaction, as the payer or the chain writes it (canonicalized per network as the
  gate does: ``0xABC…`` and ``0xabc…`` are one EVM transaction), on ``network`` or on every
  configured network; or a consumption key (``<CAIP-2>:<txid>``), its txid canonicalized too;
- ``nonce``: the challenge nonce the payment answered;
- ``trace``: the ``x-trace-id`` of the request whose verification made the receipt. Receipts
  are not indexed by trace id: the stream is read newest first, at most ``TRACE_SCAN``
  entries, so an older receipt is not found this way (look it up by transaction).

A receipt is kept ``store.used_tx_retention`` seconds under its consumption key, and in the
stream while it holds fewer than ``store.stream_maxlen`` newer ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from verifier.errors import InvalidProof
from verifier.models import Receipt
from verifier.settings import Settings
from verifier.store import Keys, parse_outcome
from verifier.txid import canonical_tx_ref

# Stream entries read, newest first, when looking for a trace id.
TRACE_SCAN = 10_000
MAX_LIMIT = 100
DEFAULT_LIMIT = 10
PARAMETERS = ("tx", "network", "nonce", "trace", "limit")
_SAFE = re.compile(r"^[\x21-\x7e]{1,512}$")  # printable ASCII, no spaces


class BadQuery(ValueError):
    """A lookup that cannot be made (two selectors, a limit out of range, a garbage value)."""


@dataclass(frozen=True, slots=True)
class Query:
    tx: str | None = None
    network: str | None = None
    nonce: str | None = None
    trace: str | None = None
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        chosen = [name for name in ("tx", "nonce", "trace") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise BadQuery(f"give one of tx, nonce, trace (not {' and '.join(chosen)})")
        if self.network is not None and self.tx is None:
            raise BadQuery("network goes with tx")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadQuery(f"limit is 1 to {MAX_LIMIT}")
        for name in ("tx", "network", "nonce", "trace"):
            value = getattr(self, name)
            if value is not None and not _SAFE.match(value):
                raise BadQuery(f"{name} is 1 to 512 printable characters without spaces")


def query_from_params(params: Iterable[tuple[str, str]]) -> Query:
    """The query that the endpoint's parameters (name, value pairs, repeats kept) make;
    ``BadQuery`` for an unknown or repeated parameter, or a limit that is not a number."""
    given: dict[str, str] = {}
    for name, value in params:
        if name not in PARAMETERS:
            raise BadQuery(f"unknown parameter {name!r} (give {', '.join(PARAMETERS)})")
        if name in given:
            raise BadQuery(f"{name} is given twice")
        given[name] = value
    limit = given.get("limit")
    if limit is not None and not re.fullmatch(r"[0-9]{1,3}", limit):
        raise BadQuery(f"limit is 1 to {MAX_LIMIT}")
    return Query(
        tx=given.get("tx"),
        network=given.get("network"),
        nonce=given.get("nonce"),
        trace=given.get("trace"),
        limit=DEFAULT_LIMIT if limit is None else int(limit),
    )


def nothing_found(query: Query) -> str:
    """What to say when ``query`` found no receipt (a trace id is looked for in part only)."""
    scope = f" among the latest {TRACE_SCAN} receipts" if query.trace is not None else ""
    return f"no receipt matches{scope}"


async def find_receipts(redis: Redis, settings: Settings, query: Query) -> list[Receipt]:
    """The receipts ``query`` selects, newest first for the stream's; ``BadQuery`` when it
    cannot be made."""
    keys = Keys(settings.store.prefix)
    if query.tx is not None:
        return await _by_keys(redis, keys, _consumption_keys(settings, query.tx, query.network))
    if query.nonce is not None:
        consumption_key = await redis.get(keys.nonce(query.nonce))
        if consumption_key is None:
            return []
        return await _by_keys(redis, keys, [_text(consumption_key)])
    if query.trace is not None:
        return await _by_trace(redis, keys, query.trace, query.limit)
    return await _latest(redis, keys, query.limit)


def _consumption_keys(settings: Settings, tx: str, network: str | None) -> list[str]:
    if network is not None and network not in settings.networks:
        raise BadQuery(f"network {network} is not configured here")
    networks = [network] if network is not None else list(settings.networks)
    # A consumption key (<CAIP-2>:<txid>) names its network; its txid is canonicalized too, so
    # that one written in upper case is found.
    named = [n for n in networks if tx.startswith(n + ":")]
    if named:
        candidates, found = [(n, tx[len(n) + 1 :]) for n in named], [tx]
    else:
        candidates, found = [(n, tx) for n in networks], []
    for candidate, ref in candidates:
        try:
            found.append(f"{candidate}:{canonical_tx_ref(candidate, ref, nonce='')}")
        except InvalidProof:
            continue  # not a transaction id of that chain
    return list(dict.fromkeys(found))


async def _by_keys(redis: Redis, keys: Keys, consumption_keys: list[str]) -> list[Receipt]:
    if not consumption_keys:
        return []
    raws = await redis.mget([keys.receipt(ck) for ck in consumption_keys])
    return [r for r in (_receipt(raw) for raw in raws if raw is not None) if r is not None]


async def _latest(redis: Redis, keys: Keys, limit: int) -> list[Receipt]:
    rows = await redis.xrevrange(keys.stream, count=limit)
    return [r for r in (_receipt(fields.get(b"receipt")) for _, fields in rows) if r is not None]


async def _by_trace(redis: Redis, keys: Keys, trace: str, limit: int) -> list[Receipt]:
    found: list[Receipt] = []
    end, read, page = "+", 0, 500
    while read < TRACE_SCAN and len(found) < limit:
        rows = await redis.xrevrange(keys.stream, max=end, count=page)
        if not rows:
            break
        for _, fields in rows:
            receipt = _receipt(fields.get(b"receipt"))
            if receipt is not None and _trace_of(receipt) == trace:
                found.append(receipt)
        read += len(rows)
        last = _text(rows[-1][0])
        end = "(" + last  # exclusive: the next page starts below the last entry read
        if len(rows) < page:
            break
    return found[:limit]


def _trace_of(receipt: Receipt) -> str | None:
    trace = receipt.extensions.get("trace")
    return trace.get("traceId") if isinstance(trace, dict) else None


def _receipt(raw: bytes | str | None) -> Receipt | None:
    if raw is None:
        return None
    try:
        parsed = parse_outcome(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, Receipt) else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
