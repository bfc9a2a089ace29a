"""The facilitator endpoint (``verifier.facilitator_api``) driven over HTTP: real Redis, a real
worker settling on anvil, payloads signed by the reference client's own exact scheme.

What a resource server relies on: ``/verify`` refuses what would not settle and moves nothing;
``/settle`` settles once however often it is sent; every answer needs the token; a client is
rate-limited; a payment for other terms than the route's is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from eth_account import Account
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequirements

from tests.evm_fixtures import NETWORK, PAYEE
from tests.exact_fixtures import (
    PAYER,
    PAYER_KEY,
    POOR_KEY,
    PRICE,
    STRANGER_KEY,
    TOKEN_NAME,
    TOKEN_VERSION,
    ExactEnv,
    exact_env,
    exact_settings,
    relayer_key,
    resign,
)
from tests.support import SettingsFactory, serve
from verifier.facilitator_api import Facilitator, create_facilitator_app
from verifier.settings import Settings
from verifier.testing import running_worker

__all__ = ["exact_env", "relayer_key"]  # fixtures

TOKEN = "f4c1l1t4t0r-t0ken-for-the-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def requirements(env: ExactEnv, **changes: Any) -> dict[str, Any]:
    """What the reference server's ExactEvmScheme builds for a route on the local token."""
    return {
        "scheme": "exact",
        "network": NETWORK,
        "asset": env.token,
        "amount": str(PRICE),
        "payTo": PAYEE,
        "maxTimeoutSeconds": 300,
        "extra": {"name": TOKEN_NAME, "version": TOKEN_VERSION},
        **changes,
    }


def signed(required: dict[str, Any], key: str = PAYER_KEY) -> dict[str, Any]:
    """The reference client's payload for ``required``."""
    scheme = ExactEvmScheme(EthAccountSigner(Account.from_key(key)))
    inner = scheme.create_payment_payload(PaymentRequirements.model_validate(required))
    return {
        "x402Version": 2,
        "accepted": required,
        "payload": dict(inner),
        "resource": {"url": "http://shop.test/report"},
    }


def body(payload: dict[str, Any], required: dict[str, Any]) -> dict[str, Any]:
    return {"x402Version": 2, "paymentPayload": payload, "paymentRequirements": required}


@dataclass
class Endpoint:
    url: str
    http: httpx.AsyncClient
    env: ExactEnv

    async def post(self, path: str, payload: dict[str, Any], required: dict[str, Any]) -> Any:
        answer = await self.http.post(self.url + path, json=body(payload, required), headers=AUTH)
        assert answer.status_code == 200, answer.text
        return answer.json()


def facilitator_settings(
    make_settings: SettingsFactory, env: ExactEnv, **facilitator: Any
) -> Settings:
    return exact_settings(
        make_settings,
        env,
        facilitator={"settle_timeout": 20, **facilitator},
        worker={"retry_base": 0.2, "retry_max": 0.5},
    )


@pytest.fixture
async def endpoint(
    exact_env: ExactEnv,
    make_settings: SettingsFactory,
    relayer_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Endpoint]:
    monkeypatch.setenv("X402_API_TOKEN", TOKEN)
    settings = facilitator_settings(make_settings, exact_env)
    facilitator = await Facilitator.start(settings)
    try:
        async with (
            serve(create_facilitator_app(settings, facilitator)) as url,
            running_worker(settings),
            httpx.AsyncClient(timeout=30) as http,
        ):
            yield Endpoint(url, http, exact_env)
    finally:
        await facilitator.close()


async def test_supported_lists_each_network_with_its_schemes(endpoint: Endpoint) -> None:
    answer = await endpoint.http.get(endpoint.url + "/supported", headers=AUTH)
    assert answer.status_code == 200
    kinds = {(k["x402Version"], k["scheme"], k["network"]) for k in answer.json()["kinds"]}
    assert kinds == {(2, "onchain-proof", NETWORK), (2, "exact", NETWORK)}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-Token": TOKEN}])
async def test_every_endpoint_needs_the_token(endpoint: Endpoint, headers: dict[str, str]) -> None:
    required = requirements(endpoint.env)
    for method, path in (("GET", "/supported"), ("POST", "/verify"), ("POST", "/settle")):
        answer = await endpoint.http.request(
            method, endpoint.url + path, json=body(signed(required), required), headers=headers
        )
        assert answer.status_code == 401, (path, answer.text)
        assert answer.headers["www-authenticate"] == "Bearer"
    assert (await endpoint.http.get(endpoint.url + "/healthz")).status_code == 200


