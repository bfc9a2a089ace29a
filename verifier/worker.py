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


class VerifierWorker(Worker):
    """arq's worker, minus a cost that grows with the number of jobs in flight.

    A job stays in arq's queue until it finishes, so every poll reads the jobs already in flight
    and checks each one in Redis (three round trips apiece) before skipping it. With slow RPCs
    hundreds of jobs are in flight and those checks dominated the worker's CPU (profiled with
    py-spy during ``make bench``). Here the jobs this process runs are skipped without asking
    Redis, and those other workers run are found with one pipelined ``EXISTS`` per poll. arq
    still claims each remaining job with its own transaction, so nothing about who runs a job
    changes; a job whose worker died shows up again once its in-progress key expires.
    """

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        candidates = [j for j in job_ids if j.decode() not in self.tasks]
        if len(candidates) > 1:
            async with self.pool.pipeline(transaction=False) as pipe:
                for job_id in candidates:
                    pipe.exists(in_progress_key_prefix + job_id.decode())
                running = await pipe.execute()
            candidates = [j for j, busy in zip(candidates, running, strict=True) if not busy]
        await super().start_jobs(candidates)


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
        "queue_read_limit": w.queue_read_limit,
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
