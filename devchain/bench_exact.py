"""Benchmark rows for the exact scheme: settlements per second with local settlement, and RPC
requests per settlement, on a real node.

A canned node cannot settle (it would have to execute ``transferWithAuthorization``), so this
row runs on anvil of its own (automine: each settlement is mined as it arrives, the node's
"0 ms"), behind a pass-through that counts the worker's JSON-RPC requests. One worker process
settles; the gate runs in the benchmark's process and submits ``n`` payments, ``concurrency``
at a time, each signed as the reference client signs (EIP-712 over the token's domain).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from eth_account import Account

from devchain.anvil import ANVIL_ACCOUNTS, ANVIL_KEYS, Anvil, DevChain
from devchain.http_server import LocalHTTPServer, Reply, Request
from verifier.gate import Gate
from verifier.models import Receipt, ResourceInfo
from verifier.settings import AcceptSettings, load_settings
from verifier.wire import decode_payment_required, encode_json

NETWORK = "eip155:31337"
PAYER, PAYER_KEY = ANVIL_ACCOUNTS[1], ANVIL_KEYS[1]
PAYEE = ANVIL_ACCOUNTS[2]
RELAYER_KEY = ANVIL_KEYS[7]
RESOURCE = "http://bench.test/exact"
_TYPES = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ]
}


class CountingProxy(LocalHTTPServer):
    """Forwards JSON-RPC to the node and counts the HTTP requests (a batch is one)."""

    methods = ("POST",)

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.requests = 0

    def handle(self, request: Request) -> Reply:
        self.requests += 1
        forward = urllib.request.Request(
            self.upstream, data=request.body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(forward, timeout=30) as reply:
            return Reply(200, reply.read(), "application/json")


def _config(redis_url: str, rpc: str, token: str) -> str:
    return f"""
redis_url = "{redis_url}"
queue_name = "x402:bench-exact"
[challenge]
keys = {{ k1 = "{secrets.token_hex(32)}" }}
[worker]
max_jobs = 500
poll_delay = 0.005
[networks."{NETWORK}"]
rpc_urls = ["{rpc}"]
head_cache_seconds = 0.5
[networks."{NETWORK}".settlement]
mode = "local"
[[assets]]
network = "{NETWORK}"
symbol = "USDC"
asset = "{token}"
decimals = 6
eip712_name = "USD Coin"
eip712_version = "2"
[[routes]]
path = "/exact"
body = "paid"
[[routes.accepts]]
network = "{NETWORK}"
asset = "USDC"
pay_to = "{PAYEE}"
amount = 1000
scheme = "exact"
"""


def _header(accept: Any, token: str) -> str:
    """A payment header for ``accept``, signed as the reference client's EVM exact scheme."""
    auth = {
        "from": PAYER,
        "to": accept.pay_to,
        "value": int(accept.amount),
        "validAfter": 0,
        "validBefore": int(time.time()) + 600,
        "nonce": secrets.token_bytes(32),
    }
    signed = Account.sign_typed_data(
        PAYER_KEY,
        domain_data={
            "name": "USD Coin",
            "version": "2",
            "chainId": 31337,
            "verifyingContract": token,
        },
        message_types=_TYPES,
        message_data=auth,
    )
    wire = {
        **auth,
        "value": str(auth["value"]),
        "validAfter": "0",
        "validBefore": str(auth["validBefore"]),
        "nonce": "0x" + bytes(auth["nonce"]).hex(),
    }
    body = {
        "x402Version": 2,
        "accepted": accept.model_dump(by_alias=True),
        "payload": {"signature": "0x" + bytes(signed.signature).hex(), "authorization": wire},
    }
    return base64.b64encode(orjson.dumps(body)).decode()


async def exact_settlement(redis_url: str, n: int, concurrency: int = 50) -> dict[str, Any]:
    """Local settlements per second (the worker on the node itself) and RPC requests per
    settlement (a run of its own through the counting pass-through, which would otherwise share
    the benchmark process's CPU with the gate)."""
    node = Anvil()
    node.start()
    try:
        chain = DevChain(node.url)
        token = chain.deploy_eip3009_token()
        chain.mint(token, PAYER, 10**15)
        with CountingProxy(node.url) as proxy:
            counted = max(50, n // 4)
            await _run(redis_url, proxy.url, token, counted, concurrency, "count")
            before = proxy.requests
            await _run(redis_url, proxy.url, token, counted, concurrency, "count", warm=False)
            per_settlement = (proxy.requests - before) / counted
        rate = await _run(redis_url, node.url, token, n, concurrency, "rate")
        return {"exact_settlements_s": rate, "exact_rpc_per_settlement": per_settlement}
    finally:
        node.stop()


async def _run(
    redis_url: str,
    rpc: str,
    token: str,
    n: int,
    concurrency: int,
    name: str,
    *,
    warm: bool = True,
) -> float:
    """One worker process on ``rpc`` settles ``n`` payments: the rate, settlements per second."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "exact.toml"
        config.write_text(_config(redis_url, rpc, token).replace("bench-exact", f"exact-{name}"))
        settings = load_settings(config)
        worker = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "verifier.cli", "worker", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "X402_RELAYER_KEY": RELAYER_KEY},
        )
        gate = await Gate.connect(settings)
        try:
            offers = gate.offers(
                [
                    AcceptSettings(
                        network=NETWORK, asset="USDC", pay_to=PAYEE, amount=1000, scheme="exact"
                    )
                ]
            )

            def headers(count: int) -> list[str]:
                out = []
                for _ in range(count):
                    required = gate.challenge(ResourceInfo(url=RESOURCE), offers)
                    accept = decode_payment_required(encode_json(required)).accepts[0]
                    out.append(_header(accept, token))
                return out

            limit = asyncio.Semaphore(concurrency)

            async def settle(header: str) -> bool:
                async with limit:
                    outcome = await gate.settle(
                        header, resource=RESOURCE, offers=offers, timeout=60
                    )
                return isinstance(outcome, Receipt)

            # Warm up: the worker starts, reads the token's domain, opens its pools.
            warmup = headers(20 if warm else 1)
            deadline = time.monotonic() + 60
            while not all(await asyncio.gather(*(settle(h) for h in warmup))):
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError("the exact benchmark's worker did not settle")
            measured = headers(n)
            start = time.perf_counter()
            done = await asyncio.gather(*(settle(h) for h in measured))
            elapsed = time.perf_counter() - start
            if not all(done):
                raise RuntimeError(f"{done.count(False)} exact payments were not settled")
            return n / elapsed
        finally:
            await gate.close()
            worker.terminate()
            try:
                await asyncio.to_thread(worker.wait, 10)
            except subprocess.TimeoutExpired:
                worker.kill()
