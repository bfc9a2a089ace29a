"""A worker process rides out a Redis crash and restart, and says so in its log.

Redis (AOF, ``fsync always``) is killed with SIGKILL while a worker process holds a job, kept
down for a few seconds and started again on the same port and data: the worker must still run,
resume on its own, and finish the jobs it held long before their in-progress keys expire
(``job_timeout`` + 10 s, 70 s here).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devchain.redis_server import RedisServer
from tests.evm_fixtures import EvmEnv, Shop
from tests.rpc_proxy import RpcProxy
from tests.support import connected_gate
from tests.worker_process import proxied_config, start_worker, stop, wait_for
from verifier.gate import Offer
from verifier.models import Failure, Receipt
from verifier.settings import load_settings

JOB_TIMEOUT = 60
OUTAGE = 5.0


@dataclass
class Rig:
    redis: RedisServer
    proxy: RpcProxy
    worker: subprocess.Popen[bytes]
    log: Path
    shop: Shop

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def records(log: str) -> list[str]:
    """The log's records: each starts with its timestamp, a traceback continues the record.
    Without their final newline: the log may be read just after a record's last line."""
    parts = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} )", log)
    return [part.rstrip("\n") for part in parts]


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, since the test kills it."""
    server = RedisServer(appendonly=True).start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def rig(evm: EvmEnv, redis: RedisServer, tmp_path: Path) -> AsyncIterator[Rig]:
    with proxied_config(tmp_path, redis.url, evm, job_timeout=JOB_TIMEOUT) as (proxy, config):
        log = tmp_path / "worker.log"
        worker = start_worker(config, log)
        try:
            wait_for(lambda: "worker ready" in log.read_text(), 30, "the worker to start")
            async with connected_gate(load_settings(config)) as gate:
                yield Rig(redis, proxy, worker, log, Shop(gate, evm))
        finally:
            stop(worker)


async def seconds_to_receipt(rig: Rig, header: str, offers: list[Offer], limit: float) -> float:
    """Send the proof again, as a client would, until it counts (at most ``limit`` s)."""
    start = time.monotonic()
    while True:
        outcome = await rig.shop.settle(header, offers, wait=1)
        if isinstance(outcome, Receipt):
            return time.monotonic() - start
        assert outcome.transient, outcome
        assert time.monotonic() - start < limit, f"no receipt within {limit} s: {outcome}"


async def hold_a_job_across_an_outage(rig: Rig, rpc_delay: float) -> tuple[str, list[Offer]]:
    """Submit a proof whose RPC answer is held ``rpc_delay`` s, crash Redis while it is held,
    and restart Redis ``OUTAGE`` s later. Returns the proof, for ``seconds_to_receipt``."""
    shop = rig.shop
    accept, offers = shop.offer()
    header = shop.proof(accept, shop.pay(accept))
    rig.proxy.delay = rpc_delay
    rig.proxy.seen.clear()
    pending = await shop.settle(header, offers, wait=0.5)
    assert isinstance(pending, Failure) and pending.transient
    wait_for(rig.proxy.seen.is_set, 10, "the worker to start the job")
    rig.redis.kill()
    await asyncio.sleep(OUTAGE)
    rig.proxy.delay = 0  # the held request keeps its delay; later ones pass straight through
    assert rig.worker.poll() is None, "the worker exited while Redis was down"
    rig.redis.restart()
    return header, offers


async def test_worker_survives_a_redis_restart(
    evm: EvmEnv, own_redis: RedisServer, tmp_path: Path
) -> None:
    async with rig(evm, own_redis, tmp_path) as r:
        # The chain answers after Redis is back: the job was in flight all through the outage.
        header, offers = await hold_a_job_across_an_outage(r, rpc_delay=OUTAGE + 2)
        # Well before the job's in-progress key expires (JOB_TIMEOUT + 10 s).
        await seconds_to_receipt(r, header, offers, limit=JOB_TIMEOUT / 2)

        accept, fresh_offers = r.shop.offer()
        fresh = r.shop.proof(accept, r.shop.pay(accept))
        await seconds_to_receipt(r, fresh, fresh_offers, limit=20)

        wait_for(lambda: "Redis reachable again" in r.log_text(), 10, "the recovery log line")
        assert r.worker.poll() is None
        log = r.log_text()
    assert log.count("Redis unreachable") == 1, log
    assert log.count("Redis reachable again") == 1, log
    assert "Traceback" not in log, log


async def test_job_finished_during_the_outage_is_written_when_redis_returns(
    evm: EvmEnv, own_redis: RedisServer, tmp_path: Path
) -> None:
    async with rig(evm, own_redis, tmp_path) as r:
        # The chain answers while Redis is down: the job's store write fails, it retries
        # (``Retry``), and arq's write of that retry must wait for Redis instead of being lost
        # (which would leave the job to its in-progress key's expiry, 70 s).
        header, offers = await hold_a_job_across_an_outage(r, rpc_delay=0.5)
        # Well before the job's in-progress key expires (JOB_TIMEOUT + 10 s).
        await seconds_to_receipt(r, header, offers, limit=JOB_TIMEOUT / 2)
        assert r.worker.poll() is None
        # The receipt is published before the worker logs the attempt's end: wait for the line.
        deadline = time.monotonic() + 10
        while "verification ended: " not in r.log_text() and time.monotonic() < deadline:  # noqa: ASYNC110 (a log file has no event)
            await asyncio.sleep(0.05)
        log = r.log_text()
    # The job's store write failed with Redis away: a one-line warning and a retry, no traceback
    # anywhere in the worker.
    assert not [record for record in records(log) if "Traceback" in record], log
    # Text lines are "<time> <level> <logger> [<trace id>]: <message>".
    job_lines = [record for record in records(log) if " verifier.jobs [" in record]
    ended = [line for line in job_lines if "verification ended: " in line]
    assert [line.rsplit(": ", 1)[1] for line in ended] == ["receipt"], log
    assert job_lines[: -len(ended)] and all(
        " WARNING verifier.jobs [" in line and "Redis unreachable" in line
        for line in job_lines[: -len(ended)]
    ), log
