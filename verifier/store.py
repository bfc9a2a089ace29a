"""Redis keys, the atomic claim, receipts and the outcome notification.

Every key of the project's own is built here (``Keys``); arq's keys, those of the queue, are
built in ``verifier.queue``. Rule 2 of the design lives in one Lua
script: claiming the consumption key and the nonce, writing the receipt, appending it to the
receipts stream and publishing the outcome happen in one atomic step, so two workers that verify
the same payment at the same time produce exactly one receipt. The same step (and the one that
stores a final failure) removes the job from the queue, given its ``QueueEntry``: a job whose
outcome is stored has nothing left to write.

Retention: the claim of a transaction (``used``) and its receipt live ``store.used_tx_retention``
seconds (default 30 days, and never less than the longest window in which a challenge could still
accept that transaction); outcomes by job and the nonce claim live ``store.receipt_retention``
seconds (default 7 days), so the same proof sent again within that time gets the same answer.
The claim spans several keys, so the store needs one Redis primary (replicas and Sentinel are
fine), not Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from redis.asyncio import Redis

from verifier.models import Failure, Receipt
from verifier.settings import StoreSettings

# KEYS[7] and after, when given: the job's queue and its own keys (``QueueEntry``), so that the
# job ends in the same step that stores its outcome.
_CLAIM = """
local found = redis.call('MGET', KEYS[1], KEYS[2])
local owner, nonce_tx = found[1], found[2]
local outcome
if owner then
  if owner ~= ARGV[1] then
    return {'tx_used', owner}
  end
  outcome = redis.call('GET', KEYS[3])
  if not outcome then
    return {'tx_used', owner}
  end
  redis.call('SET', KEYS[4], outcome, 'EX', ARGV[6])
elseif nonce_tx then
  return {'nonce_used', nonce_tx}
else
  outcome = ARGV[3]
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[5])
  redis.call('SET', KEYS[3], outcome, 'EX', ARGV[4])
  redis.call('SET', KEYS[4], outcome, 'EX', ARGV[6])
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*', 'receipt', outcome)
end
redis.call('SREM', KEYS[6], ARGV[8])
if #KEYS > 7 then
  redis.call('ZREM', KEYS[7], ARGV[8])
  redis.call('DEL', unpack(KEYS, 8))
end
redis.call('PUBLISH', ARGV[7], ARGV[8] .. '\\n' .. outcome)
if owner then
  return {'same', outcome}
end
return {'new', outcome}
"""


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """Where a verification job sits in the queue (``verifier.queue.queue_entry``): removed in
    the same atomic step that stores the job's final outcome, so no write is left to end it."""

    queue: str
    job: str
    keys: tuple[str, ...]  # the job's own: its record, try count and in-progress mark


class Keys:
    """The project's Redis keys, all under ``store.prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.stream = f"{prefix}:receipts"
        self.channel = f"{prefix}:outcomes"
        self.deliveries = f"{prefix}:deliveries"

    def used(self, consumption_key: str) -> str:
        return f"{self.prefix}:used:{consumption_key}"

    def nonce(self, nonce: str) -> str:
        return f"{self.prefix}:nonce:{nonce}"

    def receipt(self, consumption_key: str) -> str:
        return f"{self.prefix}:receipt:{consumption_key}"

    def outcome(self, job: str) -> str:
        return f"{self.prefix}:outcome:{job}"

    def pending(self, job: str) -> str:
        return f"{self.prefix}:pending:{job}"

    def nonce_jobs(self, nonce: str) -> str:
        """The set of a challenge's unfinished verification jobs (the per-nonce cap)."""
        return f"{self.prefix}:jobs:{nonce}"

    # What a payment bought on a route (``verifier.delivery``). The built-in chains' consumption
    # keys have no "/" and a path starts with one, so the pair reads unambiguously.
    def delivered(self, consumption_key: str, path: str) -> str:
        return f"{self.prefix}:delivered:{consumption_key}:{path}"

    def delivery_lease(self, consumption_key: str, path: str) -> str:
        return f"{self.prefix}:delivery:lease:{consumption_key}:{path}"

    def delivery_replay(self, consumption_key: str, path: str) -> str:
        return f"{self.prefix}:delivery:replay:{consumption_key}:{path}"

    def delivery_access(self, consumption_key: str, path: str) -> str:
        return f"{self.prefix}:delivery:access:{consumption_key}:{path}"

    # What a payment bought on a route made paid by ``verifier.middleware.require_payment``:
    # when its first handler call began, and a call in progress.
    def called(self, consumption_key: str, path: str) -> str:
        return f"{self.prefix}:called:{consumption_key}:{path}"

    def calling(self, consumption_key: str, path: str) -> str:
        return f"{self.prefix}:calling:{consumption_key}:{path}"


