"""The command line: doctor and a dry-run verify against the real local chain and Redis."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from devchain.redis_server import free_port
from tests.evm_fixtures import NETWORK, PAYEE, RESOURCE, EvmEnv, Shop
from tests.support import KEY, connected_gate
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
