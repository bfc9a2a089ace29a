"""The queue contract between gates and workers: what a job is, where it lives, how it starts.

A gate submits verification jobs; a pool of arq workers runs them. The two sides meet here and
nowhere else: the job (``VerifyJob``, run by the job function named ``VERIFY_PAYMENT``), its id
(``job_key``), its encoding (JSON: ``json_dumps``, ``json_loads``), the Redis keys arq keeps it
under, how a gate submits it (``JobQueue``) and how a worker claims it (``JobStart``), and the
Redis both connect to (``RedisAddress``).

Submitting and claiming are Lua versions of what arq's ``enqueue_job`` and job start do, writing
arq's own records, so this module never imports arq and a gate never loads arq's worker: arq is
imported only by ``redis_settings``, the worker's connection settings, when it is called. A job
costs three round trips in all: the submit, the claim (which also reads the job and counts a
retry's try), and the store's final write, which ends the job with its outcome
(``queue_entry``). They are written against the arq versions pinned in ``pyproject.toml``;
``tests/test_queue.py`` checks that the installed arq is one of them, that the key prefixes below
are arq's constants, and that a job written by ``JobQueue.submit`` is read by arq's
``Job.info()`` and run by the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlparse

import orjson
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from verifier.errors import TooManyProofs
from verifier.models import Failure, PaymentPayload, Receipt
from verifier.settings import Settings
from verifier.store import Keys, QueueEntry, parse_outcome

if TYPE_CHECKING:
    from arq.connections import RedisSettings

log = logging.getLogger(__name__)

# The name the worker registers ``verifier.jobs.verify_payment`` under.
VERIFY_PAYMENT = "verify_payment"

# arq's keys (``arq.constants``): a job's record, its result, the mark of the worker running it,
# its try count; and how long past its due time a job's record is kept.
JOB_PREFIX = "arq:job:"
RESULT_PREFIX = "arq:result:"
IN_PROGRESS_PREFIX = "arq:in-progress:"
RETRY_PREFIX = "arq:retry:"
EXPIRES_EXTRA_MS = 86_400_000
# How long a try count outlives its last write (arq's: 88,400 s).
TRY_COUNT_TTL_MS = 88_400_000

# How arq's ``create_pool`` connects (``RedisSettings`` defaults): seconds to connect, and how
# many times to try again, how many seconds apart.
CONNECT_TIMEOUT = 1
CONNECT_RETRIES = 5
CONNECT_RETRY_DELAY = 1

# Fresh jobs are scored this far in the past (about 317 years): every first attempt is due
# before every retry, so a backlog of proofs that keep retrying (never mined) does not delay a
# new one. Among fresh jobs the order stays first come, first served. The worker's claim and
# its retries write absolute scores (``verifier.worker``), so no score needs to be near now.
FRESH_AHEAD_MS = 10**13


def json_dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def json_loads(raw: bytes) -> Any:
    return orjson.loads(raw)


class VerifyJob(BaseModel):
    """What the gate enqueues. The worker trusts nothing in it that it cannot authenticate."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    proof: PaymentPayload
    resource: str
    job: str
    # The x-trace-id of the request that queued it (verifier.trace): in its logs and receipt.
    trace_id: str | None = Field(default=None, max_length=128)


def job_key(nonce: str, tx_ref: str, signature: str | None = None, terms: bytes = b"") -> str:
    """Deterministic id of the verification of one proof: the same proof attaches to one job.

    ``tx_ref`` is the canonical transaction id (``verifier.txid``), so spellings of one id share
    a job. The signature is part of it: a proof that adds a payer signature after an unsigned
    one was refused for ``binding_missing`` is a different proof with its own verification.
    ``terms`` (``Terms.canonical()``: the offer and the resource) too: the outcome stored under
    this key can only be found again by a proof for the same resource and terms.
    """
    head = f"{nonce}\n{tx_ref}\n{signature or ''}\n".encode()
    return hashlib.sha256(head + terms).hexdigest()[:40]