class ClaimStatus(StrEnum):
    NEW = "new"  # this proof consumed the transaction now
    SAME = "same"  # it already had: the same receipt again
    TX_USED = "tx_used"  # another nonce consumed this transaction
    NONCE_USED = "nonce_used"  # this nonce was consumed by another transaction


@dataclass(frozen=True, slots=True)
class ClaimResult:
    status: ClaimStatus
    receipt: Receipt | None


def parse_outcome(raw: bytes | str) -> Receipt | Failure:
    data: dict[str, Any] = orjson.loads(raw)
    if data.get("success") is True:
        return Receipt.model_validate(data)
    return Failure.model_validate(data)


def dump(model: Receipt | Failure) -> bytes:
    return model.model_dump_json(by_alias=True, exclude_none=True).encode()


class Store:
    """The verifier's state in Redis. Cheap to build; share one per process."""

    def __init__(self, redis: Redis, settings: StoreSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self._claim = redis.register_script(_CLAIM)

    async def claim(
        self,
        *,
        nonce: str,
        consumption_key: str,
        job: str,
        receipt: Receipt,
        nonce_ttl: int,
        used_ttl: int = 0,
        entry: QueueEntry | None = None,
    ) -> ClaimResult:
        """Atomically consume ``nonce`` and the transaction, store and announce the receipt.

        The transaction stays consumed for ``store.used_tx_retention`` seconds, or ``used_ttl``
        when longer (the caller's bound on how long any challenge could still accept it). With
        ``entry``, the job leaves the queue in the same step, unless the claim is refused
        (``tx_used``, ``nonce_used``): the refusal is then stored by ``record_failure``.
        """
        k = self.keys
        ends = [] if entry is None else [entry.queue, *entry.keys]
        status, value = await self._claim(
            keys=[
                k.used(consumption_key),
                k.nonce(nonce),
                k.receipt(consumption_key),
                k.outcome(job),
                k.stream,
                k.nonce_jobs(nonce),
                *ends,
            ],
            args=[
                nonce,
                consumption_key,
                dump(receipt),
                max(self.settings.used_tx_retention, used_ttl),
                max(nonce_ttl, self.settings.receipt_retention),
                self.settings.receipt_retention,
                k.channel,
                job,
                self.settings.stream_maxlen,
            ],
        )
        st = ClaimStatus(status.decode() if isinstance(status, bytes) else status)
        if st is ClaimStatus.NEW:
            return ClaimResult(st, receipt)
        if st is ClaimStatus.SAME:
            stored = parse_outcome(value)
            assert isinstance(stored, Receipt)
            return ClaimResult(st, stored)
        return ClaimResult(st, None)

    async def consumed_by(self, consumption_key: str) -> str | None:
        """The nonce that consumed this transaction, if any (read-only; no claim)."""
        raw = await self.redis.get(self.keys.used(consumption_key))
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    async def record_failure(
        self, job: str, outcome: Failure, ttl: int, entry: QueueEntry | None = None
    ) -> None:
        """Store a final failure for this proof and announce it; with ``entry``, the job
        leaves the queue in the same transaction."""
        raw = dump(outcome)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.outcome(job), raw, ex=max(ttl, 60))
            pipe.delete(self.keys.pending(job))
            pipe.srem(self.keys.nonce_jobs(outcome.nonce), job)
            if entry is not None:
                pipe.zrem(entry.queue, entry.job)
                pipe.delete(*entry.keys)
            pipe.publish(self.keys.channel, job.encode() + b"\n" + raw)
            await pipe.execute()

    async def record_pending(self, job: str, outcome: Failure, ttl: int) -> None:
        """Remember why the proof is still pending, for a gate that stops waiting."""
        await self.redis.set(self.keys.pending(job), dump(outcome), ex=max(ttl, 60))

    async def outcome(self, job: str) -> Receipt | Failure | None:
        raw = await self.redis.get(self.keys.outcome(job))
        return None if raw is None else parse_outcome(raw)

    async def pending(self, job: str) -> Failure | None:
        raw = await self.redis.get(self.keys.pending(job))
        if raw is None:
            return None
        found = parse_outcome(raw)
        return found if isinstance(found, Failure) else None

    async def receipts(self, count: int = 100) -> list[Receipt]:
        """The latest receipts from the stream, newest first (operations and audits)."""
        rows = await self.redis.xrevrange(self.keys.stream, count=count)
        out = []
        for _id, fields in rows:
            parsed = parse_outcome(fields[b"receipt"])
            if isinstance(parsed, Receipt):
                out.append(parsed)
        return out
