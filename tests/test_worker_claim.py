"""The claim moves a job's score out of the due part of the queue; every exit puts it right.

A claimed job is scored at its in-progress key's expiry. A job cancelled at shutdown must be due
again at once (at the score it had), and ``Retry(defer)`` must land at ``now + defer`` whatever
the job's score was, including scores far in the past (how the gate may rank fresh jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from tests.evm_fixtures import NETWORK, EvmEnv, Shop
from tests.rpc_proxy import RpcProxy
from tests.support import SettingsFactory, connected_gate, running_worker
from verifier.models import Failure, Receipt
from verifier.settings import Settings
from verifier.worker import make_worker


def settings_for(make_settings: SettingsFactory, evm: EvmEnv, rpc: str, **worker: Any) -> Settings:
    return make_settings(
        worker=worker,
        networks={NETWORK: {"rpc_urls": [rpc], "head_cache_seconds": 0}},
        assets=[{"network": NETWORK, "symbol": "USDC", "asset": evm.token, "decimals": 6}],
    )


async def only_job(redis: Redis, queue: str) -> tuple[str, float]:
    [(job, score)] = await redis.zrange(queue, 0, -1, withscores=True)
    return job.decode(), score


async def until_claimed(redis: Redis, job: str) -> None:
    async with asyncio.timeout(30):
        while not await redis.exists(in_progress_key_prefix + job):  # noqa: ASYNC110 (a probe)
            await asyncio.sleep(0.02)


async def test_job_cancelled_at_shutdown_is_due_again_at_once(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Redis
) -> None:
    with RpcProxy(evm.anvil.url) as proxy:
        settings = settings_for(make_settings, evm, proxy.url, job_timeout=30)
        queue = settings.queue_name
        async with connected_gate(settings) as gate:
            shop = Shop(gate, evm)
            first = make_worker(settings, handle_signals=False)
            first.allow_pick_jobs = False  # started before the job is queued, so its score is read
            run = asyncio.create_task(first.async_run())
            async with asyncio.timeout(30):
                while "verifier" not in first.ctx:  # noqa: ASYNC110 (a probe)
                    await asyncio.sleep(0.02)
            proxy.delay = 20  # the job's RPC calls hang: it stays in flight
            accept, offers = shop.offer()
            header = shop.proof(accept, shop.pay(accept))
            pending = await shop.settle(header, offers, wait=0.2)
            assert isinstance(pending, Failure) and pending.transient
            job, queued_score = await only_job(redis, queue)

            first.allow_pick_jobs = True
            await until_claimed(redis, job)
            claimed_at = timestamp_ms()
            _, moved = await only_job(redis, queue)
            # While claimed, it is scored when its in-progress key expires (job_timeout + 10 s).
            assert claimed_at + 30_000 < moved <= claimed_at + 40_000

            await first.close()  # arq cancels the job (retry_jobs): it is not finished
            with contextlib.suppress(asyncio.CancelledError):
                await run
            assert not await redis.exists(in_progress_key_prefix + job)
            assert await only_job(redis, queue) == (job, queued_score)

            proxy.delay = 0
            async with running_worker(settings):
                outcome = await shop.settle(header, offers, wait=20)
            assert isinstance(outcome, Receipt), outcome
            assert timestamp_ms() < moved  # before the moved score would have made it due


async def test_retry_lands_at_now_plus_defer_from_a_score_far_in_the_past(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Redis
) -> None:
    with RpcProxy(evm.anvil.url) as proxy:
        settings = settings_for(make_settings, evm, proxy.url, retry_base=0.2, retry_max=0.2)
        in_progress_ms = (settings.worker.job_timeout + 10) * 1000
        defer_ms = 0.2 * 1.2 * 1000  # retry_max with the full jitter
        queue = settings.queue_name
        async with connected_gate(settings) as gate:
            shop = Shop(gate, evm)
            # anvil mines only on demand: three confirmations never come, every attempt retries.
            accept, offers = shop.offer(min_confirmations=3)
            header = shop.proof(accept, shop.pay(accept))
            await shop.settle(header, offers, wait=0.2)
            job, score = await only_job(redis, queue)
            await redis.zadd(queue, {job: score - 10**13}, xx=True)

            proxy.delay = 0.1  # each attempt lasts a while: both states get sampled
            claimed = retried = 0
            async with running_worker(settings):
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    async with redis.pipeline(transaction=True) as tr:
                        tr.exists(in_progress_key_prefix + job)
                        tr.zscore(queue, job)
                        running, score = await tr.execute()
                    now = timestamp_ms()
                    if running:
                        claimed += 1
                        assert now < score <= now + in_progress_ms
                    elif score > now - 10**12:  # retried at least once (not in the far past)
                        retried += 1
                        assert now - 5_000 < score <= now + defer_ms
                    await asyncio.sleep(0.01)
                proxy.delay = 0
    assert claimed and retried, (claimed, retried)


async def test_a_finished_job_leaves_nothing_of_arq_behind_and_its_proof_its_outcome(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Redis
) -> None:
    """The finish is ours: the job, its mark, its try count and its queue entry go; no arq
    result is written (the outcome is ours, in the store), and the same proof sent again gets
    the same receipt without a new job."""
    from verifier import queue as q

    settings = settings_for(make_settings, evm, evm.anvil.url)
    async with connected_gate(settings) as gate, running_worker(settings):
        shop = Shop(gate, evm)
        accept, offers = shop.offer()
        header = shop.proof(accept, shop.pay(accept))
        outcome = await shop.settle(header, offers, wait=20)
        assert isinstance(outcome, Receipt), outcome
        [job] = [
            k.decode().removeprefix("x402:outcome:")
            async for k in redis.scan_iter(match="x402:outcome:*")
        ]
        async with asyncio.timeout(10):  # the finish follows the outcome
            while await redis.zcard(settings.queue_name):  # noqa: ASYNC110 (a probe)
                await asyncio.sleep(0.02)
        prefixes = (q.JOB_PREFIX, q.IN_PROGRESS_PREFIX, q.RESULT_PREFIX, "arq:retry:")
        assert [p for p in prefixes if await redis.exists(p + job)] == []
        again = await shop.settle(header, offers, wait=5)
        assert again == outcome
        assert await redis.zcard(settings.queue_name) == 0
