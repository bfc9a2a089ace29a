"""What one payment buys, over HTTP: one delivery (replayed for a short window), or re-access for
a stated period. Real Redis, worker and anvil; the upstream is a local server that counts calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from devchain.redis_server import free_port
from tests.evm_fixtures import NETWORK, PAYEE, PAYER, EvmEnv, evm_settings
from tests.support import SettingsFactory, running_worker, serve
from verifier.asgi import create_app
from verifier.challenge import Terms
from verifier.models import Failure, PaymentPayload, ProofBody, ReasonCode, Receipt
from verifier.queue import job_key
from verifier.store import Keys
from verifier.wire import (
    decode_payment_payload,
    decode_payment_required,
    decode_payment_response,
    encode_json,
)

BIG = "x" * 5000


class Upstream:
    """The service behind the gate; ``calls`` counts every request that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/data", self.data, methods=["GET", "POST"]),
                Route("/slow", self.slow),
                Route("/flaky", self.flaky),
                Route("/big", self.big),
            ]
        )

    async def data(self, request: Request) -> Response:
        self.calls += 1
        body = {"call": self.calls, "query": request.url.query}
        return JSONResponse(body, headers={"x-upstream": "yes"})

    async def slow(self, request: Request) -> Response:
        self.calls += 1
        await asyncio.sleep(0.5)
        return JSONResponse({"call": self.calls})

    async def flaky(self, request: Request) -> Response:
        self.calls += 1
        if self.calls == 1:
            return PlainTextResponse("boom", status_code=500)
        return JSONResponse({"call": self.calls})

    async def big(self, request: Request) -> Response:
        self.calls += 1
        return PlainTextResponse(BIG)


@dataclass
class Shop:
    url: str
    upstream: Upstream
    evm: EvmEnv
    client: httpx.AsyncClient

    async def buy(self, path: str) -> str:
        """Pay for ``path`` on the chain: the proof header, not yet sent."""
        first = await self.client.get(self.url + path)
        assert first.status_code == 402
        accept = decode_payment_required(first.headers["PAYMENT-REQUIRED"]).accepts[0]
        tx = self.evm.chain.token_transfer(
            self.evm.token,
            PAYER,
            PAYEE,
            int(accept.amount),
            suffix=bytes.fromhex(accept.extra.memo),
        )
        body = ProofBody(nonce=accept.extra.nonce, tx_hash=tx)
        return encode_json(PaymentPayload(accepted=accept, payload=body))

    async def get(self, path: str, proof: str) -> httpx.Response:
        return await self.client.get(self.url + path, headers={"PAYMENT-SIGNATURE": proof})


@pytest.fixture
async def shop(evm: EvmEnv, make_settings: SettingsFactory, redis: Any) -> AsyncIterator[Shop]:
    upstream = Upstream()
    async with serve(upstream.app()) as up:
        accepts = [{"network": NETWORK, "asset": "USDC", "pay_to": PAYEE, "price": "0.01"}]
        routes: list[dict[str, Any]] = [
            {"path": "/once", "upstream": f"{up}/data"},
            {"path": "/slow", "upstream": f"{up}/slow"},
            {"path": "/flaky", "upstream": f"{up}/flaky"},
            {"path": "/down", "upstream": f"http://127.0.0.1:{free_port()}/gone"},
            {"path": "/big", "upstream": f"{up}/big", "max_stored_response_bytes": 1000},
            {"path": "/short", "upstream": f"{up}/data", "replay_window": 1},
            {"path": "/static", "body": '{"report": 42}', "replay_window": 1},
            {
                "path": "/article",
                "upstream": f"{up}/data",
                "delivery": "entitlement",
                "access_period": 2,
            },
        ]
        settings = evm_settings(
            make_settings,
            evm,
            gate={"settle_timeout": 5, "upstream_timeout": 5},
            routes=[{**r, "accepts": accepts} for r in routes],
        )
        async with (
            serve(create_app(settings)) as url,
            running_worker(settings),
            httpx.AsyncClient(timeout=30) as client,
        ):
            yield Shop(url, upstream, evm, client)


def redeemed(reply: httpx.Response) -> bool:
    """A final 402 that says this payment has had what it bought."""
    fail = decode_payment_response(reply.headers["PAYMENT-RESPONSE"])
    fresh = decode_payment_required(reply.headers["PAYMENT-REQUIRED"])
    return (
        reply.status_code == 402
        and isinstance(fail, Failure)
        and fail.error_reason is ReasonCode.PAYMENT_ALREADY_REDEEMED
        and not fail.transient
        and fresh.error == "payment_already_redeemed"
    )


async def test_same_proof_within_the_window_gets_the_same_response(shop: Shop) -> None:
    proof = await shop.buy("/once")
    first = await shop.get("/once?city=paris", proof)
    again = await shop.get("/once?city=rome", proof)  # a replay, not a second request upstream
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json() == {"call": 1, "query": "city=paris"}
    assert again.headers["x-upstream"] == "yes"
    assert isinstance(decode_payment_response(again.headers["PAYMENT-RESPONSE"]), Receipt)
    assert again.headers["PAYMENT-RESPONSE"] == first.headers["PAYMENT-RESPONSE"]
    assert shop.upstream.calls == 1