def queue_entry(queue_name: str, job_id: str) -> QueueEntry:
    """Where job ``job_id`` sits in ``queue_name``, for the store to end it with its outcome."""
    own = (JOB_PREFIX + job_id, RETRY_PREFIX + job_id, IN_PROGRESS_PREFIX + job_id)
    return QueueEntry(queue_name, job_id, own)


def job_record(job: VerifyJob, enqueued_ms: int) -> bytes:
    """The job as arq stores it (``arq.jobs.serialize_job``): no try yet, one argument."""
    payload = job.model_dump(by_alias=True, exclude_none=True)
    return json_dumps({"t": None, "f": VERIFY_PAYMENT, "a": [payload], "k": {}, "et": enqueued_ms})


# Enqueue a job unless the proof already has an outcome, in one round trip. The arq side is what
# ``ArqRedis.enqueue_job`` writes (the job's record with an expiry, then the queue's sorted set),
# and like it, an existing job means the proof is already being verified: ``SET NX`` is the
# check and the write in one command. A new job joins its nonce's set of unfinished jobs
# (KEYS[4]), refused when that holds ARGV[5] already: one free challenge cannot queue unlimited
# jobs. The set loses a job when its outcome is final (``verifier.store``) and expires with the
# challenge (ARGV[6] ms), set once, when its first job creates it: later jobs of the same
# challenge have no longer to live.
_SUBMIT = """
local outcome = redis.call('GET', KEYS[1])
if outcome then
  return outcome
end
if not redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3], 'NX') then
  return false
end
if redis.call('SADD', KEYS[4], ARGV[4]) == 1 then
  local count = redis.call('SCARD', KEYS[4])
  if count > tonumber(ARGV[5]) then
    redis.call('SREM', KEYS[4], ARGV[4])
    redis.call('DEL', KEYS[2])
    return 0
  end
  if count == 1 then
    redis.call('PEXPIRE', KEYS[4], ARGV[6])
  end
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
return false
"""

# Claim one job for a worker, and read it, in one atomic round trip: arq's own check (not in
# progress elsewhere, still due) and its in-progress mark (in place of arq's WATCH, EXISTS,
# ZSCORE and MULTI/EXEC), then what arq's job start reads in a MULTI of its own (the record, the
# try count). The claim also moves the job's score to when its in-progress key expires (ARGV[4]),
# so that the due part of the queue holds only jobs nobody runs. It returns the score the job
# had, the record (nil once expired) and the try: 1 for a fresh job (scored ``FRESH_AHEAD_MS``
# ahead, never run), which reads no try count; a retry counts its try in arq's key (KEYS[4]).
_START = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return false
end
local fresh = tonumber(score) < tonumber(ARGV[5])
if ARGV[6] == '0' and not fresh then
  return -1
end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local record = redis.call('GET', KEYS[3])
local try = 1
if not fresh then
  try = redis.call('INCR', KEYS[4]) + 1
  if try == 2 then
    redis.call('PEXPIRE', KEYS[4], ARGV[7])
  end
end
return {score, record, try}
"""


class JobQueue:
    """The gate's side of the queue: one verification job per proof, at most so many per nonce."""

    def __init__(self, redis: Redis, name: str, keys: Keys) -> None:
        self.name = name
        self._keys = keys
        self._submit = redis.register_script(_SUBMIT)

    async def submit(
        self, job: VerifyJob, *, max_jobs_per_nonce: int, nonce_ttl_ms: int
    ) -> Receipt | Failure | None:
        """Enqueue ``job`` unless its proof has an outcome already: return that outcome.

        Raises ``TooManyProofs`` when the proof's nonce already has ``max_jobs_per_nonce``
        unfinished jobs and this is not one of them.
        """
        now = int(time.time() * 1000)
        nonce = job.proof.nonce
        found = await self._submit(
            keys=[
                self._keys.outcome(job.job),
                JOB_PREFIX + job.job,
                self.name,
                self._keys.nonce_jobs(nonce),
            ],
            args=[
                job_record(job, now),
                now - FRESH_AHEAD_MS,
                # arq drops a job whose key expired: keep it while the challenge may retry.
                max(nonce_ttl_ms, 0) + EXPIRES_EXTRA_MS,
                job.job,
                max_jobs_per_nonce,
                max(nonce_ttl_ms, 1000),
            ],
        )
        if found == 0:
            raise TooManyProofs(
                f"this challenge already has {max_jobs_per_nonce} proofs being verified"
            )
        return None if found is None else parse_outcome(found)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job a worker holds: the score it had, the record (``None`` once it expired), its try."""

    due: bytes
    record: bytes | None
    job_try: int

    def is_retry(self, now_ms: int) -> bool:
        """Whether the job was due as a retry, not as a fresh job (scored far in the past)."""
        return float(self.due) >= fresh_below(now_ms)


def fresh_below(now_ms: int) -> int:
    """Scores below this are fresh jobs': submitted ``FRESH_AHEAD_MS`` ahead, never run."""
    return now_ms - FRESH_AHEAD_MS // 10


