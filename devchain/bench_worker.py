"""The benchmark's worker process: ``python -m devchain.bench_worker CONFIG [stock]``.

A verification worker as ``x402-verifier worker`` runs it, that also knows ``noop`` (the queue
baseline's job). It imports what the product's worker imports and nothing of the benchmark's
(aiohttp servers, the local chains, the exact row's signing libraries), so that row 9 measures
the memory of the product's worker: 12 MB less than when it was started from
``devchain.bench``.

``stock``: arq's own ``Worker`` class with the same settings and only ``noop``, for the queue
baseline, so that the baseline is arq's limit and not our faster job start.
"""

from __future__ import annotations

import sys
from typing import Any


async def noop(ctx: dict[str, Any]) -> None:
    """The queue baseline's job: nothing."""


def worker_main(config: str, stock: bool = False) -> None:
    from arq.worker import Worker, func

    from verifier.jobs import verify_payment
    from verifier.queue import json_dumps, json_loads, redis_settings
    from verifier.settings import load_settings
    from verifier.worker import MAX_TRIES, make_worker

    settings = load_settings(config)
    if stock:
        Worker(
            functions=[func(noop)],
            queue_name=settings.queue_name,
            redis_settings=redis_settings(settings),
            max_jobs=settings.worker.max_jobs,
            poll_delay=settings.worker.poll_delay,
            job_timeout=settings.worker.job_timeout,
            keep_result=60,
            log_results=False,
            job_serializer=json_dumps,
            job_deserializer=json_loads,
        ).run()
        return
    functions = [func(verify_payment, name="verify_payment", max_tries=MAX_TRIES), func(noop)]
    make_worker(settings, functions=functions).run()


if __name__ == "__main__":
    worker_main(sys.argv[1], stock=sys.argv[2:] == ["stock"])
