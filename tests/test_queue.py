"""The queue contract (``verifier.queue``) against the arq it was written for.

``verifier.queue`` writes arq's records without importing arq, so nothing but these tests would
notice arq changing them: the installed arq must be one of the versions ``pyproject.toml`` pins,
our key prefixes arq's constants, and a job we submit must read back through arq's own ``Job``
and run on the worker. And the point of it all: a gate never loads arq's worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import subprocess
import sys
import time
import tomllib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, cast

import pytest
from arq import constants
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus
from arq.utils import timestamp_ms
from arq.worker import func
from packaging.requirements import Requirement
from redis.asyncio import Redis

from tests import jobs_fixtures
from tests.jobs_fixtures import signer_of
from tests.support import SettingsFactory
from verifier import queue
from verifier.models import Failure, ReasonCode, Receipt
from verifier.queue import (
    VERIFY_PAYMENT,
    JobQueue,
    JobStart,
    RedisAddress,
    VerifyJob,
    json_loads,
    redis_settings,
)
from verifier.settings import Settings
from verifier.store import Store
from verifier.worker import make_worker

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"
NETWORK = "eip155:8453"  # served by no adapter here: the worker refuses it once authenticated


def arq_pin() -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [pin] = [r for r in map(Requirement, dependencies) if r.name == "arq"]
    return pin


def a_job(settings: Settings) -> VerifyJob:
    """A proof of a challenge this gate issued, for a network no worker serves."""
    return jobs_fixtures.a_job(signer_of(settings), NETWORK)


async def submit(redis: Redis, settings: Settings, job: VerifyJob) -> Receipt | Failure | None:
    """``job`` submitted as a gate submits it."""
    jobs = JobQueue(redis, settings.queue_name, Store(redis, settings.store).keys)
    return await jobs.submit(job, max_jobs_per_nonce=4, nonce_ttl_ms=60_000)


def arq_view(redis: Redis, settings: Settings, job: VerifyJob) -> Job:
    """The job as arq's own API sees it (its ``Job`` reads with any Redis client)."""
    arq_redis = cast(ArqRedis, redis)
    return Job(job.job, arq_redis, _queue_name=settings.queue_name, _deserializer=json_loads)


@pytest.fixture
async def submitted(make_settings: SettingsFactory, redis: Redis) -> tuple[Settings, VerifyJob]:
    settings = make_settings()
    job = a_job(settings)
    await submit(redis, settings, job)
    return settings, job


def test_the_installed_arq_is_a_pinned_version() -> None:
    pin = arq_pin()
    assert any(s.operator in {"<", "<=", "==", "~="} for s in pin.specifier), (
        f"{pin}: arq must be pinned to the versions verifier.queue was written for"
    )
    assert importlib.metadata.version("arq") in pin.specifier


def test_our_keys_and_connection_defaults_are_arqs() -> None:
    keys = (
        queue.JOB_PREFIX,
        queue.RESULT_PREFIX,
        queue.IN_PROGRESS_PREFIX,
        queue.RETRY_PREFIX,
        queue.EXPIRES_EXTRA_MS,
    )
    arq_keys = (
        constants.job_key_prefix,
        constants.result_key_prefix,
        constants.in_progress_key_prefix,
        constants.retry_key_prefix,
        constants.expires_extra_ms,
    )
    assert keys == arq_keys
    arq = RedisSettings()
    connect = (queue.CONNECT_TIMEOUT, queue.CONNECT_RETRIES, queue.CONNECT_RETRY_DELAY)
    assert connect == (arq.conn_timeout, arq.conn_retries, arq.conn_retry_delay)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://cache",
        "redis://:secret@cache:6380/3",
        "rediss://user:pw@cache/1",
        "redis://cache:7000?db=4",
        "unix:///run/redis.sock",
        "unix:///run/redis.sock?db=2",
    ],
)
def test_the_gate_reads_redis_url_as_arq_does(make_settings: SettingsFactory, url: str) -> None:
    assert redis_settings(make_settings(redis_url=url)) == RedisSettings.from_dsn(url)