class JobStart:
    """The worker's side of the queue: claim one due job and read it."""

    def __init__(self, redis: Redis, name: str) -> None:
        self.name = name
        self._start = redis.register_script(_START)

    async def claim(
        self, job_id: str, now_ms: int, until_ms: int, *, retries: bool = True
    ) -> Claimed | Literal[False] | None:
        """Hold ``job_id`` until ``until_ms`` if it is due and nobody runs it, and read it.

        ``None`` when it runs elsewhere, is finished, or was deferred meanwhile. With
        ``retries=False`` only a fresh job is claimed; a due retry is left where it is and the
        answer is ``False``.
        """
        answer: list[Any] | int | None = await self._start(
            keys=[
                IN_PROGRESS_PREFIX + job_id,
                self.name,
                JOB_PREFIX + job_id,
                RETRY_PREFIX + job_id,
            ],
            args=[
                job_id,
                now_ms,
                until_ms - now_ms,
                until_ms,
                fresh_below(now_ms),
                int(retries),
                TRY_COUNT_TTL_MS,
            ],
        )
        if isinstance(answer, int):
            return False
        if answer is None:
            return None
        due, record, job_try = answer
        return Claimed(due, record, int(job_try))


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where the queue's Redis is: ``redis_url`` read once, for the gate and the worker alike."""

    host: str = "localhost"
    port: int = 6379
    unix_socket_path: str | None = None
    database: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """``url`` read as arq reads a DSN (``RedisSettings.from_dsn``)."""
        conf = urlparse(url)
        if conf.scheme not in {"redis", "rediss", "unix"}:
            raise RuntimeError("invalid DSN scheme")
        query_db = parse_qs(conf.query).get("db")
        if query_db:
            database = int(query_db[0])
        elif conf.scheme != "unix" and conf.path:
            database = int(conf.path.lstrip("/"))
        else:
            database = 0
        return cls(
            host=conf.hostname or "localhost",
            port=conf.port or 6379,
            unix_socket_path=conf.path if conf.scheme == "unix" else None,
            database=database,
            username=conf.username,
            password=conf.password,
            ssl=conf.scheme == "rediss",
        )


def redis_settings(settings: Settings) -> RedisSettings:
    """The worker's connection to the queue's Redis, for arq."""
    from arq.connections import RedisSettings

    return RedisSettings(**asdict(RedisAddress.parse(settings.redis_url)))


async def open_redis(settings: Settings) -> Redis:
    """The gate's connection to the queue's Redis, opened as arq's ``create_pool`` opens the
    worker's: the same address, timeout and retries, and a ``PING`` to prove it."""
    at = RedisAddress.parse(settings.redis_url)
    retries = 0
    while True:
        redis = Redis(
            host=at.host,
            port=at.port,
            unix_socket_path=at.unix_socket_path,
            db=at.database,
            username=at.username,
            password=at.password,
            ssl=at.ssl,
            socket_connect_timeout=CONNECT_TIMEOUT,
        )
        try:
            await redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            await redis.aclose()
            if retries >= CONNECT_RETRIES:
                raise
            log.warning(
                "Redis connection error (%s), %d retries left", exc, CONNECT_RETRIES - retries
            )
            retries += 1
            await asyncio.sleep(CONNECT_RETRY_DELAY)
        else:
            return redis
