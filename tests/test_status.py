"""The status read (``verifier.status``): ``x402-verifier receipts`` and the gate's
``GET /x402/receipts``, over receipts real payments made (HTTP gate, worker, anvil, Redis)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devchain.redis_server import RedisServer
from tests.evm_fixtures import NETWORK, PAYEE, EvmEnv, evm_settings
from tests.support import KEY, SettingsFactory, running_worker, serve
from tests.test_store import receipt
from tests.test_trace import paid_request
from verifier.asgi import create_app
from verifier.cli import main
from verifier.status import TRACE_SCAN, Query, find_receipts
from verifier.store import Keys, dump
from verifier.wire import decode_payment_response

TOKEN = "status-read-t0ken-for-the-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ACCEPTS = [{"network": NETWORK, "asset": "USDC", "pay_to": PAYEE, "price": "0.10"}]


@dataclass
class Paid:
    url: str
    receipts: list[dict[str, Any]]  # as the gate answered them, oldest first
    traces: list[str]
    config: Path


@pytest.fixture
async def paid(
    evm: EvmEnv,
    make_settings: SettingsFactory,
    redis: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Paid]:
    monkeypatch.setenv("X402_API_TOKEN", TOKEN)
    settings = evm_settings(
        make_settings,
        evm,
        gate={"settle_timeout": 10},
        routes=[{"path": "/report", "body": '{"report": 42}', "accepts": ACCEPTS}],
    )
    config = tmp_path / "verifier.toml"
    config.write_text(
        f'redis_url = "{settings.redis_url}"\n[challenge]\nactive = "k1"\n'
        f'keys = {{ k1 = "{KEY}" }}\n[networks."{NETWORK}"]\nrpc_urls = ["{evm.anvil.url}"]\n'
    )
    async with (
        serve(create_app(settings)) as url,
        running_worker(settings),
        httpx.AsyncClient(timeout=30) as client,
    ):
        receipts, traces = [], []
        for i in range(3):
            answer = await paid_request(
                client, url + "/report", evm, {"x-trace-id": f"support-case-{i}"}
            )
            assert answer.status_code == 200, answer.text
            receipt = decode_payment_response(answer.headers["PAYMENT-RESPONSE"])
            receipts.append(receipt.model_dump(by_alias=True, mode="json"))
            traces.append(f"support-case-{i}")
        yield Paid(url, receipts, traces, config)


def cli(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["receipts", *args])
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_the_cli_finds_receipts_by_each_selector(paid: Paid) -> None:
    config = ["--config", str(paid.config)]
    first, second, third = paid.receipts
    code, latest, _ = cli(*config)
    assert code == 0 and latest == [third, second, first]  # newest first
    assert cli(*config, "--limit", "1")[1] == [third]
    # A transaction as the payer wrote it, in any case: canonicalized like the gate does.
    tx = second["transaction"]
    assert cli(*config, "--tx", tx.upper().replace("0X", "0x"))[1] == [second]
    assert cli(*config, "--tx", tx, "--network", NETWORK)[1] == [second]
    assert cli(*config, "--tx", f"{NETWORK}:{tx}")[1] == [second]  # a consumption key
    upper = f"{NETWORK}:0x{tx[2:].upper()}"  # ... canonicalized too, with or without --network
    assert cli(*config, "--tx", upper)[1] == [second]
    assert cli(*config, "--tx", upper, "--network", NETWORK)[1] == [second]
    assert cli(*config, "--nonce", first["nonce"])[1] == [first]
    assert cli(*config, "--trace", "support-case-2")[1] == [third]


def test_the_cli_says_when_nothing_matches_or_the_query_is_wrong(paid: Paid) -> None:
    config = ["--config", str(paid.config)]
    code, found, err = cli(*config, "--trace", "nobody")
    assert (code, found) == (1, []) and "no receipt matches among the latest" in err
    assert cli(*config, "--tx", "0x" + "ab" * 32)[0] == 1
    code, _, err = cli(*config, "--tx", "0x1", "--nonce", "n1.x")
    assert code == 2 and "one of tx, nonce, trace" in err
    assert cli(*config, "--limit", "0")[0] == 2
    assert cli(*config, "--network", NETWORK)[0] == 2


def test_the_cli_says_redis_is_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "down.toml"
    config.write_text(
        f'redis_url = "redis://127.0.0.1:1/0"\n[challenge]\nkeys = {{ k1 = "{KEY}" }}\n'
    )
    assert main(["receipts", "--config", str(config)]) == 3
    assert "unreachable" in capsys.readouterr().err


async def test_the_gate_endpoint_answers_behind_the_token(paid: Paid) -> None:
    first, _, third = paid.receipts
    endpoint = paid.url + "/x402/receipts"
    async with httpx.AsyncClient() as http:
        latest = await http.get(endpoint, headers=AUTH)
        by_trace = await http.get(endpoint, params={"trace": "support-case-0"}, headers=AUTH)
        by_tx = await http.get(endpoint, params={"tx": third["transaction"]}, headers=AUTH)
        by_key = await http.get(
            endpoint, params={"tx": f"{NETWORK}:0x{third['transaction'][2:].upper()}"}, headers=AUTH
        )
        nothing = await http.get(endpoint, params={"trace": "support-case-9"}, headers=AUTH)
        unauthorized = [
            await http.get(endpoint, headers=headers)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN})
        ]
        bad = [
            await http.get(endpoint, params=params, headers=AUTH)
            for params in (
                {"tx": "0x1", "trace": "t"},
                {"limit": "0"},
                {"limit": "many"},
                {"trace": "x" * 600},
                {"from": "yesterday"},
                "trace=support-case-0&trace=support-case-1",
                {"limit": "1_0"},
                {"limit": "+5"},
                {"trace": ""},
            )
        ]
    assert latest.status_code == 200 and latest.json()["receipts"][0] == third
    assert by_trace.json()["receipts"] == [first]  # not another trace's receipt
    assert by_tx.json()["receipts"] == [third]
    assert by_key.json()["receipts"] == [third]  # a consumption key, canonicalized
    assert nothing.status_code == 404
    assert nothing.json()["error"] == "no receipt matches among the latest 10000 receipts"
    for answer in unauthorized:
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert "receipts" not in answer.json()
    assert [b.status_code for b in bad] == [400] * 9
    assert all("error" in b.json() for b in bad)
    assert bad[5].json()["error"] == "trace is given twice"
    assert bad[6].json()["error"] == "limit is 1 to 100"


async def test_the_gate_endpoint_says_redis_is_down(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X402_API_TOKEN", TOKEN)
    own = RedisServer().start()
    try:
        async with serve(create_app(make_settings(redis_url=own.url))) as url:
            own.stop()
            async with httpx.AsyncClient() as http:
                down = await http.get(url + "/x402/receipts", headers=AUTH)
                unauthorized = await http.get(url + "/x402/receipts")
    finally:
        own.stop()
    assert down.status_code == 503 and down.headers["Retry-After"] == "2"
    assert down.json() == {"error": "verification store unavailable, try again"}
    assert unauthorized.status_code == 401  # the token is checked first, without Redis


async def test_a_trace_id_is_looked_for_among_the_latest_receipts_only(
    make_settings: SettingsFactory, redis: Any
) -> None:
    settings = make_settings()
    stream = Keys(settings.store.prefix).stream

    def traced(i: int, trace: str) -> bytes:
        plain = receipt(f"n{i}", f"0x{i:064x}")
        return dump(plain.model_copy(update={"extensions": {"trace": {"traceId": trace}}}))

    # As the claim appends them (verifier/store.py), oldest first: one beyond the scan, then
    # TRACE_SCAN newer ones, two of which share a trace id 600 and 700 entries from the newest.
    shared = {TRACE_SCAN - 600, TRACE_SCAN - 700}
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(stream, {"receipt": traced(0, "oldest")})
        for i in range(1, TRACE_SCAN + 1):
            pipe.xadd(stream, {"receipt": traced(i, "shared" if i in shared else f"t{i}")})
        await pipe.execute()
    oldest = await find_receipts(redis, settings, Query(trace="oldest"))
    both = await find_receipts(redis, settings, Query(trace="shared"))
    one = await find_receipts(redis, settings, Query(trace="shared", limit=1))
    newest = await find_receipts(redis, settings, Query(trace=f"t{TRACE_SCAN}"))
    assert oldest == []  # the 10,001st newest receipt is not searched
    assert [r.nonce for r in both] == [f"n{TRACE_SCAN - 600}", f"n{TRACE_SCAN - 700}"]
    assert [r.nonce for r in one] == [f"n{TRACE_SCAN - 600}"]
    assert [r.nonce for r in newest] == [f"n{TRACE_SCAN}"]
