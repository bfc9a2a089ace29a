"""A resource server built on the reference x402 middleware, with our facilitator endpoint as
its facilitator: the reference package's FastAPI ``PaymentMiddlewareASGI`` and its
``HTTPFacilitatorClient`` aimed at ``x402-verifier facilitator`` (a process of its own, started
from a configuration file as the README says), our worker settling on anvil, and the reference
client paying.

``exact`` needs nothing of ours on the resource server. ``onchain-proof`` needs our scheme
server for the reference SDK (``verifier.reference``) there, and a client that pays on chain
itself: the small scheme client below, which sends the ERC-20 transfer with the memo and
answers with its hash, registered in the reference ``x402Client``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from fastapi import FastAPI
from x402 import x402Client, x402ResourceServer
from x402.http import FacilitatorConfig, HTTPFacilitatorClient
from x402.http.clients.httpx import x402AsyncTransport
from x402.http.facilitator_client_base import CreateHeadersAuthProvider
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.http.types import PaymentOption, RouteConfig
from x402.mechanisms.evm.exact import ExactEvmServerScheme, register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import AssetAmount, PaymentRequirements

from devchain.service import free_port
from tests.evm_fixtures import NETWORK, PAYEE
from tests.exact_fixtures import (
    PAYER,
    PAYER_KEY,
    PRICE,
    RELAYER_KEY,
    TOKEN_NAME,
    TOKEN_VERSION,
    ExactEnv,
    exact_env,
)
from tests.support import KEY, serve
from verifier.reference import OnchainProofServerScheme
from verifier.settings import Settings, load_settings
from verifier.testing import running_worker

__all__ = ["exact_env"]  # a fixture

TOKEN = "reference-middleware-t0ken"
CONFIG = """
redis_url = "{redis}"

[challenge]
active = "k1"
keys = {{ k1 = "{key}" }}

[worker]
retry_base = 0.2
retry_max = 0.5

[facilitator]
port = {port}
settle_timeout = 20
replay_window = 2

[networks."{network}"]
rpc_urls = ["{rpc}"]
head_cache_seconds = 0

[networks."{network}".settlement]
mode = "local"

[[assets]]
network = "{network}"
symbol = "USDC"
asset = "{token}"
decimals = 6
eip712_name = "{name}"
eip712_version = "{version}"
"""


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    facilitator_url: str
    env: ExactEnv


@pytest.fixture
def deployment(
    exact_env: ExactEnv, redis_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    port = free_port()
    config = tmp_path / "verifier.toml"
    config.write_text(
        CONFIG.format(
            redis=redis_server.url,
            key=KEY,
            port=port,
            network=NETWORK,
            rpc=exact_env.evm.anvil.url,
            token=exact_env.token,
            name=TOKEN_NAME,
            version=TOKEN_VERSION,
        )
    )
    monkeypatch.setenv("X402_API_TOKEN", TOKEN)
    monkeypatch.setenv("X402_RELAYER_KEY", RELAYER_KEY)  # the worker's, below
    process = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "facilitator", "--config", str(config)],
        env={**os.environ, "X402_API_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the facilitator did not start"
            time.sleep(0.1)
        yield Deployment(load_settings(config), url, exact_env)
    finally:
        process.terminate()
        process.wait(timeout=15)


class OnchainProofClient:
    """The client side of onchain-proof for the reference ``x402Client`` (tests only): pay the
    requirements on the local chain with the memo in the calldata, answer with the hash."""

    scheme = "onchain-proof"

    def __init__(self, env: ExactEnv) -> None:
        self.env = env
        self.paid: list[str] = []

    def create_payment_payload(self, requirements: PaymentRequirements) -> dict[str, Any]:
        extra = requirements.extra
        tx = self.env.chain.token_transfer(
            requirements.asset,
            PAYER,
            requirements.pay_to,
            int(requirements.amount),
            suffix=bytes.fromhex(extra["memo"]),
        )
        self.paid.append(tx)
        return {"nonce": extra["nonce"], "txHash": tx}


def reference_server(deployment: Deployment) -> x402ResourceServer:
    auth = CreateHeadersAuthProvider(
        lambda: {k: {"Authorization": f"Bearer {TOKEN}"} for k in ("verify", "settle", "supported")}
    )
    facilitator = HTTPFacilitatorClient(
        FacilitatorConfig(url=deployment.facilitator_url, auth_provider=auth, timeout=60)
    )
    server = x402ResourceServer(facilitator)
    # The reference scheme's own annotations do not meet its protocol's (mypy says so).
    server.register(NETWORK, ExactEvmServerScheme())  # type: ignore[no-untyped-call, arg-type]
    server.register(NETWORK, OnchainProofServerScheme(deployment.settings))
    return server


def shop(deployment: Deployment) -> FastAPI:
    """A FastAPI app of the reference kind: three paid routes at one price."""
    token = deployment.env.token
    price = AssetAmount(
        amount=str(PRICE), asset=token, extra={"name": TOKEN_NAME, "version": TOKEN_VERSION}
    )

    def proof_route(route: str) -> RouteConfig:
        return RouteConfig(
            accepts=PaymentOption(
                scheme="onchain-proof",
                network=NETWORK,
                pay_to=PAYEE,
                price=AssetAmount(amount=str(PRICE), asset=token),
                extra={"route": route},
            ),
            description=f"report via {route}",
        )

    routes = {
        "GET /exact": RouteConfig(
            accepts=PaymentOption(scheme="exact", network=NETWORK, pay_to=PAYEE, price=price),
            description="a report",
        ),
        "GET /proof": proof_route("/proof"),
        "GET /other": proof_route("/other"),
    }
    app = FastAPI()

    @app.get("/exact")
    async def exact() -> dict[str, str]:
        return {"report": "exact"}

    @app.get("/proof")
    async def proof() -> dict[str, str]:
        return {"report": "proof"}

    @app.get("/other")
    async def other() -> dict[str, str]:
        return {"report": "other"}

    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=reference_server(deployment))
    return app


@pytest.fixture
async def served(deployment: Deployment) -> AsyncIterator[str]:
    async with serve(shop(deployment)) as url, running_worker(deployment.settings):
        yield url


class Recording(httpx.AsyncHTTPTransport):
    """The network under the reference client's payment transport: notes what it pays with."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "payment-signature" in request.headers:
            self.sent.append(request.headers["payment-signature"])
        return await super().handle_async_request(request)