async def test_no_token_configured_refuses_everyone(
    exact_env: ExactEnv, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("X402_API_TOKEN", raising=False)
    settings = facilitator_settings(make_settings, exact_env)
    facilitator = await Facilitator.start(settings)
    try:
        async with serve(create_facilitator_app(settings, facilitator)) as url:
            answer = await httpx.AsyncClient().get(url + "/supported", headers=AUTH)
        assert answer.status_code == 401
    finally:
        await facilitator.close()


async def test_verify_then_settle_pays_once_and_answers_a_retry(endpoint: Endpoint) -> None:
    env = endpoint.env
    required = requirements(env)
    payload = signed(required)
    before, sent = env.balance(PAYEE), env.relayer_count()

    verified = await endpoint.post("/verify", payload, required)
    assert verified == {"isValid": True, "payer": PAYER.lower()}
    assert env.balance(PAYEE) == before  # /verify moves nothing
    assert env.relayer_count() == sent

    first = await endpoint.post("/settle", payload, required)
    assert first["success"] is True, first
    assert first["network"] == NETWORK and first["payer"] == PAYER.lower()
    assert first["amount"] == str(PRICE)
    # A retry (the response to the client was lost): it verifies and settles again, the same
    # settlement, nothing sent twice.
    assert (await endpoint.post("/verify", payload, required))["isValid"] is True
    retry = await endpoint.post("/settle", payload, required)
    assert retry["success"] is True and retry["transaction"] == first["transaction"]
    assert env.balance(PAYEE) == before + PRICE
    assert env.relayer_count() == sent + 1
    # One retry is all a payment buys (facilitator.max_replays = 1).
    for path in ("/verify", "/settle"):
        third = await endpoint.post(path, payload, required)
        assert third.get("invalidReason", third.get("errorReason")) == "payment_already_redeemed"


async def test_concurrent_replays_of_one_payment_settle_at_most_once_plus_the_retry(
    endpoint: Endpoint,
) -> None:
    """One payment sent ten times at once, before any settlement: every /verify passes (the
    handlers run), but only the first settlement and one retry succeed, so the reference
    middleware releases two responses, not ten."""
    env = endpoint.env
    required = requirements(env)
    payload = signed(required)
    before, sent = env.balance(PAYEE), env.relayer_count()
    verified = await asyncio.gather(
        *(endpoint.post("/verify", payload, required) for _ in range(10))
    )
    assert all(v["isValid"] for v in verified)
    settled = await asyncio.gather(
        *(endpoint.post("/settle", payload, required) for _ in range(10))
    )
    assert sum(s["success"] for s in settled) == 2, settled
    assert {s["errorReason"] for s in settled if not s["success"]} == {"payment_already_redeemed"}
    assert len({s["transaction"] for s in settled if s["success"]}) == 1
    assert env.balance(PAYEE) == before + PRICE
    assert env.relayer_count() == sent + 1


async def test_a_settled_payment_is_redeemed_after_the_replay_window(
    exact_env: ExactEnv,
    make_settings: SettingsFactory,
    relayer_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("X402_API_TOKEN", TOKEN)
    settings = facilitator_settings(make_settings, exact_env, replay_window=1)
    facilitator = await Facilitator.start(settings)
    required = requirements(exact_env)
    payload = signed(required)
    try:
        async with (
            serve(create_facilitator_app(settings, facilitator)) as url,
            running_worker(settings),
            httpx.AsyncClient(timeout=30) as http,
        ):
            end = Endpoint(url, http, exact_env)
            assert (await end.post("/settle", payload, required))["success"] is True
            await asyncio.sleep(2.1)
            replayed = await end.post("/verify", payload, required)
            # After the window, not even the one retry: the payment has bought its response.
            assert replayed["isValid"] is False
            assert replayed["invalidReason"] == "payment_already_redeemed"
            settled = await end.post("/settle", payload, required)
            assert settled["errorReason"] == "payment_already_redeemed"
    finally:
        await facilitator.close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount": str(PRICE * 10)}, "invalid_payload"),  # paid for a cheaper route
        ({"payTo": PAYER}, "invalid_payload"),  # the route pays someone else
        ({"maxTimeoutSeconds": 60}, "invalid_payload"),
        ({"scheme": "upto"}, "invalid_scheme"),
        ({"network": "eip155:1"}, "invalid_network"),
        (
            {"extra": {"name": TOKEN_NAME, "version": TOKEN_VERSION, "route": "/b"}},
            "invalid_payload",
        ),
    ],
)
async def test_a_payment_for_other_terms_than_the_routes_is_refused(
    endpoint: Endpoint, change: dict[str, Any], reason: str
) -> None:
    paid_for = requirements(endpoint.env)
    payload = signed(paid_for)
    route_now = {**paid_for, **change}
    verified = await endpoint.post("/verify", payload, route_now)
    assert verified["isValid"] is False and verified["invalidReason"] == reason, verified
    settled = await endpoint.post("/settle", payload, route_now)
    assert settled["success"] is False and settled["errorReason"] == reason, settled