async def test_concurrent_copies_wait_for_the_first_delivery(shop: Shop) -> None:
    proof = await shop.buy("/slow")
    replies = await asyncio.gather(*(shop.get("/slow", proof) for _ in range(20)))
    assert [r.status_code for r in replies] == [200] * 20, replies[0].text
    assert {r.text for r in replies} == {'{"call":1}'}
    assert shop.upstream.calls == 1


async def test_a_lease_left_by_a_dead_gate_expires(shop: Shop, redis: Redis) -> None:
    proof = await shop.buy("/once")
    tx = decode_payment_payload(proof).proof.tx_hash.lower()
    lease = Keys("x402").delivery_lease(f"{NETWORK}:{tx}", "/once")
    await redis.set(lease, "a gate that died mid-delivery", px=1500)
    started = time.monotonic()
    reply = await shop.get("/once", proof)
    assert reply.status_code == 200 and reply.json()["call"] == 1
    assert time.monotonic() - started > 1.0  # it waited for the lease, then delivered itself
    assert shop.upstream.calls == 1


async def test_upstream_failure_does_not_consume_the_payment(shop: Shop) -> None:
    proof = await shop.buy("/flaky")
    failed = await shop.get("/flaky", proof)
    assert failed.status_code == 502 and failed.headers["Retry-After"] == "2"
    assert isinstance(decode_payment_response(failed.headers["PAYMENT-RESPONSE"]), Receipt)
    assert "boom" not in failed.text  # the upstream's error page stays behind the gate
    retried = await shop.get("/flaky", proof)
    assert retried.status_code == 200 and retried.json() == {"call": 2}
    again = await shop.get("/flaky", proof)
    assert again.json() == {"call": 2}
    assert shop.upstream.calls == 2


async def test_unreachable_upstream_does_not_consume_the_payment(shop: Shop) -> None:
    proof = await shop.buy("/down")
    for _ in range(2):
        down = await shop.get("/down", proof)
        assert down.status_code == 502 and down.headers["Retry-After"] == "2"
        assert isinstance(decode_payment_response(down.headers["PAYMENT-RESPONSE"]), Receipt)


@pytest.mark.parametrize(("path", "upstream_calls"), [("/short", 1), ("/static", 0)])
async def test_after_the_window_the_payment_is_redeemed(
    shop: Shop, path: str, upstream_calls: int
) -> None:
    proof = await shop.buy(path)
    first = await shop.get(path, proof)
    assert first.status_code == 200, first.text
    assert (await shop.get(path, proof)).text == first.text
    await asyncio.sleep(1.2)  # replay_window = 1
    late = await shop.get(path, proof)
    assert redeemed(late), late.headers
    assert shop.upstream.calls == upstream_calls


async def test_a_response_too_large_to_store_is_delivered_once(shop: Shop) -> None:
    proof = await shop.buy("/big")
    first = await shop.get("/big", proof)
    assert first.status_code == 200 and first.text == BIG
    again = await shop.get("/big", proof)
    assert again.status_code == 409, again.text
    assert "max_stored_response_bytes" in again.json()["error"]
    assert isinstance(decode_payment_response(again.headers["PAYMENT-RESPONSE"]), Receipt)
    assert shop.upstream.calls == 1


async def test_entitlement_grants_access_for_its_period(shop: Shop) -> None:
    proof = await shop.buy("/article")
    first = await shop.get("/article", proof)
    second = await shop.get("/article", proof)
    assert (first.status_code, second.status_code) == (200, 200), first.text
    assert (first.json()["call"], second.json()["call"]) == (1, 2)  # each access is served anew
    await asyncio.sleep(2.2)  # access_period = 2, from the first delivery
    late = await shop.get("/article", proof)
    assert redeemed(late), late.headers
    assert shop.upstream.calls == 2


async def test_unexpected_error_while_settling_is_a_503(shop: Shop, redis: Redis) -> None:
    first = await shop.client.get(shop.url + "/once")
    accept = decode_payment_required(first.headers["PAYMENT-REQUIRED"]).accepts[0]
    tx = "0x" + "42" * 32
    proof = encode_json(
        PaymentPayload(accepted=accept, payload=ProofBody(nonce=accept.extra.nonce, tx_hash=tx))
    )
    resource = decode_payment_required(first.headers["PAYMENT-REQUIRED"]).resource.url
    job = job_key(accept.extra.nonce, tx, None, Terms.of(accept, resource).canonical())
    await redis.set(Keys("x402").outcome(job), b"{corrupt")
    reply = await shop.get("/once", proof)
    assert reply.status_code == 503 and reply.headers["Retry-After"] == "2"
    assert shop.upstream.calls == 0


async def test_unexpected_error_while_delivering_is_a_503(shop: Shop, redis: Redis) -> None:
    proof = await shop.buy("/once")
    first = await shop.get("/once", proof)
    receipt = decode_payment_response(first.headers["PAYMENT-RESPONSE"])
    assert isinstance(receipt, Receipt)
    key = Keys("x402").delivery_replay(
        receipt.extensions["onchain-proof"]["consumptionKey"], "/once"
    )
    # redis-py types its commands for the sync and the async client at once
    await redis.hset(key, "status", "not a number")  # type: ignore[misc]
    reply = await shop.get("/once", proof)
    assert reply.status_code == 503 and reply.headers["Retry-After"] == "2"
    assert reply.headers["PAYMENT-RESPONSE"] == first.headers["PAYMENT-RESPONSE"]
    assert shop.upstream.calls == 1
