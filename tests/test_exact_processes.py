"""Exact settlement across worker processes: a worker killed in the middle of a settlement,
two workers sharing one relayer key, and the relayer's node down then back. Real anvil, real
Redis, real ``x402-verifier worker`` processes; the proxy in front of the node is the only
fake, at the transport boundary.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.evm_fixtures import NETWORK, PAYEE
from tests.exact_fixtures import (
    PRICE,
    RELAYER_KEY,
    TOKEN_NAME,
    TOKEN_VERSION,
    ExactEnv,
    ExactShop,
    exact_env,
)
from tests.rpc_proxy import RpcProxy
from tests.support import KEY, connected_gate
from tests.worker_process import start_worker, stop, wait_for
from verifier.models import Failure, Receipt
from verifier.settings import load_settings

__all__ = ["exact_env"]  # a fixture

CONFIG = """
redis_url = "{redis}"

[challenge]
active = "k1"
keys = {{ k1 = "{key}" }}

[worker]
job_timeout = 4
poll_delay = 0.05
retry_base = 0.2
retry_max = 0.5

[networks."{network}"]
rpc_urls = ["{rpc}"]
head_cache_seconds = 0

[networks."{network}".settlement]
mode = "local"
replace_after = 600

[[assets]]
network = "{network}"
symbol = "USDC"
asset = "{token}"
decimals = 6
eip712_name = "{name}"
eip712_version = "{version}"

[[routes]]
path = "/exact"
body = "paid"
[[routes.accepts]]
network = "{network}"
asset = "USDC"
pay_to = "{payee}"
amount = {price}
scheme = "exact"
"""


@pytest.fixture
def relayer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker processes inherit it; never written to the configuration file.
    monkeypatch.setenv("X402_RELAYER_KEY", RELAYER_KEY)


def config(tmp_path: Path, redis: str, rpc: str, env: ExactEnv) -> Path:
    path = tmp_path / "verifier.toml"
    path.write_text(
        CONFIG.format(
            redis=redis,
            key=KEY,
            network=NETWORK,
            rpc=rpc,
            token=env.token,
            name=TOKEN_NAME,
            version=TOKEN_VERSION,
            payee=PAYEE,
            price=PRICE,
        )
    )
    return path


async def test_a_worker_killed_mid_settlement_leaves_it_to_the_next_one_settled_once(
    exact_env: ExactEnv, redis_server: Any, tmp_path: Path, relayer_env: None
) -> None:
    env = exact_env
    with RpcProxy(env.evm.anvil.url) as proxy:
        path = config(tmp_path, redis_server.url, proxy.url, env)
        settings = load_settings(path)
        first = start_worker(path, tmp_path / "first.log")
        second: subprocess.Popen[bytes] | None = None
        try:
            async with connected_gate(settings) as gate:
                shop = ExactShop(gate, env)
                before, sent = env.balance(PAYEE), env.relayer_count()
                proof, offers = shop.paid_header()
                # The broadcast reaches the node 3 s late; the worker dies while it waits.
                proxy.hold_method, proxy.hold_seconds = "eth_sendRawTransaction", 3.0
                pending = await shop.settle(proof, offers, wait=0.2)
                assert isinstance(pending, Failure) and pending.transient, pending
                await asyncio.to_thread(wait_for, proxy.held.is_set, 30, "the broadcast")
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
                proxy.hold_method = None
                second = start_worker(path, tmp_path / "second.log")
                receipt = await shop.settle(proof, offers, wait=40)
                assert isinstance(receipt, Receipt), receipt
                assert env.balance(PAYEE) == before + PRICE
                assert env.relayer_count() == sent + 1
        finally:
            for worker in (first, second):
                if worker is not None:
                    stop(worker)


async def test_two_workers_share_one_relayer_key_without_a_nonce_collision(
    exact_env: ExactEnv, redis_server: Any, tmp_path: Path, relayer_env: None
) -> None:
    env = exact_env
    path = config(tmp_path, redis_server.url, env.evm.anvil.url, env)
    settings = load_settings(path)
    workers = [start_worker(path, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        async with connected_gate(settings) as gate:
            shop = ExactShop(gate, env)
            before, sent = env.balance(PAYEE), env.relayer_count()
            proofs = [shop.paid_header() for _ in range(30)]
            outcomes = await asyncio.gather(*(shop.settle(p, o, wait=60) for p, o in proofs))
        assert all(isinstance(o, Receipt) for o in outcomes), outcomes
        assert len({o.transaction for o in outcomes}) == 30
        assert env.relayer_count() == sent + 30
        assert env.balance(PAYEE) == before + 30 * PRICE
        logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
        assert "Traceback" not in logs
    finally:
        for worker in workers:
            stop(worker)


async def test_the_relayer_node_down_then_back_is_transient_then_one_settlement(
    exact_env: ExactEnv, redis_server: Any, tmp_path: Path, relayer_env: None
) -> None:
    env = exact_env
    with RpcProxy(env.evm.anvil.url) as proxy:
        path = config(tmp_path, redis_server.url, proxy.url, env)
        settings = load_settings(path)
        worker = start_worker(path, tmp_path / "worker.log")
        try:
            log = tmp_path / "worker.log"
            await asyncio.to_thread(wait_for, lambda: "ready" in log.read_text(), 30, "start")
            async with connected_gate(settings) as gate:
                shop = ExactShop(gate, env)
                before, sent = env.balance(PAYEE), env.relayer_count()
                proof, offers = shop.paid_header()
                proxy.status = 503
                pending = await shop.settle(proof, offers, wait=2)
                assert isinstance(pending, Failure) and pending.transient, pending
                await asyncio.sleep(1)  # a few tries against the node that is down
                assert env.relayer_count() == sent
                proxy.status = None
                receipt = await shop.settle(proof, offers, wait=30)
                assert isinstance(receipt, Receipt), receipt
                assert env.balance(PAYEE) == before + PRICE
                assert env.relayer_count() == sent + 1
        finally:
            stop(worker)
        assert "Traceback" not in (tmp_path / "worker.log").read_text()
