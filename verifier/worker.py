"""arq worker settings: JSON jobs, adapters started once per process, tuned for I/O-bound work.

``x402-verifier worker --config FILE`` runs ``run_worker(settings)``. Run as many processes, on as
many machines, as the load needs, against the same Redis: a worker holds no state another worker
needs, and a job whose worker dies is picked up again after ``worker.job_timeout`` + 10 s. A
worker rides out a Redis restart (it reconnects with backoff and logs the outage once); it still
needs a supervisor that restarts it, since a process can die for other reasons.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from arq.connections import ArqRedis
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import ms_to_datetime, timestamp_ms
from arq.worker import Retry, RetryJob, Worker, func

from verifier.challenge import ChallengeSigner
from verifier.jobs import REDIS_DOWN, Verifier, verify_payment
from verifier.metrics import serve_worker_metrics
from verifier.queue import (
    IN_PROGRESS_PREFIX,
    JOB_PREFIX,
    RETRY_PREFIX,
    VERIFY_PAYMENT,
    Claimed,
    JobStart,
    json_dumps,
    json_loads,
    redis_settings,
)
from verifier.registry import build_adapters
from verifier.settings import Settings
from verifier.settlement import Authorizations, Settler, build_settlers
from verifier.store import Store

log = logging.getLogger(__name__)
# Our deadline (challenge expiry + grace) bounds retries, not a count.
MAX_TRIES = 100_000
# Retry delays while Redis is unreachable: first, and the cap of the doubling.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


class _Service(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...


async def start_adapters(adapters: Mapping[str, _Service]) -> None:
    """Start each of ``adapters`` (or settlers); on a failure, close those started."""
    started: list[_Service] = []
    try:
        for adapter in adapters.values():
            await adapter.start()
            started.append(adapter)
    except BaseException:
        await asyncio.gather(*(a.close() for a in started), return_exceptions=True)
        raise


class VerifierWorker(Worker):
    """arq's worker, with a job protocol of three round trips and workers that scale out.

    arq's worker loop stays (polling, signals, health checks, shutdown); what a job costs in
    Redis is ours (measured with ``make bench`` row 12 and py-spy):

    **One round trip starts a job.** arq starts each job with four round trips (a WATCH
    transaction to claim it, then a MULTI to read the record and count the try); here one Lua
    script (``verifier.queue.JobStart``) claims the job with the same conditions and the same
    in-progress key as arq's, reads its record and, for a retry, counts the try. A fresh job
    (scored ``FRESH_AHEAD_MS`` ahead) is on its first try and reads no count. Jobs this process
    runs are skipped without asking Redis.

    **Nothing ends it.** A job's final outcome is stored by ``verifier.store`` in one atomic
    step that also removes the job (record, try count, mark, queue entry): a job that returns
    has nothing left to write. arq's finish (a MULTI writing arq's result, cleaning the abort
    set) is gone: nothing reads the result (the gate's submit reads the stored outcome first)
    and no job is aborted. A job that raises unexpectedly (not ``Retry``) is logged and ends in
    one pipeline (``_finished``) as under arq, with no outcome; ``verify_payment`` turns every
    error of its own into a retry or an outcome, so only a job record it cannot read gets there.

    **A poll starts what it has slots for, then reads again.** arq starts the ids of one read
    one by one, waiting for a slot before each: with a read of ``queue_read_limit`` due retries,
    a proof that arrives meanwhile waited behind all of them (``make bench`` row 10: 600 ms in
    the queue behind 500 retries). Here a poll that runs out of free slots returns, and the
    next one reads the queue again from its head, where new proofs come first.

    **Retries hold at most ``retry_slots`` of the ``max_jobs`` slots**; fresh jobs may take any.
    A backlog of proofs that keep retrying (never mined, thousands of challenges) otherwise
    filled every slot and the worker's CPU, and a new proof waited on the event loop behind
    them (``make bench`` row 10: 8x the quiet median with all slots open to retries, 1.1x with
    25 of 500). The claim script tells a retry from a fresh job by its score and, when retry
    slots are full, leaves the retry due without claiming it; the rest of the read is retries
    too, so the poll ends there. Retries then run late, earliest due first, and a late attempt
    judges the chain as it is then: an answer is delayed, never lost. More workers add retry
    capacity.

    **Claimed jobs leave the due part of the queue.** arq leaves a running job at its score, so
    every poll reads the jobs in flight again; with the read limit at ``max_jobs`` the ids read
    were all in flight and added workers started nothing (3 workers held as many jobs as one).
    The claim moves the job's score to ``now + in_progress_timeout``, when its in-progress key
    expires: the due part of the queue holds only jobs nobody runs, so a poll reads jobs it can
    start, and a worker that dies leaves its job due again exactly when arq would (at its
    in-progress key's expiry). ``Retry(defer)`` makes the job due at ``now + defer``, written
    absolutely (``ZADD XX``, not arq's ``ZINCRBY``) so that writing it twice cannot move it
    twice. A job that ends unfinished without a defer (cancelled at shutdown, ``Retry()``
    without defer, ``RetryJob``) gets back the score it had, due at once as under arq. A job
    that outlives ``job_timeout`` is cancelled and due again at once, as a retry: a timeout is
    transient, never final. Nothing assumes a score is near the current time (the gate scores
    fresh jobs far in the past, ahead of retries).

    **Redis outages** do not end the worker (arq's poll loop would raise and exit): a poll that
    finds Redis unreachable waits with exponential backoff (0.1 s doubling to 5 s) and polls
    again, logging one warning per outage and one line when Redis answers again; jobs in flight
    go on. A job's own writes after its attempt (``_requeue``, ``_finished``) are sent again
    with the same backoff for as long as its claim holds (until its in-progress key expires,
    when any worker may take it), so a job held across a short outage completes instead of
    waiting for that expiry. Every write sent again is idempotent (DEL, ZREM, and ZADD of an
    absolute score). Only Redis connection errors, timeouts and ``OSError`` are caught:
    anything else is a bug and must surface.

    **Sharing a queue with arq's own worker** works: arq's worker cannot see jobs claimed here
    (their score is in the future) and we cannot claim jobs it runs (same in-progress key).
    Written against arq 0.26 to 0.28 (pinned in ``pyproject.toml``): it overrides
    ``start_jobs``, ``close`` and the private ``_poll_iteration``, and runs jobs itself
    (``_run``) in place of arq's ``run_job``. Exercised by ``tests/test_worker_scale.py``,
    ``tests/test_worker_claim.py``, ``tests/test_worker_redis_outage.py``,
    ``tests/test_worker_kill.py`` and ``tests/test_queue.py``; ``close`` (a stop while a write
    is in flight) by ``tests/test_cli.py``.
    """

    def __init__(self, *args: Any, retry_slots: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # How many of the max_jobs slots retries may hold at once; fresh jobs may take any.
        self.retry_slots = self.max_jobs if retry_slots is None else retry_slots
        self._retries_running = 0
        self._job_start: JobStart | None = None  # once arq has connected (``self.pool``)
        self._down_since: float | None = None  # monotonic time of the first failure
        self._poll_backoff = BACKOFF_FIRST
        # A job's writes after its attempt, shielded: they outlive a cancelled job task.
        self._writes: set[asyncio.Task[Any]] = set()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        if self._job_start is None:
            self._job_start = JobStart(self.pool, self.queue_name)
        timeout_ms = int(self.in_progress_timeout_s * 1000)
        for raw in job_ids:
            job_id = raw.decode()
            if job_id in self.tasks:
                continue
            if self.sem.locked():
                # No free slot: go back to the poll loop rather than wait here with a stale
                # read. The next poll reads the queue again from its head, where a proof that
                # arrived meanwhile is due before every retry (the gate scores it so).
                return
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            now = timestamp_ms()
            until_ms = now + timeout_ms
            try:
                claimed = await self._job_start.claim(
                    job_id, now, until_ms, retries=self._retries_running < self.retry_slots
                )
            except BaseException:
                # Give the slot back. Had Redis applied the claim and lost the reply, the job
                # is due again when the claim expires, as after a crash.
                self.job_counter -= 1
                self.sem.release()
                raise
            if claimed is None or claimed is False:
                self.job_counter -= 1
                self.sem.release()
                if claimed is False:
                    # A retry, and every retry slot is taken. The ids after it in this read
                    # are retries too (fresh jobs score first): leave them to the next poll.
                    return
                continue  # running elsewhere, finished, or re-deferred meanwhile
            task = self.loop.create_task(self._run(job_id, claimed, until_ms))
            if claimed.is_retry(now):
                self._retries_running += 1
                task.add_done_callback(self._retry_done)
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    def _retry_done(self, _: asyncio.Task[None]) -> None:
        self._retries_running -= 1

    async def _run(self, job_id: str, claimed: Claimed, until_ms: int) -> None:
        """Run one claimed job, then write what its end needs: nothing when it returned (the
        store ended it with its outcome), its new score when it is to run again."""
        function = self._function(job_id, claimed.record)
        if function is None:
            self.jobs_failed += 1
            await self._after(functools.partial(self._finished, job_id), job_id, until_ms)
            return
        coroutine, args, kwargs, enqueued_ms = function
        ctx = {
            **self.ctx,
            "job_id": job_id,
            "job_try": claimed.job_try,
            "enqueue_time": ms_to_datetime(enqueued_ms),
            "score": until_ms,
        }
        write: Callable[[], Awaitable[None]] | None = None
        try:
            await asyncio.wait_for(coroutine(ctx, *args, **kwargs), self.job_timeout_s)
        except Retry as exc:
            self.jobs_retried += 1
            # Due again at now + defer, or at once, at the score the job had when claimed.
            score = timestamp_ms() + exc.defer_score if exc.defer_score else claimed.due
            write = functools.partial(self._requeue, job_id, score)
        except (asyncio.CancelledError, RetryJob):
            # Stopped with the worker (or asked to run again): due again at the score it had.
            self.jobs_retried += 1
            write = functools.partial(self._requeue, job_id, claimed.due)
        except TimeoutError:
            self.jobs_retried += 1
            log.warning(
                "job %s ran past job_timeout (%.0f s); it is due again", job_id, self.job_timeout_s
            )
            write = functools.partial(self._requeue, job_id, timestamp_ms())
        except Exception:
            self.jobs_failed += 1
            log.exception("job %s failed", job_id)
            write = functools.partial(self._finished, job_id)
        else:
            self.jobs_complete += 1
        if write is not None:
            await self._after(write, job_id, until_ms)

    def _function(
        self, job_id: str, record: bytes | None
    ) -> tuple[Callable[..., Awaitable[Any]], Any, Any, int] | None:
        """The job's coroutine function, arguments and enqueue time, or ``None`` (logged)
        when the record expired, cannot be read or names no function of this worker."""
        if record is None:
            log.warning("job %s expired", job_id)
            return None
        try:
            name, args, kwargs, _, enqueued_ms = deserialize_job_raw(
                record, deserializer=self.job_deserializer
            )
        except SerializationError:
            log.exception("deserializing job %s failed", job_id)
            return None
        function = self.functions.get(name)
        if function is None:
            log.warning("job %s, function %r not found", job_id, name)
            return None
        return function.coroutine, args, kwargs, enqueued_ms

    async def _after(
        self, write: Callable[[], Awaitable[None]], job_id: str, until_ms: int
    ) -> None:
        """A job's write after its attempt, shielded: a stop signal does not cut it short."""
        task = asyncio.ensure_future(self._write_while_claimed(write, job_id, until_ms))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        await asyncio.shield(task)

    async def close(self) -> None:
        """arq's ``close``, except that a job task cancelled during shutdown does not break it.

        arq waits for the job tasks with a plain ``gather``. A task cancelled while it awaited
        its shielded result write (a stop signal right after a job's attempt, or a second
        signal during shutdown) raised ``CancelledError`` out of ``close``: a traceback at exit,
        and the adapters never closed. The write itself goes on under its shield, so this waits
        for it and for the tasks, whatever they ended with, then closes as arq does.
        """
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), *self._writes, return_exceptions=True)
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None

    async def _finished(self, job_id: str) -> None:
        """End a job that has no outcome to store: its record, try count and mark deleted, out
        of the queue. Both commands are idempotent, so one pipeline, not a transaction."""
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.delete(IN_PROGRESS_PREFIX + job_id, RETRY_PREFIX + job_id, JOB_PREFIX + job_id)
            pipe.zrem(self.queue_name, job_id)
            await pipe.execute()

    async def _requeue(self, job_id: str, score: int | bytes) -> None:
        """Release our claim and make the job due at ``score``: absolute, so idempotent."""
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(IN_PROGRESS_PREFIX + job_id)
            tr.zadd(self.queue_name, {job_id: score}, xx=True)
            await tr.execute()

    async def _write_while_claimed(
        self, write: Callable[[], Awaitable[None]], job_id: str, until_ms: int
    ) -> None:
        """Send an idempotent ``write`` until Redis takes it, as long as our claim holds.

        Past the claim (its in-progress key's expiry) the job is due again for any worker,
        and a late write could undo what that worker does.
        """
        delay = BACKOFF_FIRST
        while True:
            try:
                await write()
            except REDIS_DOWN as exc:
                self._redis_down(exc)
                if timestamp_ms() + delay * 1000 >= until_ms:
                    log.warning(
                        "job %s: Redis was unreachable until its claim expired; "
                        "it is due again for any worker",
                        job_id,
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            else:
                self._redis_up()
                return

    async def _poll_iteration(self) -> None:
        # arq's poll loop has no reconnect: an error here (or one that arq re-raises from a
        # finished job task) would end the worker, though Redis may be back in a second.
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as exc:
            self._redis_down(exc)
            await asyncio.sleep(self._poll_backoff)
            self._poll_backoff = min(self._poll_backoff * 2, BACKOFF_MAX)
        else:
            self._poll_backoff = BACKOFF_FIRST
            self._redis_up()

    def _redis_down(self, exc: BaseException) -> None:
        if self._down_since is None:  # one line per outage, not one per poll or job
            self._down_since = time.monotonic()
            log.warning(
                "Redis unreachable (%s: %s); retrying with backoff up to %.0f s, "
                "jobs in flight go on",
                type(exc).__name__,
                exc,
                BACKOFF_MAX,
            )

    def _redis_up(self) -> None:
        if self._down_since is not None:
            log.info("Redis reachable again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None


def make_worker(settings: Settings, *, burst: bool = False, **overrides: Any) -> Worker:
    """An arq ``Worker`` for ``settings``; ``overrides`` go straight to arq (tests, bench)."""
    adapters = build_adapters(settings)

    settlers: dict[str, Settler] = {}

    async def startup(ctx: dict[str, Any]) -> None:
        await start_adapters(adapters)
        redis: ArqRedis = ctx["redis"]
        store = Store(redis, settings.store)
        authorizations = Authorizations(redis, settings.store.prefix)
        settlers.update(build_settlers(settings, adapters, authorizations, os.environ))
        await start_adapters(settlers)
        ctx["verifier"] = Verifier(
            settings,
            ChallengeSigner(settings.challenge.key_bytes(), settings.challenge.active),
            adapters,
            store,
            settlers,
        )
        port = settings.worker.metrics_port
        if port is not None:
            serve_worker_metrics(port, settings.redis_url, settings.queue_name)
            log.info("metrics on :%d/metrics", port)
        log.info("worker ready for %s", ", ".join(adapters) or "no networks")

    async def shutdown(ctx: dict[str, Any]) -> None:
        closing: list[_Service] = [*adapters.values(), *settlers.values()]
        await asyncio.gather(*(a.close() for a in closing), return_exceptions=True)

    w = settings.worker
    options: dict[str, Any] = {
        "functions": [func(verify_payment, name=VERIFY_PAYMENT, max_tries=MAX_TRIES)],
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": w.max_jobs,
        "retry_slots": w.retry_slots_or_default(),
        "poll_delay": w.poll_delay,
        # arq reads 5 x max_jobs ids per poll by default; with many jobs in flight, reading and
        # skipping them every few milliseconds cost more CPU than the jobs (make bench, 50 ms RPC).
        "queue_read_limit": w.queue_read_limit or w.max_jobs,
        "job_timeout": w.job_timeout,
        # The key `x402-verifier doctor --worker` reads (arq's default: every hour).
        "health_check_interval": w.health_check_interval,
        "max_tries": MAX_TRIES,
        # No arq results: outcomes are the store's (``_finished`` does not write them).
        "keep_result": 0,
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
