"""The queue contract between gates and workers: what a job is, where it lives, how it starts.

A gate submits verification jobs; a pool of arq workers runs them. The two sides meet here and
nowhere else: the job (``VerifyJob``, run by the job function named ``VERIFY_PAYMENT``), its id
(``job_key``), its encoding (JSON: ``json_dumps``, ``json_loads``), the Redis keys arq keeps it
under, how a gate submits it (``JobQueue``) and how a worker claims it (``JobStart``), and the
Redis both connect to (``RedisAddress``).

Submitting and claiming are Lua versions of what arq's ``enqueue_job`` and job start do, writing
arq's own records, so this module never imports arq and a gate never loads arq's worker: arq is
imported only by ``redis_settings``, the worker's connection settings, when it is called. They
are written against the arq versions pinned in ``pyproject.toml``; ``tests/test_queue.py`` checks
that the installed arq is one of them, that the key prefixes below are arq's constants, and that a
job written by ``JobQueue.submit`` is read by arq's ``Job.info()`` and run by the worker.
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
from verifier.store import Keys, parse_outcome

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


def job_record(job: VerifyJob, enqueued_ms: int) -> bytes:
    """The job as arq stores it (``arq.jobs.serialize_job``): no try yet, one argument."""
    payload = job.model_dump(by_alias=True, exclude_none=True)
    return json_dumps({"t": None, "f": VERIFY_PAYMENT, "a": [payload], "k": {}, "et": enqueued_ms})


# Enqueue a job unless the proof already has an outcome, in one round trip. The arq side is what
# ``ArqRedis.enqueue_job`` does (job key with expiry, then the queue's sorted set), and like it,
# an existing job or result means the proof is already being (or was) verified. A new job joins
# its nonce's set of unfinished jobs (KEYS[5]), refused when that holds ARGV[5] already: one free
# challenge cannot queue unlimited jobs. The set loses a job when its outcome is final
# (``verifier.store``) and expires with the challenge (ARGV[6] ms).
_SUBMIT = """
local outcome = redis.call('GET', KEYS[1])
if outcome then
  return outcome
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  if redis.call('SADD', KEYS[5], ARGV[4]) == 1 then
    if redis.call('SCARD', KEYS[5]) > tonumber(ARGV[5]) then
      redis.call('SREM', KEYS[5], ARGV[4])
      return 0
    end
    redis.call('PEXPIRE', KEYS[5], ARGV[6])
  end
  redis.call('PSETEX', KEYS[2], ARGV[3], ARGV[1])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[4])
end
return false
"""

# Claim one job for a worker: arq's own check (not in progress elsewhere, still due) and its
# in-progress mark, in one atomic round trip instead of WATCH, EXISTS, ZSCORE and MULTI/EXEC.
# The claim also moves the job's score to when its in-progress key expires (ARGV[4]), so that
# the due part of the queue holds only jobs nobody runs; it returns the score the job had.
_START = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return false
end
if ARGV[5] ~= '' and tonumber(score) >= tonumber(ARGV[5]) then
  return -1
end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return score
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
                RESULT_PREFIX + job.job,
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


class JobStart:
    """The worker's side of the queue: claim one due job."""

    def __init__(self, redis: Redis, name: str) -> None:
        self.name = name
        self._start = redis.register_script(_START)

    async def claim(
        self, job_id: str, now_ms: int, until_ms: int, *, retries: bool = True
    ) -> bytes | Literal[False] | None:
        """Hold ``job_id`` until ``until_ms`` if it is due and nobody runs it: its score then.

        ``None`` when it runs elsewhere, is finished, or was deferred meanwhile. With
        ``retries=False`` only a fresh job (scored ``FRESH_AHEAD_MS`` ahead) is claimed; a due
        retry is left where it is and the answer is ``False``.
        """
        fresh_below = "" if retries else str(now_ms - FRESH_AHEAD_MS // 10)
        due: bytes | int | None = await self._start(
            keys=[IN_PROGRESS_PREFIX + job_id, self.name],
            args=[job_id, now_ms, until_ms - now_ms, until_ms, fresh_below],
        )
        if isinstance(due, int):
            return False
        return due

    @staticmethod
    def is_retry(due: bytes, now_ms: int) -> bool:
        """Whether a claimed job's score (``claim``'s answer) is a retry's, not a fresh job's."""
        return float(due) >= now_ms - FRESH_AHEAD_MS // 10


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
