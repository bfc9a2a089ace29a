"""``make demo`` (``python -m devchain.demo`` from the repository root): the whole system on this
machine, with nothing running beforehand.

It starts a throwaway Redis and a local anvil chain with a USDC-like token, writes a configuration,
starts ``x402-verifier gate`` and a pool of ``x402-verifier worker`` processes, then behaves as a
paying client over real HTTP: unpaid request, 402, on-chain payment, proof, 200 with a receipt. It
also replays a proof, reuses a transaction for a new challenge and underpays, and shows that each
is answered correctly. Everything it started is stopped at the end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
from eth_account import Account
from eth_account.messages import encode_defunct

from devchain.anvil import ANVIL_ACCOUNTS, ANVIL_KEYS, Anvil, DevChain
from devchain.rails import Rail, load_rails
from devchain.redis_server import RedisServer, free_port
from verifier.models import Accept
from verifier.webhooks import verify_signature

NETWORK = "eip155:31337"
PAYER, PAYER_KEY = ANVIL_ACCOUNTS[1], ANVIL_KEYS[1]
SHOP = ANVIL_ACCOUNTS[9]
ROUTES = [("/weather", "0.01"), ("/report", "0.25"), ("/dataset", "1.50")]
EXACT_PATH = "/exact/report"
RELAYER_KEY = ANVIL_KEYS[7]  # pays the gas of exact settlements (local mode)
WEBHOOK_SECRET_ENV = "DEMO_WEBHOOK_SECRET"


class WebhookReceiver:
    """A receiver of signed receipt webhooks, as a merchant's backend would run one: it checks
    each signature (``verifier.webhooks.verify_signature``, the README's receiver code) and
    answers the very first delivery ``503``, to show a retry."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.received: list[tuple[dict[str, str], bytes, bool]] = []
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = dict(self.headers.items())
                if receiver.refused == 0:
                    receiver.refused += 1
                    self.send_response(503)
                else:
                    ok = verify_signature(headers, body, {"demo": receiver.secret})
                    receiver.received.append((headers, body, ok))
                    self.send_response(200 if ok else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/x402/receipts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ids(self) -> set[str]:
        return {h.get("X402-Webhook-Id", "") for h, _, ok in self.received if ok}


def _toml(value: Any) -> str:
    """A TOML inline value (the demo writes only strings, numbers, lists and tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml(key)


def _is_table(value: Any) -> bool:
    """A dict is written as a table, a non-empty list of dicts as an array of tables."""
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def toml_lines(doc: dict[str, Any], table: str = "") -> list[str]:
    """``doc`` as TOML: its plain values first, then its tables and arrays of tables (a table
    that holds only tables gets no header of its own: ``[networks."eip155:1"]``)."""
    lines = [f"{_key(k)} = {_toml(v)}" for k, v in doc.items() if not _is_table(v)]
    for key, value in doc.items():
        name = table + _key(key)
        if isinstance(value, dict):
            header = [f"[{name}]"] if not all(map(_is_table, value.values())) else []
            lines += header + toml_lines(value, name + ".")
        elif _is_table(value):
            for item in value:
                lines += [f"[[{name}]]", *toml_lines(item, name + ".")]
    return lines


def _route(path: str, resource: str, description: str, accept: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"resource": resource, "paid": True})
    return {"path": path, "description": description, "body": body, "accepts": [accept]}


def rail_config(rails: list[Rail]) -> str:
    """The configuration of the rails' networks, assets and routes (one resource per rail)."""
    lines = []
    for rail in rails:
        path, title = f"/{rail.slug}/item", f"demo resource on {rail.title}"
        doc: dict[str, Any] = {"networks": {rail.network: rail.network_settings()}}
        if assets := rail.asset_settings():
            doc["assets"] = assets
        doc["routes"] = [_route(path, rail.slug, title, rail.route_accept())]
        lines += toml_lines(doc)
    return "\n".join(lines) + "\n"


def _config(
    redis_url: str,
    rpc: str,
    token: str,
    exact_token: str,
    port: int,
    rails: list[Rail],
    webhook_url: str,
) -> str:
    doc = {
        "redis_url": redis_url,
        "challenge": {"active": "demo", "keys": {"demo": secrets.token_hex(32)}},
        "gate": {"port": port, "settle_timeout": 15},
        "worker": {"poll_delay": 0.01},
        # Signed receipt webhooks (x402-verifier webhooks) to the demo's own receiver.
        "webhooks": {
            "url": webhook_url,
            "secrets_env": {"demo": WEBHOOK_SECRET_ENV},
            "active": "demo",
            "backoff_base": 0.2,
        },
        "networks": {
            NETWORK: {
                "rpc_urls": [rpc],
                "min_confirmations": 1,
                "head_cache_seconds": 0.2,
                # exact payments: the workers send them from the relayer key (X402_RELAYER_KEY)
                "settlement": {"mode": "local"},
            }
        },
        "assets": [
            {"network": NETWORK, "symbol": "USDC", "asset": token, "decimals": 6},
            {
                "network": NETWORK,
                "symbol": "EUSDC",
                "asset": exact_token,
                "decimals": 6,
                "eip712_name": "USD Coin",
                "eip712_version": "2",
            },
        ],
        "routes": [
            *(
                _route(
                    path,
                    path,
                    f"demo resource {path}",
                    {"network": NETWORK, "asset": "USDC", "pay_to": SHOP, "price": price},
                )
                for path, price in ROUTES
            ),
            _route(
                EXACT_PATH,
                EXACT_PATH,
                "paid in exact by a stock x402 client",
                {
                    "network": NETWORK,
                    "asset": "EUSDC",
                    "pay_to": SHOP,
                    "price": "0.05",
                    "scheme": "exact",
                },
            ),
        ],
    }
    return "\n".join(toml_lines(doc)) + "\n" + rail_config(rails)


async def _pay_exact(url: str) -> tuple[int, dict[str, Any]]:
    """The reference x402 client, on its own: it reads the 402, signs an EIP-3009 authorization
    and sends it; a worker settles it from the relayer key. Its receipt, as the gate sent it."""
    from x402 import x402Client
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import register_exact_evm_client
    from x402.mechanisms.evm.signers import EthAccountSigner

    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(PAYER_KEY)))
    client.set_spend_controls({"allowed_assets": True})  # the local chain's token
    async with x402HttpxClient(client, timeout=30) as http:
        reply = await http.get(url)
    header = reply.headers.get("PAYMENT-RESPONSE")
    return reply.status_code, _b64json(header) if header else {"errorReason": reply.text[:200]}


