"""arq worker settings: JSON jobs, adapters started once per process, tuned for I/O-bound work.

``x402-verifier worker --config FILE`` runs ``run_worker(settings)``. Run as many processes, on as
many machines, as the load needs, against the same Redis: a worker holds no state another worker
needs, and a job whose worker dies is picked up again after ``worker.job_timeout`` + 10 s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker, func

from verifier.adapter import ChainAdapter
from verifier.challenge import ChallengeSigner
from verifier.jobs import Verifier, verify_payment
from verifier.registry import build_adapters
from verifier.settings import Settings
from verifier.store import Store

log = logging.getLogger(__name__)
# Our deadline (challenge expiry + grace) bounds retries, not a count.
MAX_TRIES = 100_000


def json_dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def json_loads(raw: bytes) -> Any:
    return orjson.loads(raw)


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis_url)


async def start_adapters(adapters: dict[str, ChainAdapter]) -> None:
    started: list[ChainAdapter] = []
    try:
        for adapter in adapters.values():
            await adapter.start()
            started.append(adapter)
    except BaseException:
        await asyncio.gather(*(a.close() for a in started), return_exceptions=True)
        raise


# Claim one job for this worker: arq's own check (not in progress elsewhere, still due) and its
# in-progress mark, in one atomic round trip instead of WATCH, EXISTS, ZSCORE and MULTI/EXEC.
_START = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return false
end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""


class VerifierWorker(Worker):
    """arq's worker with a cheaper job start, measured with ``make bench`` and py-spy.

    arq starts each job with four Redis round trips (a WATCH transaction), and, since a job stays
    in the queue until it finishes, repeats that check on every poll for each job in flight: with
    slow RPCs hundreds are in flight and those checks dominated the worker's CPU. Here the jobs
    this process runs are skipped without asking Redis, and every other job is claimed by one
    Lua script with the same conditions and the same in-progress key as arq's, so workers of
    both kinds can share a queue. Written against arq 0.26 to 0.28 (pinned in ``pyproject.toml``);
    ``tests/test_worker_kill.py`` and the concurrency tests exercise it.
    """

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        if not hasattr(self, "_start_script"):
            self._start_script = self.pool.register_script(_START)
        timeout_ms = int(self.in_progress_timeout_s * 1000)
        for raw in job_ids:
            job_id = raw.decode()
            if job_id in self.tasks:
                continue
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            score = await self._start_script(
                keys=[in_progress_key_prefix + job_id, self.queue_name],
                args=[job_id, timestamp_ms(), timeout_ms],
            )
            if score is None:  # running elsewhere, finished, or re-deferred meanwhile
                self.job_counter -= 1
                self.sem.release()
                continue
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task


def make_worker(settings: Settings, *, burst: bool = False, **overrides: Any) -> Worker:
    """An arq ``Worker`` for ``settings``; ``overrides`` go straight to arq (tests, bench)."""
    adapters = build_adapters(settings)

    async def startup(ctx: dict[str, Any]) -> None:
        await start_adapters(adapters)
        redis: ArqRedis = ctx["redis"]
        ctx["verifier"] = Verifier(
            settings,
            ChallengeSigner(settings.challenge.key_bytes(), settings.challenge.active),
            adapters,
            Store(redis, settings.store),
        )
        log.info("worker ready for %s", ", ".join(adapters) or "no networks")

    async def shutdown(ctx: dict[str, Any]) -> None:
        await asyncio.gather(*(a.close() for a in adapters.values()), return_exceptions=True)

    w = settings.worker
    options: dict[str, Any] = {
        "functions": [func(verify_payment, name="verify_payment", max_tries=MAX_TRIES)],
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": w.max_jobs,
        "poll_delay": w.poll_delay,
        # arq reads 5 x max_jobs ids per poll by default; with many jobs in flight, reading and
        # skipping them every few milliseconds cost more CPU than the jobs (make bench, 50 ms RPC).
        "queue_read_limit": w.queue_read_limit or w.max_jobs,
        "job_timeout": w.job_timeout,
        "max_tries": MAX_TRIES,
        "keep_result": 60,
        # Outcomes are in Redis (keys, stream) already; logging each one again costs CPU.
        "log_results": False,
        "retry_jobs": True,
        "job_serializer": json_dumps,
        "job_deserializer": json_loads,
        "burst": burst,
    }
    options.update(overrides)
    return VerifierWorker(**options)


def run_worker(settings: Settings) -> None:
    worker = make_worker(settings)
    worker.run()