def test_a_url_arq_refuses_is_refused() -> None:
    for read in (RedisSettings.from_dsn, RedisAddress.parse):
        with pytest.raises(RuntimeError, match="invalid DSN scheme"):
            read("http://cache:6379")


async def test_a_submitted_job_is_what_arq_reads(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings()
    job = a_job(settings)
    before = int(time.time() * 1000)
    assert await submit(redis, settings, job) is None
    after = int(time.time() * 1000)
    arq_job = arq_view(redis, settings, job)
    assert await arq_job.status() is JobStatus.queued
    info = await arq_job.info()
    assert info is not None
    assert (info.function, info.kwargs) == (VERIFY_PAYMENT, {})
    assert info.job_try is None  # not run yet
    [payload] = info.args
    assert VerifyJob.model_validate(payload) == job
    assert before <= info.enqueue_time.timestamp() * 1000 <= after
    assert info.score is not None
    assert before - queue.FRESH_AHEAD_MS <= info.score <= after - queue.FRESH_AHEAD_MS
    ttl = await redis.pttl(constants.job_key_prefix + job.job)
    # the challenge's remaining retry window (60 s here) plus arq's own margin
    assert 60_000 + constants.expires_extra_ms - 10_000 < ttl <= 60_000 + constants.expires_extra_ms


async def test_a_job_lives_as_long_as_its_challenge_may_retry(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    # arq drops a job whose key expired ("job expired") with no outcome of ours: a challenge that
    # lives 7 days must keep its job that long, not arq's default day.
    settings = make_settings()
    job = a_job(settings)
    jobs = JobQueue(redis, settings.queue_name, Store(redis, settings.store).keys)
    week_ms = 7 * 86_400_000
    await jobs.submit(job, max_jobs_per_nonce=4, nonce_ttl_ms=week_ms)
    ttl = await redis.pttl(constants.job_key_prefix + job.job)
    assert week_ms < ttl <= week_ms + constants.expires_extra_ms


async def test_a_claimed_job_is_in_progress_for_arq(
    submitted: tuple[Settings, VerifyJob], redis: Redis
) -> None:
    settings, job = submitted
    [(_, score)] = await redis.zrange(settings.queue_name, 0, -1, withscores=True)
    start = JobStart(redis, settings.queue_name)
    now = timestamp_ms()
    claimed = await start.claim(job.job, now, now + 10_000)
    assert claimed and float(claimed.due) == score
    arq_job = arq_view(redis, settings, job)
    assert await arq_job.status() is JobStatus.in_progress
    assert await start.claim(job.job, now, now + 10_000) is None  # held: nobody else starts it
    assert await redis.zscore(settings.queue_name, job.job) == now + 10_000


async def test_a_claim_for_fresh_jobs_only_leaves_a_retry_due(
    submitted: tuple[Settings, VerifyJob], redis: Redis
) -> None:
    settings, job = submitted
    start = JobStart(redis, settings.queue_name)
    now = timestamp_ms()
    claimed = await start.claim(job.job, now, now + 10_000, retries=False)  # fresh: claimed
    assert claimed and not claimed.is_retry(now)
    # Deferred by a transient outcome: now a retry, due again at now + 1 s.
    await redis.delete(constants.in_progress_key_prefix + job.job)
    await redis.zadd(settings.queue_name, {job.job: now + 1000}, xx=True)
    later = now + 2000
    assert await start.claim(job.job, later, later + 10_000, retries=False) is False
    assert await redis.zscore(settings.queue_name, job.job) == now + 1000  # left as it was
    assert not await redis.exists(constants.in_progress_key_prefix + job.job)
    claimed = await start.claim(job.job, later, later + 10_000)
    assert claimed and claimed.is_retry(later)


async def test_a_claim_reads_the_job_and_counts_a_retrys_try(
    submitted: tuple[Settings, VerifyJob], redis: Redis
) -> None:
    """The claim is arq's job start too: the record, and the try (1 for a fresh job, which
    reads no count; a retry counts it in arq's key)."""
    settings, job = submitted
    start = JobStart(redis, settings.queue_name)
    now = timestamp_ms()
    claimed = await start.claim(job.job, now, now + 10_000)
    assert claimed and claimed.job_try == 1
    assert claimed.record == await redis.get(constants.job_key_prefix + job.job)
    assert not await redis.exists(constants.retry_key_prefix + job.job)
    for expected in (2, 3):
        await redis.delete(constants.in_progress_key_prefix + job.job)
        await redis.zadd(settings.queue_name, {job.job: now}, xx=True)  # deferred, due again
        now += 1
        claimed = await start.claim(job.job, now, now + 10_000)
        assert claimed and claimed.is_retry(now) and claimed.job_try == expected
        # arq's key counts the starts after the first
        assert await redis.get(constants.retry_key_prefix + job.job) == str(expected - 1).encode()
    assert 0 < await redis.pttl(constants.retry_key_prefix + job.job) <= queue.TRY_COUNT_TTL_MS
    # An expired record is claimed all the same, without it: the worker ends the job.
    await redis.delete(
        constants.in_progress_key_prefix + job.job, constants.job_key_prefix + job.job
    )
    await redis.zadd(settings.queue_name, {job.job: now}, xx=True)
    claimed = await start.claim(job.job, now + 1, now + 10_000)
    assert claimed and claimed.record is None and claimed.job_try == 4


async def test_a_proof_submitted_again_is_queued_once(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings()
    job = a_job(settings)
    for _ in range(3):
        assert await submit(redis, settings, job) is None
    assert await redis.zcard(settings.queue_name) == 1
    cap = Store(redis, settings.store).keys.nonce_jobs(job.proof.nonce)
    members = await cast("Awaitable[set[bytes]]", redis.smembers(cap))
    assert members == {job.job.encode()}
    assert await redis.pttl(cap) > 0


async def test_the_worker_runs_a_submitted_job(
    submitted: tuple[Settings, VerifyJob], redis: Redis
) -> None:
    settings, job = submitted
    worker = make_worker(settings, burst=True, poll_delay=0, handle_signals=False)
    try:
        await worker.main()
    finally:
        await worker.close()
    # The job was read, its challenge authenticated, and the network found unserved.
    stored = await Store(redis, settings.store).outcome(job.job)
    assert isinstance(stored, Failure), stored
    assert stored.error_reason is ReasonCode.INVALID_NETWORK, stored
    # Finished the way arq's finish ends a job, without arq's result: the outcome is ours.
    arq_job = arq_view(redis, settings, job)
    assert await arq_job.result_info() is None
    assert await arq_job.status() is JobStatus.not_found
    assert await redis.zcard(settings.queue_name) == 0


@pytest.mark.parametrize("module", ["verifier", "verifier.gate", "verifier.asgi"])
def test_a_gate_never_loads_arqs_worker(module: str) -> None:
    check = f"import sys, {module}; assert 'arq.worker' not in sys.modules, '{module}'"
    subprocess.run([sys.executable, "-c", check], check=True)


async def test_a_job_past_job_timeout_runs_again_rather_than_end(
    submitted: tuple[Settings, VerifyJob], redis: Redis
) -> None:
    """A job that outlives ``job_timeout`` is cancelled and due again, as a retry: a timeout
    is transient, and ending the job there would leave its proof with no outcome at all."""
    settings, job = submitted
    starts: list[int] = []

    async def hangs(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        starts.append(ctx["job_try"])
        await asyncio.sleep(60)

    worker = make_worker(
        settings,
        functions=[func(hangs, name=VERIFY_PAYMENT)],
        job_timeout=0.3,
        poll_delay=0.05,
        handle_signals=False,
    )
    run = asyncio.create_task(worker.async_run())
    try:
        async with asyncio.timeout(10):
            while len(starts) < 2:  # noqa: ASYNC110 (a probe)
                await asyncio.sleep(0.02)
    finally:
        await worker.close()
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    assert starts[:2] == [1, 2]  # the second start is its retry
    assert await redis.exists(constants.job_key_prefix + job.job)  # the job is still there
    assert await redis.zscore(settings.queue_name, job.job) is not None