def _b64json(value: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(base64.b64decode(value))
    return data


def _proof(accept: dict[str, Any], tx: str, signature: str | None = None) -> str:
    payload: dict[str, Any] = {"nonce": accept["extra"]["nonce"], "txHash": tx}
    if signature:
        payload["signature"] = signature
    body = {"x402Version": 2, "accepted": accept, "payload": payload}
    return base64.b64encode(orjson.dumps(body)).decode()


def _sign(accept: dict[str, Any], tx: str) -> str:
    message = (
        f"x402 onchain-proof\nnetwork: {NETWORK}\nnonce: {accept['extra']['nonce']}\n"
        f"transaction: {tx.lower()}"
    ).encode()
    signed = Account.sign_message(encode_defunct(primitive=message), private_key=PAYER_KEY)
    return "0x" + bytes(signed.signature).hex()


@contextmanager
def _process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gate exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the gate did not come up")


def _wait_log(log: Path, line: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while line not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"a worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


class Client:
    """A paying client, as an agent would be: GET, read the 402, pay on-chain, send the proof."""

    def __init__(self, base: str, chain: DevChain, token: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        self.chain = chain
        self.token = token
        self.latencies: list[float] = []
        self.trace_ids: list[str] = []  # the gate's x-trace-id of each proof sent

    def offer(self, path: str) -> dict[str, Any]:
        unpaid = self.http.get(path)
        assert unpaid.status_code == 402, unpaid.text
        accept: dict[str, Any] = _b64json(unpaid.headers["PAYMENT-REQUIRED"])["accepts"][0]
        return accept

    def pay(self, accept: dict[str, Any], amount: int | None = None) -> str:
        return self.chain.token_transfer(
            self.token,
            PAYER,
            accept["payTo"],
            int(accept["amount"]) if amount is None else amount,
            suffix=bytes.fromhex(accept["extra"]["memo"]),
        )

    def send(self, path: str, proof: str) -> tuple[int, dict[str, Any], str]:
        start = time.perf_counter()
        reply = self.http.get(path, headers={"PAYMENT-SIGNATURE": proof})
        self.latencies.append(time.perf_counter() - start)
        self.trace_ids.append(reply.headers.get("x-trace-id", ""))
        return reply.status_code, _b64json(reply.headers["PAYMENT-RESPONSE"]), reply.text


def _show(label: str, status: int, outcome: dict[str, Any], trace: str = "") -> None:
    traced = f"  trace {trace}" if trace else ""
    if outcome.get("success"):
        ext = outcome["extensions"]["onchain-proof"]
        print(
            f"  {label:<56} {status}  paid {ext['paidAmount']:>8} by {outcome['payer'][:10]}…  "
            f"tx {outcome['transaction'][:12]}…  block {ext['blockRef'].split(':')[0]}{traced}"
        )
    else:
        print(
            f"  {label:<56} {status}  {outcome['errorReason']}: {outcome['errorMessage']}{traced}"
        )


def _metric_lines(url: str, names: tuple[str, ...]) -> list[str]:
    """The samples of ``names`` a Prometheus endpoint serves, parsed as a scraper would."""
    from prometheus_client.parser import text_string_to_metric_families

    lines = []
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            if sample.name in names and sample.value:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                lines.append(f"{sample.name}{{{labels}}} {sample.value:g}")
    return lines


def _wait_group(redis_url: str, stream: str, group: str) -> None:
    """Until the webhook dispatcher's consumer group exists (it starts at the stream's end)."""
    import redis as redis_sync

    client = redis_sync.Redis.from_url(redis_url)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            try:
                groups: list[dict[str, Any]] = client.xinfo_groups(stream)  # type: ignore[assignment]
                if any(g["name"].decode() == group for g in groups):
                    return
            except redis_sync.ResponseError:  # no stream yet
                pass
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError("the webhook dispatcher did not start")


def run_demo(workers: int = 2) -> int:
    failures: list[str] = []

    def expect(what: str, ok: bool) -> None:
        if not ok:
            failures.append(what)

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="x402-demo-") as tmp:
        work = Path(tmp)
        print("starting Redis and anvil…")
        redis = stack.enter_context(RedisServer())
        node = Anvil()
        node.start()
        stack.callback(node.stop)
        chain = DevChain(node.url)
        token = chain.deploy_token()
        chain.mint(token, PAYER, 1_000 * 10**6)
        exact_token = chain.deploy_eip3009_token()  # USDC's EIP-3009 interface
        chain.mint(exact_token, PAYER, 1_000 * 10**6)
        os.environ["X402_RELAYER_KEY"] = RELAYER_KEY  # the workers inherit it
        rails = [stack.enter_context(r) for r in load_rails()]
        secret = secrets.token_hex(32)
        os.environ[WEBHOOK_SECRET_ENV] = secret  # the webhook dispatcher's signing secret
        receiver = stack.enter_context(WebhookReceiver(secret.encode()))
        port = free_port()
        config = work / "verifier.toml"
        config.write_text(
            _config(redis.url, node.url, token, exact_token, port, rails, receiver.url)
        )
        cli = [sys.executable, "-m", "verifier.cli"]
        metrics_port = free_port()
        print(
            f"starting the gate on :{port}, {workers} workers and a webhook dispatcher "
            f"(logs in {work})…"
        )
        gate = stack.enter_context(
            _process([*cli, "gate", "--config", str(config)], work / "gate.log")
        )
        logs = [work / f"worker{i}.log" for i in range(workers)]
        procs = [
            stack.enter_context(
                _process(
                    [*cli, "--log-format", "json", "worker", "--config", str(config)],
                    log,
                    # The first worker serves its Prometheus metrics (one port per process).
                    {"X402_WORKER__METRICS_PORT": str(metrics_port)} if i == 0 else None,
                )
            )
            for i, log in enumerate(logs)
        ]
        hooks = stack.enter_context(
            _process([*cli, "webhooks", "--config", str(config)], work / "webhooks.log")
        )
        _wait_http(f"http://127.0.0.1:{port}/healthz", gate, work / "gate.log")
        for proc, log in zip(procs, logs, strict=True):
            _wait_log(log, "worker ready", proc)
        _wait_log(work / "webhooks.log", "delivering receipts", hooks)
        _wait_group(redis.url, "x402:receipts", "webhooks")

        client = Client(f"http://127.0.0.1:{port}", chain, token)
        receipts: list[dict[str, Any]] = []
        print("\npaying for resources (402 -> pay on-chain -> proof -> 200):")
        first: tuple[str, dict[str, Any], str] | None = None
        for path, price in ROUTES:
            accept = client.offer(path)
            tx = client.pay(accept)
            status, outcome, _ = client.send(path, _proof(accept, tx))
            _show(f"GET {path} ({price} USDC)", status, outcome, client.trace_ids[-1])
            expect(f"{path} paid", status == 200 and outcome.get("success") is True)
            receipts.append(outcome)
            first = first or (path, accept, tx)

        for rail in rails:
            path = f"/{rail.slug}/item"
            accept = client.offer(path)
            tx = asyncio.run(rail.pay(Accept.model_validate(accept)))
            status, outcome, _ = client.send(path, _proof(accept, tx))
            _show(f"GET {path} ({rail.title})", status, outcome, client.trace_ids[-1])
            expect(f"{path} paid", status == 200 and outcome.get("success") is True)
            receipts.append(outcome)

        status, outcome = asyncio.run(_pay_exact(f"http://127.0.0.1:{port}{EXACT_PATH}"))
        exact_trace = outcome.get("extensions", {}).get("trace", {}).get("traceId", "")
        _show(f"GET {EXACT_PATH} (exact, the reference x402 client)", status, outcome, exact_trace)
        expect(f"{EXACT_PATH} paid", status == 200 and outcome.get("scheme") == "exact")
        receipts.append(outcome)

        assert first is not None
        path, accept, tx = first
        print("\nreplays and mistakes:")
        status, outcome, _ = client.send(path, _proof(accept, tx))
        _show("same proof again (idempotent)", status, outcome, client.trace_ids[-1])
        expect("replay returns the same receipt", status == 200 and outcome == receipts[0])
        fresh = client.offer(path)
        status, outcome, _ = client.send(path, _proof(fresh, tx, _sign(fresh, tx)))
        _show("old tx for a new challenge", status, outcome, client.trace_ids[-1])
        expect("old tx refused", status == 402 and outcome.get("errorReason") == "tx_already_used")
        cheap = client.offer("/report")
        status, outcome, _ = client.send("/report", _proof(cheap, client.pay(cheap, 1)))
        _show("underpayment (0.000001 USDC)", status, outcome, client.trace_ids[-1])
        expect(
            "underpayment refused", status == 402 and outcome.get("errorReason") == "amount_too_low"
        )

        print("\nreceipts:")
        for receipt in receipts:
            print("  " + orjson.dumps(receipt).decode())
        traced = [r.get("extensions", {}).get("trace", {}).get("traceId") for r in receipts]
        expect("every receipt carries its trace id", all(traced))
        expect("every answer carries a trace id", all(client.trace_ids))
        worker_logs = "".join(log.read_text(errors="replace") for log in logs)
        expect(
            "the workers' JSON logs carry each payment's trace id",
            all(f'"trace_id":"{t}"' in worker_logs.replace(" ", "") for t in traced if t),
        )

        deadline = time.monotonic() + 20
        while len(receiver.ids()) < len(receipts) and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"\nwebhooks ({receiver.url}, x402-verifier webhooks):")
        print(
            f"  first try answered 503 and retried; {len(receiver.ids())} receipts delivered, "
            f"{sum(ok for _, _, ok in receiver.received)} signatures verified by the receiver"
        )
        if receiver.received:
            headers, body, _ = receiver.received[0]
            print(
                f"  e.g. X402-Webhook-Id: {headers.get('X402-Webhook-Id')}\n"
                f"       X402-Webhook-Signature: {headers.get('X402-Webhook-Signature', '')[:40]}…"
                f"\n       trace {orjson.loads(body).get('extensions', {}).get('trace', {})}"
            )
        expect("every receipt delivered by webhook", len(receiver.ids()) >= len(receipts))
        expect("every webhook signature verified", all(ok for _, _, ok in receiver.received))

        names = ("x402_outcomes_total",)
        print(f"\nmetrics (the gate's http://127.0.0.1:{port}/metrics, outcomes):")
        gate_lines = _metric_lines(f"http://127.0.0.1:{port}/metrics", names)
        for line in gate_lines:
            print("  " + line)
        print(f"metrics (worker 0's http://127.0.0.1:{metrics_port}/metrics, outcomes):")
        worker_lines = _metric_lines(f"http://127.0.0.1:{metrics_port}/metrics", names)
        for line in worker_lines:
            print("  " + line)
        expect("the gate's metrics count the receipts", any("receipt" in x for x in gate_lines))
        lat = sorted(client.latencies)
        print(
            f"\nproof -> answer latency over {len(lat)} requests: min {lat[0] * 1000:.0f} ms, "
            f"median {statistics.median(lat) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"
        )
        print("stopping everything…")
    if failures:
        print("DEMO FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("demo finished: every payment verified, every replay and underpayment refused.")
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m devchain.demo", description="the local demo")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_demo(workers=parser.parse_args().workers))
