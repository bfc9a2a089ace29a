"""``verifier.middleware`` in front of an existing FastAPI app (``examples/fastapi_app.py``),
over HTTP, with a real Redis, a real worker and real payments on anvil."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from examples.fastapi_app import UNIT, create_app
from tests.evm_fixtures import NETWORK, PAYEE, PAYER, EvmEnv, evm_settings
from tests.support import SettingsFactory, running_worker, serve
from verifier.models import Accept, PaymentPayload, ProofBody
from verifier.wire import decode_payment_required, decode_payment_response, encode_json


@pytest.fixture
async def shop(evm: EvmEnv, make_settings: SettingsFactory, redis: Any) -> AsyncIterator[str]:
    settings = evm_settings(make_settings, evm, gate={"settle_timeout": 10})
    app = create_app(settings, network=NETWORK, asset="USDC", pay_to=PAYEE)
    async with serve(app) as url, running_worker(settings):
        yield url


def pay(evm: EvmEnv, accept: Accept) -> str:
    tx = evm.chain.token_transfer(
        evm.token, PAYER, PAYEE, int(accept.amount), suffix=bytes.fromhex(accept.extra.memo)
    )
    body = ProofBody(nonce=accept.extra.nonce, tx_hash=tx)
    return encode_json(PaymentPayload(accepted=accept, payload=body))


async def challenge(client: httpx.AsyncClient, url: str) -> Accept:
    unpaid = await client.get(url)
    assert unpaid.status_code == 402, unpaid.text
    return decode_payment_required(unpaid.headers["PAYMENT-REQUIRED"]).accepts[0]


async def test_free_paths_pass_through_and_paid_ones_ask_for_payment(shop: str) -> None:
    async with httpx.AsyncClient() as client:
        free = await client.get(shop + "/health")
        unpaid = await client.get(shop + "/report")
    async with httpx.AsyncClient() as client:
        other_method = await client.put(shop + "/report")  # every method of a paid path pays
    assert other_method.status_code == 402
    assert free.status_code == 200 and free.json() == {"status": "ok"}
    assert "PAYMENT-REQUIRED" not in free.headers
    assert unpaid.status_code == 402 and unpaid.headers["x-trace-id"]
    [accept] = decode_payment_required(unpaid.headers["PAYMENT-REQUIRED"]).accepts
    assert accept.amount == "10000"


async def test_a_priced_request_is_served_once_paid_with_the_receipt(
    shop: str, evm: EvmEnv
) -> None:
    url = shop + "/rows?rows=3"
    async with httpx.AsyncClient(timeout=20) as client:
        accept = await challenge(client, url)
        assert accept.amount == str(3 * UNIT)  # the price follows the request
        proof = pay(evm, accept)
        paid = await client.get(url, headers={"PAYMENT-SIGNATURE": proof})
        again = await client.get(url, headers={"PAYMENT-SIGNATURE": proof})
    assert paid.status_code == 200, paid.text
    assert paid.json() == {"rows": [0, 1, 2], "paid": str(3 * UNIT)}
    receipt = decode_payment_response(paid.headers["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.amount == str(3 * UNIT)
    assert again.status_code == 200 and again.content == paid.content  # the replay, stored


async def test_a_proof_for_a_cheaper_request_does_not_buy_a_dearer_one(
    shop: str, evm: EvmEnv
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        accept = await challenge(client, shop + "/rows?rows=1")
        proof = pay(evm, accept)  # paid for 1 row ...
        taken = await client.get(shop + "/rows?rows=1000", headers={"PAYMENT-SIGNATURE": proof})
        too_many = await client.get(shop + "/rows?rows=1001")
        garbage = await client.get(shop + "/rows?rows=abc")
    assert taken.status_code == 402, taken.text  # ... and refused for 1,000
    refused = decode_payment_response(taken.headers["PAYMENT-RESPONSE"])
    assert not refused.success
    assert "rows" not in taken.json() and taken.json()["x402Version"] == 2  # a fresh 402
    assert too_many.status_code == 400 and "above the cap" in too_many.json()["error"]
    assert garbage.status_code == 400 and "cannot be priced" in garbage.json()["error"]


# -- require_payment: a paid route without the middleware ------------------------------------


async def test_a_dependency_paid_route_asks_then_serves_one_call_per_payment(
    shop: str, evm: EvmEnv
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        unpaid = await client.get(shop + "/quote")
        assert unpaid.status_code == 402, unpaid.text
        assert unpaid.json()["x402Version"] == 2  # the gate's own body (payment_error_handler)
        [accept] = decode_payment_required(unpaid.headers["PAYMENT-REQUIRED"]).accepts
        proof = pay(evm, accept)
        paid = await client.get(shop + "/quote", headers={"PAYMENT-SIGNATURE": proof})
        again = await client.get(shop + "/quote", headers={"PAYMENT-SIGNATURE": proof})
    assert paid.status_code == 200, paid.text
    assert paid.json() == {"quote": 42, "paid_by": PAYER.lower()}
    receipt = decode_payment_response(paid.headers["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.amount == accept.amount
    assert again.status_code == 402  # one payment, one call
    refused = decode_payment_response(again.headers["PAYMENT-RESPONSE"])
    assert not refused.success and refused.error_reason == "payment_already_redeemed"


async def test_a_dependency_refuses_a_proof_of_another_route_or_no_payment(
    shop: str, evm: EvmEnv
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        cheap = await challenge(client, shop + "/rows?rows=1")
        elsewhere = await client.get(
            shop + "/quote", headers={"PAYMENT-SIGNATURE": pay(evm, cheap)}
        )
        accept = await challenge(client, shop + "/quote")
        body = ProofBody(nonce=accept.extra.nonce, tx_hash="0x" + "ab" * 32)  # never sent
        unpaid = encode_json(PaymentPayload(accepted=accept, payload=body))
        nothing = await client.get(shop + "/quote", headers={"PAYMENT-SIGNATURE": unpaid})
    for answer in (elsewhere, nothing):
        assert answer.status_code == 402, answer.text
        assert "quote" not in answer.json()
        assert not decode_payment_response(answer.headers["PAYMENT-RESPONSE"]).success


async def test_a_handler_that_fails_gives_the_payment_back(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Any
) -> None:
    from fastapi import Depends, FastAPI

    from verifier.gate import Gate
    from verifier.middleware import PaymentRequiredError, payment_error_handler, require_payment
    from verifier.models import Receipt
    from verifier.settings import AcceptSettings

    settings = evm_settings(make_settings, evm, gate={"settle_timeout": 10})
    gate = await Gate.connect(settings)
    fixed = [AcceptSettings(network=NETWORK, asset="USDC", pay_to=PAYEE, price="0.01")]
    calls: list[str] = []
    app = FastAPI()
    app.add_exception_handler(PaymentRequiredError, payment_error_handler)

    paid = require_payment(fixed, gate=gate)

    @app.get("/flaky")
    async def flaky(receipt: Receipt = Depends(paid)) -> dict[str, str]:  # noqa: B008
        calls.append(receipt.transaction)
        if len(calls) == 1:
            raise RuntimeError("the database is down")
        return {"ok": receipt.transaction}

    try:
        async with (
            serve(app) as url,
            running_worker(settings),
            httpx.AsyncClient(timeout=20) as client,
        ):
            proof = pay(evm, await challenge(client, url + "/flaky"))
            failed = await client.get(url + "/flaky", headers={"PAYMENT-SIGNATURE": proof})
            retried = await client.get(url + "/flaky", headers={"PAYMENT-SIGNATURE": proof})
            third = await client.get(url + "/flaky", headers={"PAYMENT-SIGNATURE": proof})
    finally:
        await gate.close()
    assert failed.status_code == 500
    assert retried.status_code == 200 and retried.json() == {"ok": calls[0]}
    assert third.status_code == 402  # served once: redeemed now
    assert len(calls) == 2 and calls[0] == calls[1]
