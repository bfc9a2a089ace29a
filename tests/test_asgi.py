"""The HTTP gate over real sockets: 402, proof, 200 with receipt, proxying, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.evm_fixtures import NETWORK, PAYEE, PAYER, EvmEnv, evm_settings
from tests.support import SettingsFactory, running_worker, serve
from verifier.asgi import create_app
from verifier.models import Failure, PaymentPayload, ProofBody, ReasonCode, Receipt
from verifier.wire import decode_payment_required, decode_payment_response, encode_json


async def upstream_echo(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "query": request.url.query,
            "saw_payment_header": "payment-signature" in request.headers
            or "x-payment" in request.headers,
            "method": request.method,
        },
        headers={"x-upstream": "yes"},
    )


@pytest.fixture
async def http_gate(evm: EvmEnv, make_settings: SettingsFactory, redis: Any) -> AsyncIterator[str]:
    upstream = Starlette(routes=[Route("/data", upstream_echo, methods=["GET", "POST"])])
    async with serve(upstream) as up:
        accepts = [
            {
                "network": NETWORK,
                "asset": "USDC",
                "pay_to": PAYEE,
                "price": "0.10",
                "min_confirmations": 1,
            }
        ]
        settings = evm_settings(
            make_settings,
            evm,
            gate={"settle_timeout": 5, "public_url": "https://shop.example"},
            routes=[
                {"path": "/report", "body": '{"report": 42}', "accepts": accepts},
                {"path": "/proxied", "upstream": f"{up}/data", "accepts": accepts},
            ],
        )
        async with serve(create_app(settings)) as url, running_worker(settings):
            yield url


async def pay_for(
    client: httpx.AsyncClient,
    url: str,
    chain: Any,
    token: str,
    amount: int | None = None,
    v1: bool = False,
) -> httpx.Response:
    first = await client.get(url)
    assert first.status_code == 402
    required = decode_payment_required(first.headers["PAYMENT-REQUIRED"])
    assert required.model_dump(by_alias=True, exclude_none=True) == first.json()
    accept = required.accepts[0]
    tx = chain.token_transfer(
        token,
        PAYER,
        PAYEE,
        int(accept.amount) if amount is None else amount,
        suffix=bytes.fromhex(accept.extra.memo),
    )
    proof = encode_json(
        PaymentPayload(accepted=accept, payload=ProofBody(nonce=accept.extra.nonce, tx_hash=tx))
    )
    return await client.get(url, headers={"X-PAYMENT" if v1 else "PAYMENT-SIGNATURE": proof})


async def test_unpaid_then_paid(http_gate: str, evm: EvmEnv) -> None:
    url = http_gate
    async with httpx.AsyncClient(timeout=20) as client:
        unpaid = await client.get(f"{url}/report")
        required = decode_payment_required(unpaid.headers["PAYMENT-REQUIRED"])
        assert required.resource.url == "https://shop.example/report"
        assert required.accepts[0].amount == "100000"
        assert required.accepts[0].extra.amount_formatted == "0.10"
        paid = await pay_for(client, f"{url}/report", evm.chain, evm.token)
        assert paid.status_code == 200, paid.text
        assert paid.json() == {"report": 42}
        receipt = decode_payment_response(paid.headers["PAYMENT-RESPONSE"])
        assert isinstance(receipt, Receipt) and receipt.payer == PAYER.lower()
        assert paid.headers["X-PAYMENT-RESPONSE"] == paid.headers["PAYMENT-RESPONSE"]


async def test_v1_header_is_accepted(http_gate: str, evm: EvmEnv) -> None:
    url = http_gate
    async with httpx.AsyncClient(timeout=20) as client:
        paid = await pay_for(client, f"{url}/report", evm.chain, evm.token, v1=True)
        assert paid.status_code == 200


async def test_underpayment_gets_failure_and_fresh_challenge(http_gate: str, evm: EvmEnv) -> None:
    url = http_gate
    async with httpx.AsyncClient(timeout=20) as client:
        refused = await pay_for(client, f"{url}/report", evm.chain, evm.token, amount=5)
        assert refused.status_code == 402
        fail = decode_payment_response(refused.headers["PAYMENT-RESPONSE"])
        assert isinstance(fail, Failure) and fail.error_reason is ReasonCode.AMOUNT_TOO_LOW
        fresh = decode_payment_required(refused.headers["PAYMENT-REQUIRED"])
        assert fresh.error == "amount_too_low" and fresh.accepts[0].extra.nonce


async def test_pending_proof_answers_402_with_retry_after(http_gate: str, evm: EvmEnv) -> None:
    url = http_gate
    async with httpx.AsyncClient(timeout=20) as client:
        first = await client.get(f"{url}/report")
        accept = decode_payment_required(first.headers["PAYMENT-REQUIRED"]).accepts[0]
        proof = encode_json(
            PaymentPayload(
                accepted=accept,
                payload=ProofBody(nonce=accept.extra.nonce, tx_hash="0x" + "77" * 32),
            )
        )
        pending = await client.get(f"{url}/report", headers={"PAYMENT-SIGNATURE": proof})
        assert pending.status_code == 402 and pending.headers["Retry-After"] == "2"
        fail = decode_payment_response(pending.headers["PAYMENT-RESPONSE"])
        assert isinstance(fail, Failure) and fail.transient
        assert fail.error_reason is ReasonCode.TX_NOT_FOUND


async def test_malformed_header_is_a_402_not_a_crash(http_gate: str) -> None:
    url = http_gate
    async with httpx.AsyncClient(timeout=20) as client:
        for bad in ["%%%", "e30=", "x" * 50_000]:
            r = await client.get(f"{url}/report", headers={"PAYMENT-SIGNATURE": bad})
            assert r.status_code == 402
            fail = decode_payment_response(r.headers["PAYMENT-RESPONSE"])
            assert isinstance(fail, Failure) and fail.error_reason is ReasonCode.INVALID_PAYLOAD


async def test_paid_request_is_proxied_upstream(http_gate: str, evm: EvmEnv) -> None:
    url = http_gate
    async with httpx.AsyncClient(timeout=20) as client:
        paid = await pay_for(client, f"{url}/proxied?city=paris", evm.chain, evm.token)
        assert paid.status_code == 200, paid.text
        assert paid.json() == {"query": "city=paris", "saw_payment_header": False, "method": "GET"}
        assert paid.headers["x-upstream"] == "yes"
        assert isinstance(decode_payment_response(paid.headers["PAYMENT-RESPONSE"]), Receipt)


async def test_health(http_gate: str) -> None:
    url = http_gate
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/healthz")).text == "ok\n"


async def test_redis_down_is_a_503_not_a_crash(evm: EvmEnv, make_settings: SettingsFactory) -> None:
    from devchain.redis_server import RedisServer

    own = RedisServer().start()
    accepts = [{"network": NETWORK, "asset": "USDC", "pay_to": PAYEE, "amount": 1000}]
    settings = make_settings(
        redis_url=own.url,
        networks={NETWORK: {"rpc_urls": [evm.anvil.url]}},
        assets=[{"network": NETWORK, "symbol": "USDC", "asset": evm.token, "decimals": 6}],
        routes=[{"path": "/report", "body": "{}", "accepts": accepts}],
    )
    try:
        async with serve(create_app(settings)) as url, httpx.AsyncClient(timeout=20) as client:
            unpaid = await client.get(f"{url}/report")
            accept = decode_payment_required(unpaid.headers["PAYMENT-REQUIRED"]).accepts[0]
            body = ProofBody(nonce=accept.extra.nonce, tx_hash="0x" + "42" * 32)
            proof = encode_json(PaymentPayload(accepted=accept, payload=body))
            own.stop()
            down = await client.get(f"{url}/report", headers={"PAYMENT-SIGNATURE": proof})
            assert down.status_code == 503 and down.headers["Retry-After"] == "2"
            assert (await client.get(f"{url}/report")).status_code == 402  # offers need no Redis
    finally:
        own.stop()
