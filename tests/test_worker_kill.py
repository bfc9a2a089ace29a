"""A worker process killed with SIGKILL in the middle of a job: another one finishes it, once."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson

from tests.evm_fixtures import EvmEnv, Shop
from tests.support import connected_gate
from tests.worker_process import proxied_config, start_worker, stop, wait_for
from verifier.models import Failure, Receipt
from verifier.settings import load_settings


async def test_killed_worker_job_is_finished_by_another(
    evm: EvmEnv, redis_server: Any, redis: Any, tmp_path: Path
) -> None:
    with proxied_config(tmp_path, redis_server.url, evm, job_timeout=2) as (proxy, config):
        settings = load_settings(config)
        first = start_worker(config, tmp_path / "first.log")
        second: subprocess.Popen[bytes] | None = None
        try:
            wait_for(lambda: proxy.requests >= 1, 30, "the first worker to pin its network")
            async with connected_gate(settings) as gate:
                shop = Shop(gate, evm)
                accept, offers = shop.offer()
                header = shop.proof(accept, shop.pay(accept))
                proxy.delay = 60  # the worker's RPC calls now hang: it is mid-job
                proxy.seen.clear()
                pending = await shop.settle(header, offers, wait=0.5)
                assert isinstance(pending, Failure) and pending.transient
                wait_for(proxy.seen.is_set, 10, "the first worker to start the job")
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
                proxy.delay = 0
                second = start_worker(config, tmp_path / "second.log")
                outcome = await shop.settle(header, offers, wait=40)
                assert isinstance(outcome, Receipt), outcome
                stream = await gate.redis.xrange(gate.store.keys.stream)
                nonces = [orjson.loads(f[b"receipt"])["nonce"] for _, f in stream]
                assert nonces.count(accept.extra.nonce) == 1
                assert await shop.settle(header, offers) == outcome
        finally:
            for proc in (first, second):
                if proc is not None:
                    stop(proc)
