"""A worker in a process of its own, on the local EVM chain: for tests that kill it, or Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.evm_fixtures import NETWORK, EvmEnv
from tests.rpc_proxy import RpcProxy
from tests.support import KEY

CONFIG = """
redis_url = "{redis}"

[challenge]
active = "k1"
keys = {{ k1 = "{key}" }}

[worker]
{worker}

[networks."{network}"]
rpc_urls = ["{rpc}"]
head_cache_seconds = 0

[[assets]]
network = "{network}"
symbol = "USDC"
asset = "{token}"
decimals = 6
"""


def evm_config(
    *, redis: str, rpc: str, evm: EvmEnv, worker: dict[str, float], more: str = ""
) -> str:
    """A configuration file's text on the local chain, its USDC registered: Redis at ``redis``,
    the chain through ``rpc``, the ``[worker]`` table ``worker``, then the TOML ``more``."""
    table = "\n".join(f"{key} = {value}" for key, value in worker.items())
    text = CONFIG.format(
        redis=redis, key=KEY, worker=table, network=NETWORK, rpc=rpc, token=evm.token
    )
    return text + more


def write_config(path: Path, *, redis: str, rpc: str, evm: EvmEnv, job_timeout: float) -> Path:
    """A worker configuration at ``path``: ``redis``, the chain through ``rpc``, fast retries."""
    worker = {"job_timeout": job_timeout, "poll_delay": 0.05, "retry_base": 0.2, "retry_max": 0.5}
    path.write_text(evm_config(redis=redis, rpc=rpc, evm=evm, worker=worker))
    return path


@contextlib.contextmanager
def proxied_config(
    tmp_path: Path, redis: str, evm: EvmEnv, *, job_timeout: float
) -> Iterator[tuple[RpcProxy, Path]]:
    """An ``RpcProxy`` to the local chain, and a worker configuration (``write_config``) at
    ``tmp_path/verifier.toml``, for Redis at ``redis``, that reaches the chain through it."""
    with RpcProxy(evm.anvil.url) as proxy:
        path = tmp_path / "verifier.toml"
        yield (
            proxy,
            write_config(path, redis=redis, rpc=proxy.url, evm=evm, job_timeout=job_timeout),
        )


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``x402-verifier worker`` for ``config``, its log (stderr) written to ``log``."""
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "verifier.cli", "worker", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def stop(worker: subprocess.Popen[bytes]) -> None:
    """Stop ``worker`` as a supervisor would (SIGTERM), killing it if it takes over 10 s."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
