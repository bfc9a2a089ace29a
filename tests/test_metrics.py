"""Prometheus metrics of the gate and the worker: what a payment counts, RPC by host only,
labels bounded to what the gate serves, and the worker's own /metrics with the queue gauges."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY

from devchain.redis_server import free_port
from tests.evm_fixtures import NETWORK, EvmEnv
from tests.rpc_proxy import RpcProxy
from tests.support import SettingsFactory, running_worker, serve
from tests.test_trace import ACCEPTS, paid_request
from tests.worker_process import evm_config, stop, wait_for
from verifier.asgi import create_app


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_paid_request_is_counted_and_rpc_is_labelled_by_host_only(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Any
) -> None:
    with RpcProxy(evm.anvil.url) as proxy:
        rpc = proxy.url + "/v2/SECRETKEY?apikey=SECRET2"  # a provider's URL, key in it
        settings = make_settings(
            networks={NETWORK: {"rpc_urls": [rpc], "head_cache_seconds": 0}},
            assets=[{"network": NETWORK, "symbol": "USDC", "asset": evm.token, "decimals": 6}],
            gate={"settle_timeout": 10},
            routes=[{"path": "/report", "body": "paid", "accepts": ACCEPTS}],
        )
        labels = {"component": "gate", "scheme": "onchain-proof", "network": NETWORK}
        before = sample("x402_outcomes_total", **labels, outcome="receipt")
        claims = sample("x402_claims_total", result="new")
        async with (
            serve(create_app(settings)) as url,
            running_worker(settings),
            httpx.AsyncClient(timeout=20) as client,
        ):
            paid = await paid_request(client, url + "/report", evm, {})
            assert paid.status_code == 200
            # A proof for a network nobody serves: counted, but not under its name.
            accept = {
                "scheme": "onchain-proof",
                "network": "evil:attacker",
                "asset": "x",
                "amount": "1",
                "payTo": "x",
                "maxTimeoutSeconds": 60,
                "extra": {"nonce": "n", "memo": "0" * 64},
            }
            junk = {"accepted": accept, "payload": {"nonce": "n", "txHash": "0x1"}}
            header = base64.b64encode(json.dumps(junk).encode()).decode()
            await client.get(url + "/report", headers={"PAYMENT-SIGNATURE": header})
            text = (await client.get(url + "/metrics")).text
    assert sample("x402_outcomes_total", **labels, outcome="receipt") == before + 1
    assert sample("x402_claims_total", result="new") == claims + 1
    assert sample("x402_answer_seconds_count", scheme="onchain-proof", network=NETWORK) >= 1
    host = proxy.url.removeprefix("http://")
    assert sample("x402_rpc_requests_total", host=host, result="ok") > 0
    assert "SECRET" not in text and "evil:attacker" not in text
    assert 'network="other"' in text and "x402_rpc_seconds_bucket" in text


async def test_a_worker_serves_its_metrics_with_the_queue_gauges(
    evm: EvmEnv, redis_server: Any, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "verifier.toml"
    config.write_text(
        evm_config(
            redis=redis_server.url,
            rpc=evm.anvil.url,
            evm=evm,
            worker={"poll_delay": 0.05, "metrics_port": port},
        )
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        worker = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "verifier.cli", "worker", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        await asyncio.to_thread(
            wait_for, lambda: "worker ready" in log.read_text(), 30, "the worker to start"
        )
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        stop(worker)
    assert "x402_queue_depth 0.0" in text
    assert "x402_queue_oldest_seconds 0.0" in text
    assert "# TYPE x402_outcomes_total counter" in text


def test_the_grafana_dashboard_reads_only_metrics_we_export() -> None:
    import re

    import verifier.metrics as metrics

    dashboard = json.loads(
        (Path(__file__).parent.parent / "examples" / "grafana-dashboard.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bx402_[a-z_]+", e)}
    exported = {"x402_queue_depth", "x402_queue_oldest_seconds"}
    for value in vars(metrics).values():
        name = getattr(value, "_name", None)
        kind = getattr(value, "_type", None)
        if isinstance(name, str) and name.startswith("x402_"):
            if kind == "counter":
                exported.add(name + "_total")
            elif kind == "histogram":
                exported |= {name + "_bucket", name + "_count", name + "_sum"}
    assert used and used <= exported, used - exported
    assert {"x402_outcomes_total", "x402_rpc_requests_total", "x402_queue_depth"} <= used
