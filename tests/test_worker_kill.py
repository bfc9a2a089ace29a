"""A worker process killed with SIGKILL in the middle of a job: another one finishes it, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from tests.evm_fixtures import NETWORK, EvmEnv, Shop
from tests.rpc_proxy import RpcProxy
from tests.support import KEY, connected_gate
from verifier.models import Failure, Receipt
from verifier.settings import load_settings

CONFIG = """
redis_url = "{redis}"

[challenge]
active = "k1"
keys = {{ k1 = "{key}" }}

[worker]
job_timeout = 2
poll_delay = 0.05
retry_base = 0.2
retry_max = 0.5

[networks."{network}"]
rpc_urls = ["{rpc}"]
head_cache_seconds = 0

[[assets]]
network = "{network}"
symbol = "USDC"
asset = "{token}"
decimals = 6
"""


def start_worker(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "worker", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def test_killed_worker_job_is_finished_by_another(
    evm: EvmEnv, redis_server: Any, redis: Any, tmp_path: Path
) -> None:
    with RpcProxy(evm.anvil.url) as proxy:
        config = tmp_path / "verifier.toml"
        config.write_text(
            CONFIG.format(
                redis=redis_server.url, key=KEY, network=NETWORK, rpc=proxy.url, token=evm.token
            )
        )
        settings = load_settings(config)
        first = start_worker(config)
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
                second = start_worker(config)
                outcome = await shop.settle(header, offers, wait=40)
                assert isinstance(outcome, Receipt), outcome
                stream = await gate.redis.xrange(gate.store.keys.stream)
                nonces = [orjson.loads(f[b"receipt"])["nonce"] for _, f in stream]
                assert nonces.count(accept.extra.nonce) == 1
                assert await shop.settle(header, offers) == outcome
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                if proc is not None and proc.stderr:
                    proc.stderr.close()