def paying_client(
    env: ExactEnv, proof: OnchainProofClient | None = None, wire: Recording | None = None
) -> httpx.AsyncClient:
    """The reference client (``x402Client`` in its httpx payment transport)."""
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(PAYER_KEY)))
    if proof is not None:
        client.register(NETWORK, proof)
    client.set_spend_controls({"allowed_assets": True})
    return httpx.AsyncClient(transport=x402AsyncTransport(client, wire), timeout=60)


def settle_response(response: httpx.Response) -> dict[str, Any]:
    raw = response.headers.get("PAYMENT-RESPONSE") or response.headers["X-PAYMENT-RESPONSE"]
    decoded: dict[str, Any] = json.loads(base64.b64decode(raw))
    return decoded


async def test_the_reference_middleware_settles_exact_through_our_endpoint(
    served: str, deployment: Deployment
) -> None:
    env = deployment.env
    before, sent = env.balance(PAYEE), env.relayer_count()
    async with httpx.AsyncClient() as plain:
        unpaid = await plain.get(served + "/exact")
    assert unpaid.status_code == 402
    async with paying_client(env) as http:
        paid = await http.get(served + "/exact")
    assert paid.status_code == 200, (paid.status_code, paid.text)
    assert paid.json() == {"report": "exact"}
    settled = settle_response(paid)
    assert settled["success"] is True and settled["network"] == NETWORK
    assert settled["payer"] == PAYER.lower()
    assert env.balance(PAYEE) == before + PRICE
    assert env.relayer_count() == sent + 1  # our worker's relayer sent the settlement
    assert env.chain.rpc("eth_getTransactionReceipt", [settled["transaction"]])["status"] == "0x1"


async def test_the_reference_middleware_offers_and_takes_onchain_proof(
    served: str, deployment: Deployment
) -> None:
    env = deployment.env
    async with httpx.AsyncClient() as plain:
        unpaid = await plain.get(served + "/proof")
    assert unpaid.status_code == 402
    required = json.loads(base64.b64decode(unpaid.headers["PAYMENT-REQUIRED"]))
    offer = required["accepts"][0]
    assert offer["scheme"] == "onchain-proof"
    assert offer["extra"]["nonce"].startswith("n1.") and len(offer["extra"]["memo"]) == 64

    before = env.balance(PAYEE)
    proof = OnchainProofClient(env)
    async with paying_client(env, proof) as http:
        paid = await http.get(served + "/proof")
    assert paid.status_code == 200, (paid.status_code, paid.text)
    assert paid.json() == {"report": "proof"}
    settled = settle_response(paid)
    assert settled["success"] is True and settled["transaction"] == proof.paid[0].lower()
    assert env.balance(PAYEE) == before + PRICE


async def test_an_onchain_proof_does_not_pay_another_route_nor_twice(
    served: str, deployment: Deployment
) -> None:
    env = deployment.env
    proof = OnchainProofClient(env)
    wire = Recording()
    async with paying_client(env, proof, wire) as http:
        paid = await http.get(served + "/proof")
    assert paid.status_code == 200, paid.text
    [header] = wire.sent

    async with httpx.AsyncClient(timeout=60) as attacker:
        # The same price, another route: its challenge named /proof.
        elsewhere = await attacker.get(served + "/other", headers={"PAYMENT-SIGNATURE": header})
        assert elsewhere.status_code == 402, elsewhere.text
        assert "report" not in elsewhere.text
        # Edited to name the other route, it matches that route's requirements, but not the
        # challenge's authenticated terms.
        edited = json.loads(base64.b64decode(header))
        edited["accepted"]["extra"]["route"] = "/other"
        forged = base64.b64encode(json.dumps(edited).encode()).decode()
        elsewhere = await attacker.get(served + "/other", headers={"PAYMENT-SIGNATURE": forged})
        assert elsewhere.status_code == 402, elsewhere.text
        assert "report" not in elsewhere.text
        # Within the replay window (a client retrying after a lost response) it is served ...
        again = await attacker.get(served + "/proof", headers={"PAYMENT-SIGNATURE": header})
        assert again.status_code == 200, again.text
        # ... once the window is over, the same proof buys nothing more.
        await asyncio.sleep(2.5)
        replayed = await attacker.get(served + "/proof", headers={"PAYMENT-SIGNATURE": header})
        assert replayed.status_code == 402, replayed.text
        assert "report" not in replayed.text
    assert len(proof.paid) == 1