async def test_verify_refuses_what_would_not_settle_and_sends_nothing(
    endpoint: Endpoint,
) -> None:
    env = endpoint.env
    required = requirements(env)
    sent = env.relayer_count()
    good = signed(required)

    stranger = {**good, "payload": resign(good["payload"], env.token, STRANGER_KEY)}
    poor_payer = signed(required, POOR_KEY)
    too_late = {**good, "payload": resign(good["payload"], env.token, validBefore="1000")}
    too_far = {**good, "payload": resign(good["payload"], env.token, validBefore="9" * 20)}
    to_someone_else = {**good, "payload": resign(good["payload"], env.token, to=PAYER)}
    cases = [
        (stranger, "authorization_invalid"),  # signed by someone who is not `from`
        (poor_payer, "insufficient_balance"),
        (too_late, "authorization_expired"),
        (too_far, "authorization_invalid"),
        (to_someone_else, "wrong_recipient"),
        ({**good, "payload": {"signature": "0x12"}}, "invalid_payload"),
        ({**good, "x402Version": 1}, "invalid_payload"),
    ]
    for payload, reason in cases:
        verified = await endpoint.post("/verify", payload, required)
        assert verified["isValid"] is False, (reason, verified)
        assert verified["invalidReason"] == reason, verified
    assert env.relayer_count() == sent


async def test_an_authorization_used_on_chain_elsewhere_does_not_verify(
    endpoint: Endpoint,
) -> None:
    env = endpoint.env
    required = requirements(env)
    payload = signed(required)
    settled = await endpoint.post("/settle", payload, required)
    assert settled["success"] is True
    # The same authorization for another route's terms (another job): used on chain already.
    other = requirements(env, extra={"name": TOKEN_NAME, "version": TOKEN_VERSION, "route": "/b"})
    replayed = {**payload, "accepted": other}
    verified = await endpoint.post("/verify", replayed, other)
    assert verified["isValid"] is False
    assert verified["invalidReason"] == "authorization_already_used"
    again = await endpoint.post("/settle", replayed, other)
    assert again["success"] is False
    assert again["errorReason"] == "authorization_already_used"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"not json", 400),
        (b"[]", 400),
        (b'{"paymentPayload": {}}', 400),
        (b'{"paymentPayload": {"accepted": 1}, "paymentRequirements": {}}', 400),
        (b'{"x": "' + b"a" * 70_000 + b'"}', 413),
    ],
)
async def test_a_body_that_is_not_a_facilitator_request_gets_a_clear_4xx(
    endpoint: Endpoint, raw: bytes, status: int
) -> None:
    for path in ("/verify", "/settle"):
        answer = await endpoint.http.post(
            endpoint.url + path,
            content=raw,
            headers={**AUTH, "content-type": "application/json"},
        )
        assert answer.status_code == status, (path, answer.text)
        assert "error" in answer.json()


async def test_a_client_is_rate_limited(
    exact_env: ExactEnv, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X402_API_TOKEN", TOKEN)
    settings = facilitator_settings(make_settings, exact_env, rate_limit=1.0, burst=3)
    facilitator = await Facilitator.start(settings)
    try:
        async with (
            serve(create_facilitator_app(settings, facilitator)) as url,
            httpx.AsyncClient() as http,
        ):
            codes = [
                (await http.get(url + "/supported", headers=AUTH)).status_code for _ in range(5)
            ]
            limited = await http.get(url + "/supported", headers=AUTH)
        assert codes == [200, 200, 200, 429, 429]
        assert int(limited.headers["retry-after"]) >= 1
    finally:
        await facilitator.close()
