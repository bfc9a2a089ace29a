"""The command line: doctor and a dry-run verify against the real local chain and Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devchain.redis_server import free_port
from tests.evm_fixtures import NETWORK, PAYEE, RESOURCE, EvmEnv, Shop
from tests.rpc_proxy import RpcProxy
from tests.support import KEY, connected_gate
from tests.worker_process import proxied_config
from verifier.settings import load_settings

CONFIG = """
redis_url = "{redis}"
[challenge]
keys = {{ k1 = "{key}" }}
[networks."{network}"]
rpc_urls = ["{rpc}"]
[[assets]]
network = "{network}"
symbol = "USDC"
asset = "{token}"
decimals = 6
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", *args], capture_output=True, text=True, timeout=60
    )


def write_config(tmp_path: Path, redis_url: str, rpc: str, token: str) -> Path:
    path = tmp_path / "verifier.toml"
    path.write_text(CONFIG.format(redis=redis_url, key=KEY, network=NETWORK, rpc=rpc, token=token))
    return path


def test_doctor(evm: EvmEnv, redis_server: Any, tmp_path: Path) -> None:
    good = cli(
        "doctor",
        "--config",
        str(write_config(tmp_path, redis_server.url, evm.anvil.url, evm.token)),
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "redis       ok" in good.stdout and f"network     ok    {NETWORK}" in good.stdout
    down = tmp_path / "down"
    down.mkdir()
    bad = cli(
        "doctor",
        "--config",
        str(write_config(down, "redis://127.0.0.1:1/0", evm.anvil.url, evm.token)),
    )
    assert bad.returncode == 1 and "redis       FAIL" in bad.stdout


async def test_verify_is_a_dry_run(
    evm: EvmEnv, redis_server: Any, redis: Any, tmp_path: Path
) -> None:
    config = write_config(tmp_path, redis_server.url, evm.anvil.url, evm.token)
    async with connected_gate(load_settings(config)) as gate:
        shop = Shop(gate, evm)
        accept, _ = shop.offer()
        header = shop.proof(accept, shop.pay(accept))
        paid = cli("verify", "--config", str(config), "--resource", RESOURCE, header)
        assert paid.returncode == 0, paid.stdout + paid.stderr
        assert '"success": true' in paid.stdout and PAYEE in paid.stdout
        assert await redis.xlen(gate.store.keys.stream) == 0  # nothing was claimed
        short, _ = shop.offer()
        low = cli(
            "verify",
            "--config",
            str(config),
            "--resource",
            RESOURCE,
            shop.proof(short, shop.pay(short, 1)),
        )
        assert low.returncode == 1 and "amount_too_low" in low.stdout


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[worker]\nmax_job = 1\n")
    out = cli("worker", "--config", str(path))
    assert out.returncode == 2 and "max_job" in out.stderr


def test_gate_serves_with_the_configured_limits(redis_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text(
        f'redis_url = "{redis_server.url}"\n[challenge]\nkeys = {{ k1 = "{KEY}" }}\n'
        "[gate]\nheader_timeout = 0.5\nmax_body_bytes = 10\n"
    )
    port = free_port()
    gate = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "gate", "--config", str(config), "--port", str(port)]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{url}/healthz").text == "ok\n"
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and gate.poll() is None, "the gate did not start"
                time.sleep(0.1)
        assert httpx.post(f"{url}/healthz", content=b"x" * 11).status_code == 413
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            start = time.monotonic()
            assert idle.recv(1) == b""  # closed: no request headers within header_timeout
            assert time.monotonic() - start < 2
    finally:
        gate.send_signal(signal.SIGINT)
        assert gate.wait(timeout=10) == 0


def one_line_error(
    out: subprocess.CompletedProcess[str], code: int, *fragments: str, after_logs: bool = False
) -> str:
    """The command failed with ``code`` and a single ``x402-verifier: ...`` line, no traceback
    (``after_logs``: after log records of what it tried, such as arq's connection retries)."""
    assert out.returncode == code, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    if after_logs:
        assert all(re.match(r"\d{4}-\d\d-\d\d [\d:,]+ (INFO|WARNING) ", ln) for ln in lines[:-1])
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("x402-verifier: "), out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[worker\nmax_jobs = 1\n")
    one_line_error(cli("worker", "--config", str(path)), 2, f"{path} is not valid TOML", "line 1")


def cli_env(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_environment_mistakes_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[challenge]\nkeys = {{ k1 = "{KEY}" }}\n')
    malformed = cli_env("doctor", "--config", str(config), X402_CHALLENGE__KEYS="{k1: oops}")
    one_line_error(malformed, 2, "X402_CHALLENGE__KEYS is not JSON")
    assert "oops" not in malformed.stderr
    typo = cli_env("worker", "--config", str(config), X402_WORKER_MAX_JOBS="3")
    one_line_error(typo, 2, "X402_WORKER_MAX_JOBS names no setting", "X402_WORKER__MAX_JOBS")


def test_gate_configuration_error_is_one_line(tmp_path: Path) -> None:
    # Before, the gate started, failed in its lifespan with a traceback and "Application
    # startup failed"; the offer's asset is now resolved when the configuration loads.
    config = tmp_path / "gate.toml"
    config.write_text(
        f'[challenge]\nkeys = {{ k1 = "{KEY}" }}\n[networks."eip155:1"]\nrpc_urls = ["http://x"]\n'
        '[[routes]]\npath = "/r"\nbody = "y"\n[[routes.accepts]]\nnetwork = "eip155:1"\n'
        f'asset = "0x{"11" * 20}"\npay_to = "{PAYEE}"\namount = 1\n'
    )
    out = cli("gate", "--config", str(config), "--port", str(free_port()))
    one_line_error(out, 2, "routes[0].accepts[0].asset: unknown asset", "add it to [[assets]]")


def test_redis_down_at_start_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "down.toml"
    config.write_text(
        f'redis_url = "redis://127.0.0.1:1/0"\n[challenge]\nkeys = {{ k1 = "{KEY}" }}\n'
    )
    for command in (["gate", "--port", str(free_port())], ["worker"]):
        out = cli(*command, "--config", str(config))
        one_line_error(
            out, 3, "cannot start", "redis://127.0.0.1:1/0", "unreachable", after_logs=True
        )


def test_verbose_before_or_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'redis_url = "redis://127.0.0.1:1/0"\n'
        f'[challenge]\nkeys = {{ k1 = "{KEY}" }}\n[networks."{NETWORK}"]\n'
        'rpc_urls = ["http://127.0.0.1:1"]\n'
    )
    for args in (["-v", "doctor"], ["doctor", "-v"], ["doctor", "--config", str(config), "-v"]):
        if "--config" not in args:
            args = [*args, "--config", str(config)]
        out = cli(*args)
        assert " DEBUG " in out.stderr, (args, out.stderr)
    assert " DEBUG " not in cli("doctor", "--config", str(config)).stderr


def test_doctor_says_which_rpc_url_is_unreachable(
    evm: EvmEnv, redis_server: Any, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "c.toml"
    config.write_text(
        f'redis_url = "{redis_server.url}"\n[challenge]\nkeys = {{ k1 = "{KEY}" }}\n'
        f'[networks."{NETWORK}"]\nrpc_urls = ["{evm.anvil.url}", "{dead}"]\n'
    )
    out = cli("doctor", "--config", str(config))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"network     ok    {NETWORK} {evm.anvil.url}\n" in out.stdout
    assert f"network     FAIL  {NETWORK} {dead}: unreachable" in out.stdout
    assert "Traceback" not in out.stderr


def test_doctor_worker_is_a_readiness_check(redis_server: Any, redis: Any, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'redis_url = "{redis_server.url}"\nqueue_name = "ready:q"\n'
        f'[challenge]\nkeys = {{ k1 = "{KEY}" }}\n[worker]\nhealth_check_interval = 1\n'
    )
    ready = ("doctor", "--worker", "--config", str(config))
    none = cli(*ready)
    assert none.returncode == 1 and "workers     FAIL  no worker" in none.stdout, none.stdout
    worker = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "worker", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while (out := cli(*ready)).returncode != 0:
            assert time.monotonic() < deadline and worker.poll() is None, out.stdout
            time.sleep(0.2)
        assert "workers     ok    ready:q" in out.stdout
        assert "network" not in out.stdout  # only what readiness needs: quick, no RPC calls
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    # A stopped worker no longer counts (its key is removed; a killed one's expires).
    assert cli(*ready).returncode == 1


def test_gate_port_in_use_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[challenge]\nkeys = {{ k1 = "{KEY}" }}\n')
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        out = cli("gate", "--config", str(config), "--host", "127.0.0.1", "--port", port)
    one_line_error(out, 3, f"cannot listen on 127.0.0.1:{port} (gate.host, gate.port)")


def start_worker(config: Path, log: Path, proxy: RpcProxy) -> subprocess.Popen[bytes]:
    """A worker process, once it has started and pinned its network through ``proxy``."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "worker", "--config", str(config)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while proxy.requests < 1:
        assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
        time.sleep(0.05)
    return worker


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_worker_stopped_while_writing_a_result_exits_cleanly(
    evm: EvmEnv, redis_server: Any, redis: Any, tmp_path: Path, stop: signal.Signals
) -> None:
    """A stop that lands while a job's result is being written (its write held here by pausing
    Redis writes), and another stop during the shutdown, as an impatient operator sends: the
    worker waits for the write, closes, exits 0, and prints no CancelledError traceback."""
    with proxied_config(tmp_path, redis_server.url, evm, job_timeout=2) as (proxy, config):
        log = tmp_path / "worker.log"
        worker = start_worker(config, log, proxy)
        try:
            async with connected_gate(load_settings(config)) as gate:
                shop = Shop(gate, evm)
                accept, offers = shop.offer()
                proxy.delay = 1.0  # the job's chain reads take a while: it is in flight
                proxy.seen.clear()
                header = shop.proof(accept, shop.pay(accept))
                await gate.settle(header, resource=RESOURCE, offers=offers, timeout=0.1)
                assert await asyncio.to_thread(proxy.seen.wait, 10)
                await redis.execute_command("CLIENT", "PAUSE", "4000", "WRITE")
                await asyncio.sleep(1.5)
                worker.send_signal(stop)  # the job gives way; its result write waits for Redis
                await asyncio.sleep(0.3)
                worker.send_signal(stop)
                assert await asyncio.to_thread(worker.wait, 30) == 0, log.read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
    text = log.read_text()
    assert "Traceback" not in text and "CancelledError" not in text, text
