"""``x-trace-id`` end to end: taken or made by the HTTP gate, echoed, carried by the job into
every log line of the worker and into the receipt; JSON log lines with the context's fields."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.evm_fixtures import NETWORK, PAYEE, PAYER, EvmEnv, evm_settings
from tests.support import SettingsFactory, running_worker, serve
from tests.worker_process import evm_config, stop, wait_for
from verifier.asgi import create_app
from verifier.models import PaymentPayload, ProofBody, Receipt
from verifier.trace import JsonLines, LogContext, accepted_trace_id, log_context
from verifier.wire import decode_payment_required, decode_payment_response, encode_json

HEX32 = re.compile(r"^[0-9a-f]{32}$")
ACCEPTS = [{"network": NETWORK, "asset": "USDC", "pay_to": PAYEE, "price": "0.10"}]


@pytest.fixture
async def gate_url(evm: EvmEnv, make_settings: SettingsFactory, redis: Any) -> AsyncIterator[str]:
    settings = evm_settings(
        make_settings,
        evm,
        gate={"settle_timeout": 10},
        routes=[{"path": "/report", "body": '{"report": 42}', "accepts": ACCEPTS}],
    )
    async with serve(create_app(settings)) as url, running_worker(settings):
        yield url


async def paid_request(
    client: httpx.AsyncClient, url: str, evm: EvmEnv, headers: dict[str, str]
) -> httpx.Response:
    first = await client.get(url, headers=headers)
    accept = decode_payment_required(first.headers["PAYMENT-REQUIRED"]).accepts[0]
    tx = evm.chain.token_transfer(
        evm.token, PAYER, PAYEE, int(accept.amount), suffix=bytes.fromhex(accept.extra.memo)
    )
    body = ProofBody(nonce=accept.extra.nonce, tx_hash=tx)
    proof = encode_json(PaymentPayload(accepted=accept, payload=body))
    return await client.get(url, headers={**headers, "PAYMENT-SIGNATURE": proof})


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("req-7f3a:stage.1_x", True),
        ("a" * 128, True),
        ("a" * 129, False),  # too long
        ("bad id", False),  # a space
        ("x\u00e9", False),  # not ASCII
        ("", False),
    ],
)
def test_which_trace_ids_are_taken_as_they_are(given: str, kept: bool) -> None:
    assert (accepted_trace_id(given) == given) is kept


async def test_the_gate_echoes_a_safe_trace_id_and_makes_one_otherwise(gate_url: str) -> None:
    async with httpx.AsyncClient() as client:
        given = await client.get(gate_url + "/report", headers={"x-trace-id": "client-42"})
        none = await client.get(gate_url + "/report")
        bad = await client.get(gate_url + "/report", headers={"x-trace-id": "<script>"})
        health = await client.get(gate_url + "/healthz")
    assert given.status_code == 402 and given.headers["x-trace-id"] == "client-42"
    made = [r.headers["x-trace-id"] for r in (none, bad, health)]
    assert all(HEX32.match(t) for t in made) and len(set(made)) == 3
    assert bad.headers.get_list("x-trace-id") == [made[1]]  # one, ours


async def test_the_trace_id_reaches_the_worker_logs_and_the_receipt(
    gate_url: str, evm: EvmEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(LogContext())
    async with httpx.AsyncClient(timeout=20) as client:
        paid = await paid_request(client, gate_url + "/report", evm, {"x-trace-id": "order-991"})
    assert paid.status_code == 200 and paid.headers["x-trace-id"] == "order-991"
    receipt = decode_payment_response(paid.headers["PAYMENT-RESPONSE"])
    assert isinstance(receipt, Receipt)
    assert receipt.extensions["trace"] == {"traceId": "order-991"}
    ended = [r for r in caplog.records if getattr(r, "outcome", None) == "receipt"]
    assert ended, [r.getMessage() for r in caplog.records]
    assert all(getattr(r, "trace_id", None) == "order-991" for r in ended)
    assert all(getattr(r, "network", None) == NETWORK for r in ended)


def test_json_lines_carry_the_context_fields() -> None:
    record = logging.LogRecord("verifier.jobs", logging.INFO, __file__, 1, "ended %s", ("x",), None)
    with log_context(trace_id="t-1", job="j1", network=NETWORK, scheme="exact"):
        LogContext().filter(record)
    record.outcome = "receipt"
    line = json.loads(JsonLines().format(record))
    assert line["message"] == "ended x" and line["level"] == "INFO"
    assert (line["trace_id"], line["job"], line["network"], line["scheme"]) == (
        "t-1",
        "j1",
        NETWORK,
        "exact",
    )
    assert line["outcome"] == "receipt"
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    LogContext().filter(outside)
    assert "trace_id" not in json.loads(JsonLines().format(outside))


async def test_a_worker_process_writes_json_lines_with_the_trace(
    evm: EvmEnv, redis_server: Any, tmp_path: Path, make_settings: SettingsFactory
) -> None:
    config = tmp_path / "verifier.toml"
    config.write_text(
        evm_config(redis=redis_server.url, rpc=evm.anvil.url, evm=evm, worker={"poll_delay": 0.05})
        + '\n[[routes]]\npath = "/report"\nbody = "paid"\n[[routes.accepts]]\n'
        + f'network = "{NETWORK}"\nasset = "USDC"\npay_to = "{PAYEE}"\nprice = "0.10"\n'
    )
    log = tmp_path / "worker.log"
    cmd = [sys.executable, "-m", "verifier.cli", "--log-format", "json", "worker"]
    with log.open("wb") as err:
        worker = await asyncio.to_thread(
            subprocess.Popen,
            [*cmd, "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        from verifier.settings import load_settings

        settings = load_settings(config)
        wait_for(lambda: "worker ready" in log.read_text(), 30, "the worker to start")
        async with serve(create_app(settings)) as url, httpx.AsyncClient(timeout=20) as client:
            paid = await paid_request(client, url + "/report", evm, {"x-trace-id": "json-77"})
        assert paid.status_code == 200
        wait_for(lambda: "json-77" in log.read_text(), 10, "the job's log line")
    finally:
        stop(worker)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    [ended] = [line for line in lines if line.get("trace_id") == "json-77"]
    assert ended["outcome"] == "receipt" and ended["network"] == NETWORK
    assert ended["scheme"] == "onchain-proof" and len(ended["job"]) == 40
