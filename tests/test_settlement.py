"""The exact scheme's core, without a chain: the checks a gate makes alone, the wire form, and
the Redis side of settling an authorization once (claims, records, relayer nonces)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support import SettingsFactory, connected_gate
from verifier.challenge import Terms
from verifier.errors import InvalidProof
from verifier.models import (
    SCHEME_EXACT,
    Authorization,
    Binding,
    ExactBody,
    Failure,
    PaymentPayload,
    ProofBody,
    ReasonCode,
    ResourceInfo,
)
from verifier.settings import AcceptSettings
from verifier.settlement import (
    Authorizations,
    LostAuthorization,
    SettlementRecord,
    authorization_problem,
)
from verifier.wire import decode_payment_payload, encode_json

NETWORK = "eip155:8453"
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x" + "ab" * 20
PAYER = "0x" + "cd" * 20


def terms(**changes: Any) -> Terms:
    base: dict[str, Any] = {
        "scheme": SCHEME_EXACT,
        "network": NETWORK,
        "asset": USDC.lower(),
        "amount": 10_000,
        "pay_to": PAYEE,
        "max_timeout_seconds": 600,
        "min_confirmations": 1,
        "binding": Binding.SIGNATURE,
        "resource": "https://shop.example/r",
    }
    return Terms(**{**base, **changes})


def authorization(**changes: Any) -> Authorization:
    now = int(time.time())
    base = {
        "from": PAYER,
        "to": PAYEE,
        "value": "10000",
        "validAfter": "0",
        "validBefore": str(now + 600),
        "nonce": "0x" + "11" * 32,
    }
    return Authorization.model_validate({**base, **changes})


def test_an_authorization_that_fits_the_terms_has_no_problem() -> None:
    assert authorization_problem(authorization(), terms(), time.time(), 6) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"to": "0x" + "ee" * 20}, ReasonCode.WRONG_RECIPIENT),
        ({"value": "9999"}, ReasonCode.AMOUNT_TOO_LOW),
        ({"value": "10001"}, ReasonCode.INVALID_PAYLOAD),  # never charge more than offered
        # seconds from now, when the test runs
        ({"validAfter": 60}, ReasonCode.AUTHORIZATION_NOT_YET_VALID),
        ({"validBefore": 3}, ReasonCode.AUTHORIZATION_EXPIRED),
        ({"validBefore": -1}, ReasonCode.AUTHORIZATION_EXPIRED),
    ],
)
def test_what_a_gate_refuses_alone(changes: dict[str, str | int], reason: ReasonCode) -> None:
    now = time.time()
    fields = {k: v if isinstance(v, str) else str(int(now) + v) for k, v in changes.items()}
    problem = authorization_problem(authorization(**fields), terms(), now, 6)
    assert problem is not None and problem[0] is reason, problem


def test_the_payee_is_compared_without_case() -> None:
    upper = authorization(to="0x" + "AB" * 20)
    assert authorization_problem(upper, terms(), time.time(), 6) is None


# -- the wire ------------------------------------------------------------------------------


async def test_an_exact_offer_carries_the_token_domain_and_an_authenticated_nonce(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(
        networks={NETWORK: {"rpc_urls": ["http://127.0.0.1:9"], "settlement": {"mode": "local"}}}
    )
    async with connected_gate(settings) as gate:
        offers = gate.offers(
            [
                AcceptSettings(
                    network=NETWORK, asset="USDC", pay_to=PAYEE, price="0.01", scheme="exact"
                ),
                AcceptSettings(network=NETWORK, asset="USDC", pay_to=PAYEE, price="0.01"),
            ]
        )
        required = gate.challenge(ResourceInfo(url="https://shop.example/r"), offers)
    exact, proof = required.accepts
    assert (exact.scheme, proof.scheme) == ("exact", "onchain-proof")
    assert (exact.extra.name, exact.extra.version) == ("USD Coin", "2")  # ASSETS.md
    assert exact.extra.binding is Binding.SIGNATURE
    assert (proof.extra.name, proof.extra.version) == (None, None)
    assert exact.extra.nonce != proof.extra.nonce
    assert exact.amount == proof.amount == "10000"


def test_an_exact_payload_is_read_by_the_offer_scheme() -> None:
    settings_free = PaymentPayload.model_validate(
        {
            "x402Version": 2,
            "accepted": _accept("exact"),
            "payload": {
                "signature": "0x" + "ab" * 65,
                "authorization": authorization().model_dump(by_alias=True),
            },
        }
    )
    assert isinstance(settings_free.payload, ExactBody)
    assert settings_free.nonce == "n1"
    with pytest.raises(ValueError, match="an exact payment"):
        _ = settings_free.proof


@pytest.mark.parametrize(
    ("scheme", "payload"),
    [
        # an onchain-proof body under an exact offer, and the other way round
        ("exact", {"nonce": "n1", "txHash": "0x" + "1" * 64}),
        ("onchain-proof", {"signature": "0x00", "authorization": {}}),
        ("exact", {"signature": "0xzz", "authorization": {}}),
    ],
)
def test_a_payload_of_the_wrong_shape_is_invalid(scheme: str, payload: dict[str, Any]) -> None:
    header = base64.b64encode(
        json.dumps({"x402Version": 2, "accepted": _accept(scheme), "payload": payload}).encode()
    )
    with pytest.raises(InvalidProof):
        decode_payment_payload(header)


def test_an_onchain_proof_payload_still_reads_as_before() -> None:
    proof = PaymentPayload.model_validate(
        {
            "accepted": _accept("onchain-proof"),
            "payload": {"nonce": "n1", "txHash": "0x" + "1" * 64},
        }
    )
    assert isinstance(proof.payload, ProofBody) and proof.proof.tx_hash == "0x" + "1" * 64


def _accept(scheme: str) -> dict[str, Any]:
    return {
        "scheme": scheme,
        "network": NETWORK,
        "asset": USDC,
        "amount": "10000",
        "payTo": PAYEE,
        "maxTimeoutSeconds": 600,
        "extra": {"nonce": "n1", "memo": "0" * 64, "name": "USD Coin", "version": "2"},
    }


async def test_the_gate_refuses_a_misfit_authorization_without_queueing_it(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings(
        networks={NETWORK: {"rpc_urls": ["http://127.0.0.1:9"], "settlement": {"mode": "local"}}}
    )
    async with connected_gate(settings) as gate:
        offers = gate.offers(
            [
                AcceptSettings(
                    network=NETWORK, asset="USDC", pay_to=PAYEE, amount=10_000, scheme="exact"
                )
            ]
        )
        required = gate.challenge(ResourceInfo(url="https://shop.example/r"), offers)
        body = ExactBody(signature="0x" + "ab" * 65, authorization=authorization(value="9999"))
        header = encode_json(PaymentPayload(accepted=required.accepts[0], payload=body))
        outcome = await gate.settle(header, resource="https://shop.example/r", offers=offers)
    assert isinstance(outcome, Failure) and outcome.error_reason is ReasonCode.AMOUNT_TOO_LOW
    assert await redis.zcard(settings.queue_name) == 0


# -- claims, records, relayer nonces (real Redis) ------------------------------------------


async def test_one_job_owns_an_authorization(redis: Redis) -> None:
    store = Authorizations(redis, "x402")
    first = await store.claim("k", "job-a", 60)
    assert isinstance(first, SettlementRecord) and first.txids == [] and not first.settling
    assert await store.claim("k", "job-b", 60) == "job-a"
    await first.add_txid("0x01", raw="0xraw")
    again = await store.claim("k", "job-a", 60)  # the next try, on any worker
    assert isinstance(again, SettlementRecord)
    assert again.txids == ["0x01"] and again.settling and again.get("raw") == "0xraw"
    assert not await store.release(again)  # something was broadcast: kept
    assert 0 < await redis.ttl(store.record_key("k")) <= 60


async def test_a_refusal_before_any_broadcast_gives_the_authorization_back(redis: Redis) -> None:
    store = Authorizations(redis, "x402")
    record = await store.claim("k", "job-a", 60)
    assert isinstance(record, SettlementRecord)
    assert await store.release(record)
    assert isinstance(await store.claim("k", "job-b", 60), SettlementRecord)


async def test_a_job_that_lost_its_record_cannot_write_it(redis: Redis) -> None:
    store = Authorizations(redis, "x402")
    record = await store.claim("k", "job-a", 60)
    assert isinstance(record, SettlementRecord)
    await redis.delete(store.record_key("k"))
    assert isinstance(await store.claim("k", "job-b", 60), SettlementRecord)
    with pytest.raises(LostAuthorization):
        await record.add_txid("0x01")
    with pytest.raises(LostAuthorization):
        await record.relayer_nonce(store.relayer_key(NETWORK, PAYER), 0)


async def test_relayer_nonces_are_unique_across_processes_and_kept_per_settlement(
    redis: Redis, redis_server: Any
) -> None:
    other = Redis.from_url(redis_server.url)  # a second connection: another worker process
    try:
        stores = [Authorizations(redis, "x402"), Authorizations(other, "x402")]
        counter = stores[0].relayer_key(NETWORK, PAYER)
        records = [await stores[i % 2].claim(f"k{i}", f"job{i}", 60) for i in range(50)]
        assert all(isinstance(r, SettlementRecord) for r in records)
        nonces = await asyncio.gather(
            *(r.relayer_nonce(counter, 7) for r in records if isinstance(r, SettlementRecord))
        )
        assert sorted(nonces) == list(range(7, 57))  # from the chain's count, no gap, no twin
        again = await stores[1].claim("k3", "job3", 60)
        assert isinstance(again, SettlementRecord)
        assert await again.relayer_nonce(counter, 0) == nonces[3]  # the next try: same nonce
        fresh = await stores[0].claim("late", "job-late", 60)
        assert isinstance(fresh, SettlementRecord)
        # The relayer sent transactions of its own meanwhile: never below the chain's count.
        assert await fresh.relayer_nonce(counter, 90) == 90
    finally:
        await other.aclose()
