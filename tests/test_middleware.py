"""``verifier.middleware`` in front of an existing FastAPI app (``examples/fastapi_app.py``),
over HTTP, with a real Redis, a real worker and real payments on anvil."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from devchain.redis_server import RedisServer
from examples.fastapi_app import UNIT, create_app, rows_price
from tests.evm_fixtures import NETWORK, PAYEE, PAYER, EvmEnv, evm_settings
from tests.support import SettingsFactory, connected_gate, running_worker, serve
from verifier.middleware import PaymentRequiredError, payment_error_handler, require_payment
from verifier.models import Accept, Failure, PaymentPayload, ProofBody, Receipt
from verifier.settings import AcceptSettings
from verifier.wire import (
    decode_payment_required,
    decode_payment_response,
    encode_json,
    response_headers,
)


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


@dataclass
class DependencyShop:
    """An app whose routes are paid by ``require_payment`` alone (no middleware)."""

    url: str
    calls: list[str]  # the transactions of the handler calls made
    entered: asyncio.Event  # /slow's handler is running ...
    release: asyncio.Event  # ... until this is set


@pytest.fixture
async def dependency_shop(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Any
) -> AsyncIterator[DependencyShop]:
    settings = evm_settings(make_settings, evm, gate={"settle_timeout": 10})
    fixed = [AcceptSettings(network=NETWORK, asset="USDC", pay_to=PAYEE, price="0.01")]
    per_row = [AcceptSettings(network=NETWORK, asset="USDC", pay_to=PAYEE, amount=UNIT)]
    async with connected_gate(settings) as gate:
        paid = require_payment(fixed, gate=gate)
        priced = require_payment(per_row, gate=gate, price=rows_price, max_amount=10 * UNIT)
        access = require_payment(fixed, gate=gate, delivery="entitlement", access_period=1)
        shop = DependencyShop("", [], asyncio.Event(), asyncio.Event())
        app = FastAPI()
        app.add_exception_handler(PaymentRequiredError, payment_error_handler)

        @app.get("/slow")
        async def slow(receipt: Receipt = Depends(paid)) -> dict[str, str]:  # noqa: B008
            shop.calls.append(receipt.transaction)
            shop.entered.set()
            await shop.release.wait()
            return {"tx": receipt.transaction}

        @app.get("/typed")
        async def typed(n: int, receipt: Receipt = Depends(paid)) -> dict[str, int]:  # noqa: B008
            shop.calls.append(receipt.transaction)
            return {"n": n}

        @app.get("/rows")
        async def rows(rows: int, receipt: Receipt = Depends(priced)) -> dict[str, object]:  # noqa: B008
            return {"rows": list(range(rows)), "paid": receipt.amount}

        @app.get("/pass")
        async def pass_(receipt: Receipt = Depends(access)) -> dict[str, str]:  # noqa: B008
            shop.calls.append(receipt.transaction)
            return {"tx": receipt.transaction}

        @app.get("/own")
        async def own(receipt: Receipt = Depends(paid)) -> JSONResponse:  # noqa: B008
            return JSONResponse({"tx": receipt.transaction}, headers=response_headers(receipt))

        @app.get("/bare")
        async def bare(receipt: Receipt = Depends(paid)) -> JSONResponse:  # noqa: B008
            return JSONResponse({"tx": receipt.transaction})

        async with serve(app) as url, running_worker(settings):
            shop.url = url
            yield shop


async def paid_get(client: httpx.AsyncClient, url: str, proof: str) -> httpx.Response:
    return await client.get(url, headers={"PAYMENT-SIGNATURE": proof})


async def test_a_copy_of_the_proof_during_the_first_call_is_told_to_retry(
    dependency_shop: DependencyShop, evm: EvmEnv
) -> None:
    url = dependency_shop.url + "/slow"
    async with httpx.AsyncClient(timeout=20) as client:
        proof = pay(evm, await challenge(client, url))
        first = asyncio.create_task(paid_get(client, url, proof))
        await asyncio.wait_for(dependency_shop.entered.wait(), 20)
        copy = await paid_get(client, url, proof)  # the first call has not answered yet
        dependency_shop.release.set()
        done = await first
        after = await paid_get(client, url, proof)
        for _ in range(20):  # the first call's end is recorded just after its answer is sent
            if after.status_code != 503:
                break
            await asyncio.sleep(0.05)
            after = await paid_get(client, url, proof)
    assert done.status_code == 200 and done.json() == {"tx": dependency_shop.calls[0]}
    assert copy.status_code == 503 and copy.headers["Retry-After"] == "2"
    assert "in progress" in copy.json()["error"]
    assert decode_payment_response(copy.headers["PAYMENT-RESPONSE"]).success  # it is paid
    assert after.status_code == 402  # the call was made: the payment is spent
    refused = decode_payment_response(after.headers["PAYMENT-RESPONSE"])
    assert not refused.success and refused.error_reason == "payment_already_redeemed"
    assert len(dependency_shop.calls) == 1


async def test_a_request_fastapi_refuses_gives_the_payment_back(
    dependency_shop: DependencyShop, evm: EvmEnv
) -> None:
    url = dependency_shop.url + "/typed?n=many"
    async with httpx.AsyncClient(timeout=20) as client:
        proof = pay(evm, await challenge(client, url))
        refused = [await paid_get(client, url, proof) for _ in range(2)]
    # 422 both times: the first did not spend the payment (else the second would be a 402).
    assert [r.status_code for r in refused] == [422, 422]
    assert dependency_shop.calls == []


async def test_a_dependency_prices_each_request_and_caps_it(
    dependency_shop: DependencyShop, evm: EvmEnv
) -> None:
    base = dependency_shop.url + "/rows"
    async with httpx.AsyncClient(timeout=20) as client:
        two = await challenge(client, base + "?rows=2")
        one = await challenge(client, base + "?rows=1")
        taken = await paid_get(client, base + "?rows=10", pay(evm, one))  # paid for 1 row
        served = await paid_get(client, base + "?rows=2", pay(evm, two))
        too_many = await client.get(base + "?rows=11")
        garbage = await client.get(base + "?rows=abc")
    assert two.amount == str(2 * UNIT) and one.amount == str(UNIT)
    assert taken.status_code == 402 and "rows" not in taken.json()
    assert not decode_payment_response(taken.headers["PAYMENT-RESPONSE"]).success
    assert served.status_code == 200 and served.json() == {"rows": [0, 1], "paid": str(2 * UNIT)}
    receipt = decode_payment_response(served.headers["PAYMENT-RESPONSE"])
    assert isinstance(receipt, Receipt) and receipt.amount == str(2 * UNIT)
    assert too_many.status_code == 400 and "above the cap" in too_many.json()["error"]
    assert garbage.status_code == 400 and "cannot be priced" in garbage.json()["error"]


async def test_an_entitlement_serves_every_call_until_its_period_ends(
    dependency_shop: DependencyShop, evm: EvmEnv
) -> None:
    url = dependency_shop.url + "/pass"
    async with httpx.AsyncClient(timeout=20) as client:
        proof = pay(evm, await challenge(client, url))
        within = [await paid_get(client, url, proof) for _ in range(3)]
        await asyncio.sleep(2.1)  # access_period=1, counted in whole seconds
        ended = await paid_get(client, url, proof)
    assert [r.status_code for r in within] == [200] * 3 and len(dependency_shop.calls) == 3
    assert ended.status_code == 402
    refused = decode_payment_response(ended.headers["PAYMENT-RESPONSE"])
    assert isinstance(refused, Failure) and refused.error_reason == "payment_already_redeemed"
    assert refused.error_message == "the access period this payment bought has ended"


async def test_a_handler_returning_its_own_response_sets_the_payment_headers(
    dependency_shop: DependencyShop, evm: EvmEnv
) -> None:
    own, bare = dependency_shop.url + "/own", dependency_shop.url + "/bare"
    async with httpx.AsyncClient(timeout=20) as client:
        with_headers = await paid_get(client, own, pay(evm, await challenge(client, own)))
        without = await paid_get(client, bare, pay(evm, await challenge(client, bare)))
    assert with_headers.status_code == 200 and without.status_code == 200
    receipt = decode_payment_response(with_headers.headers["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.transaction == with_headers.json()["tx"]
    # What the README says: FastAPI drops a dependency's headers from a Response returned as is.
    assert "PAYMENT-RESPONSE" not in without.headers


async def test_a_dependency_answers_503_when_redis_is_down(
    evm: EvmEnv, make_settings: SettingsFactory
) -> None:
    own_redis = RedisServer().start()
    settings = evm_settings(make_settings, evm, redis_url=own_redis.url)
    fixed = [AcceptSettings(network=NETWORK, asset="USDC", pay_to=PAYEE, price="0.01")]
    paid = require_payment(fixed, settings=settings)
    app = FastAPI()
    app.add_exception_handler(PaymentRequiredError, payment_error_handler)

    @app.get("/quote")
    async def quote(receipt: Receipt = Depends(paid)) -> dict[str, str]:  # noqa: B008
        return {"tx": receipt.transaction}

    try:
        async with serve(app) as url, httpx.AsyncClient(timeout=20) as client:
            accept = await challenge(client, url + "/quote")  # connects the gate
            own_redis.stop()
            down = await paid_get(client, url + "/quote", pay(evm, accept))
            unpaid = await client.get(url + "/quote")
    finally:
        await paid.aclose()
        own_redis.stop()
    assert down.status_code == 503 and down.headers["Retry-After"] == "2"
    assert down.json() == {"error": "verification store unavailable, retry the same proof"}
    assert unpaid.status_code == 402  # a challenge needs no Redis
