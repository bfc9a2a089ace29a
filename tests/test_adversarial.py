"""Attacks on the paths that release a paid resource. One case per defect class, and growing.

Against the real components: a real Redis, a real anvil with the test token, the gate library
and an in-process worker (and, for the fuzz, the documented CLI processes over HTTP). Cases of a
defect class that need a chain's own machinery live with that chain's tests; this index keeps
them findable:

* a proof paid on one route served on another: here (library and HTTP, both headers)
* co-signer / submitter / unbound-offer theft: ``test_cosigner.py`` (EVM bundler, Solana fee
  payer relay), ``test_conformance.py`` (a memo-bound payment under a cheap unbound challenge,
  every chain)
* malformed payer signatures: ``test_conformance.py``, ``test_evm_adapter.py``
* job floods: here (per-challenge cap, id shapes, fresh proofs before retries)
* workers and Redis outages, kills: ``test_worker_redis_outage.py``, ``test_worker_kill.py``,
  ``test_worker_scale.py``
* hostile headers and nesting: here (hypothesis fuzz against the gate and worker processes)
* dust ahead of a TON locator payment, zero-amount jettons: ``test_ton_flow.py``
* a used transaction outliving its claim: here
* slow clients, oversized requests: ``test_gate_limits.py``
* one payment, many deliveries: ``test_delivery.py``
* a debited account changing owner (Solana SetAuthority): ``test_solana_flow.py``
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.constants import in_progress_key_prefix
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from devchain.redis_server import free_port
from tests.evm_fixtures import NETWORK, PAYEE, RESOURCE, STRANGER, EvmEnv, Shop, evm_settings
from tests.rpc_proxy import RpcProxy
from tests.support import SettingsFactory, connected_gate, running_worker
from tests.test_worker_scale import peak_in_flight
from tests.worker_process import evm_config
from verifier.gate import Offer
from verifier.models import MAX_CHALLENGE_SECONDS, Binding, Failure, ReasonCode, Receipt
from verifier.queue import FRESH_AHEAD_MS


def reason(outcome: Receipt | Failure) -> ReasonCode | None:
    return None if isinstance(outcome, Receipt) else outcome.error_reason


# -- 1. a receipt answers only the route and terms it was paid for ---------------------------

# Every way the route a proof is replayed on can differ from the one it paid for.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "path": ("http://shop.test/expensive", {}),
    "price": (RESOURCE, {"amount": 100_000_000}),
    "asset": (RESOURCE, {"asset": "0x" + "11" * 20}),
    "network": (RESOURCE, {"network": "eip155:8453"}),
    "payee": (RESOURCE, {"pay_to": STRANGER.lower()}),
    "confirmations": (RESOURCE, {"min_confirmations": 12}),
    "binding": (RESOURCE, {"binding": Binding.SIGNATURE}),
}


def variant(offers: list[Offer], change: dict[str, Any]) -> list[Offer]:
    return [dataclasses.replace(o, **change) for o in offers]


@pytest.mark.parametrize("name", list(VARIANTS))
async def test_a_receipt_is_not_served_on_another_route(shop: Shop, name: str) -> None:
    accept, offers = shop.offer()
    header = shop.proof(accept, shop.pay(accept))
    assert isinstance(await shop.settle(header, offers), Receipt)
    resource, change = VARIANTS[name]
    other = variant(offers, change)
    replayed = await shop.gate.settle(header, resource=resource, offers=other, timeout=5)
    assert reason(replayed) in {ReasonCode.NONCE_UNKNOWN, ReasonCode.INVALID_PAYLOAD}, replayed
    # ... and the route it paid for still answers it
    assert isinstance(await shop.settle(header, offers), Receipt)


@pytest.mark.parametrize("name", ["path", "price", "payee"])
async def test_after_expiry_a_receipt_still_answers_only_its_route(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Redis, name: str
) -> None:
    settings = evm_settings(make_settings, evm, worker={"grace_seconds": 0, "clock_skew": 5})
    async with connected_gate(settings) as gate, running_worker(settings):
        shop = Shop(gate, evm)
        # issued 7 s ago with a 10 s lifetime: it expires while the test runs
        accept, offers = shop.offer(now=time.time() - 7, max_timeout_seconds=10)
        t0 = time.time()
        header = shop.proof(accept, shop.pay(accept))
        assert isinstance(await shop.settle(header, offers), Receipt)
        await asyncio.sleep(max(0.0, accept.max_timeout_seconds - 7 - (time.time() - t0)) + 1.1)
        again = await shop.settle(header, offers)
        assert isinstance(again, Receipt)  # expired, but it counted: the same receipt
        resource, change = VARIANTS[name]
        other = await gate.settle(header, resource=resource, offers=variant(offers, change))
        assert reason(other) in {ReasonCode.NONCE_UNKNOWN, ReasonCode.INVALID_PAYLOAD}, other
        # An expired proof that never counted gets payment_expired, not a job.
        fresh, fresh_offers = shop.offer(now=time.time() - 11, max_timeout_seconds=10)
        late = await shop.settle(shop.proof(fresh, "0x" + "42" * 32), fresh_offers)
        assert reason(late) is ReasonCode.PAYMENT_EXPIRED


# -- 5. one free challenge cannot queue unlimited jobs -----------------------------------------


async def test_a_challenge_has_a_bounded_number_of_proofs_in_verification(
    shop: Shop, redis: Redis
) -> None:
    settings = shop.gate.settings
    cap = settings.gate.max_proofs_per_nonce
    accept, offers = shop.offer()
    never_mined = ["0x" + os.urandom(32).hex() for _ in range(cap + 3)]
    answers = [await shop.settle(shop.proof(accept, tx), offers, wait=0.05) for tx in never_mined]
    assert [reason(a) for a in answers[:cap]] == [ReasonCode.TX_NOT_FOUND] * cap
    for refused in answers[cap:]:
        assert isinstance(refused, Failure) and refused.transient
        assert refused.error_reason is ReasonCode.TOO_MANY_PROOFS
    assert await redis.zcard(settings.queue_name) == cap
    # Spellings of one id are one job, not a way around the cap.
    again = await shop.settle(
        shop.proof(accept, never_mined[0].upper().replace("0X", "0x")), offers
    )
    assert reason(again) is ReasonCode.TX_NOT_FOUND
    assert await redis.zcard(settings.queue_name) == cap
    # A garbage id is refused at the gate and queues nothing.
    for garbage in ["0x1234", "not-a-hash", "0x" + "g" * 64]:
        bad = await shop.settle(shop.proof(accept, garbage), offers, wait=0.05)
        assert reason(bad) is ReasonCode.INVALID_PAYLOAD
    assert await redis.zcard(settings.queue_name) == cap


async def test_a_finished_proof_frees_its_place(shop: Shop, redis: Redis) -> None:
    cap = shop.gate.settings.gate.max_proofs_per_nonce
    accept, offers = shop.offer()
    # One proof that ends for good (wrong amount), then cap more that stay pending.
    tx = shop.pay(accept, 1)
    assert reason(await shop.settle(shop.proof(accept, tx), offers)) is ReasonCode.AMOUNT_TOO_LOW
    for _ in range(cap):
        pending = await shop.settle(shop.proof(accept, "0x" + os.urandom(32).hex()), offers, 0.05)
        assert reason(pending) is ReasonCode.TX_NOT_FOUND
    extra = await shop.settle(shop.proof(accept, "0x" + os.urandom(32).hex()), offers, 0.05)
    assert reason(extra) is ReasonCode.TOO_MANY_PROOFS
    # The refused proof's answer is still the stored one, not a place taken.
    assert reason(await shop.settle(shop.proof(accept, tx), offers)) is ReasonCode.AMOUNT_TOO_LOW


async def test_fresh_proofs_are_due_before_every_retry(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = evm_settings(make_settings, evm)
    async with connected_gate(settings) as gate:
        shop = Shop(gate, evm)
        accept, offers = shop.offer()
        before = int(time.time() * 1000)
        await shop.settle(shop.proof(accept, "0x" + "42" * 32), offers, wait=0.01)
        [(_, score)] = await redis.zrange(settings.queue_name, 0, -1, withscores=True)
    # A retry is scored at its due time (>= now); a fresh job ~317 years before it.
    assert before - FRESH_AHEAD_MS <= score <= time.time() * 1000 - FRESH_AHEAD_MS


async def test_a_backlog_of_retrying_proofs_does_not_hold_back_a_new_one(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Redis
) -> None:
    # One worker slot, and a backlog of never-mined proofs that retry at once: before fresh
    # jobs were ranked ahead, the honest proof waited its turn behind every due retry; and
    # with a read of many ids per poll, behind every retry of the read before it arrived.
    settings = evm_settings(
        make_settings,
        evm,
        worker={"max_jobs": 1, "queue_read_limit": 100, "retry_base": 0.05, "retry_max": 0.05},
    )
    async with connected_gate(settings) as gate:
        shop = Shop(gate, evm)
        for _ in range(60):
            accept, offers = shop.offer()
            await shop.settle(shop.proof(accept, "0x" + os.urandom(32).hex()), offers, wait=0.001)
        async with running_worker(settings) as worker:
            # Let every backlog job be tried once, so that all of them are retries now.
            async with asyncio.timeout(30):
                while worker.jobs_retried < 60:  # noqa: ASYNC110 (a probe)
                    await asyncio.sleep(0.05)
            accept, offers = shop.offer()
            tx = shop.pay(accept)
            job_tries_before = worker.jobs_retried
            outcome = await shop.settle(shop.proof(accept, tx), offers, wait=20)
            assert isinstance(outcome, Receipt), outcome
            # It ran next (or nearly): far fewer retries than the backlog ran in between.
            assert worker.jobs_retried - job_tries_before < 20


async def test_retries_hold_at_most_retry_slots_and_new_proofs_take_the_rest(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Redis
) -> None:
    # A backlog of never-mined proofs, each attempt held at a slow node. Before retries had
    # slots of their own they took every slot (and the worker's CPU): new proofs queued behind.
    with RpcProxy(evm.anvil.url) as proxy:
        settings = make_settings(
            networks={NETWORK: {"rpc_urls": [proxy.url], "head_cache_seconds": 0}},
            assets=[{"network": NETWORK, "symbol": "USDC", "asset": evm.token, "decimals": 6}],
            worker={"max_jobs": 6, "retry_slots": 2, "retry_base": 0.05, "retry_max": 0.05},
        )
        async with connected_gate(settings) as gate:
            shop = Shop(gate, evm)
            for _ in range(12):
                accept, offers = shop.offer()
                await shop.settle(
                    shop.proof(accept, "0x" + os.urandom(32).hex()), offers, wait=0.001
                )
            async with running_worker(settings) as worker:
                async with asyncio.timeout(30):  # every backlog job tried once: all retries now
                    while worker.jobs_retried < 12:  # noqa: ASYNC110 (a probe)
                        await asyncio.sleep(0.05)
                proxy.delay = 0.4
                peak = 0
                for _ in range(40):  # 1.6 s: each retry slot turns over about four times
                    peak = max(peak, len(await redis.keys(in_progress_key_prefix + "*")))
                    await asyncio.sleep(0.04)
                assert peak == 2, f"{peak} retries in flight at once, for 2 retry slots"
                # The four slots retries may not take serve new proofs, each at once.
                paid = [shop.offer() for _ in range(4)]
                proxy.delay = 0
                headers = [(shop.proof(a, shop.pay(a)), o) for a, o in paid]
                proxy.delay = 0.4
                done = asyncio.Event()
                sampler = asyncio.create_task(peak_in_flight(redis, done))
                outcomes = await asyncio.gather(*(shop.settle(h, o, wait=20) for h, o in headers))
                done.set()
                peak = await sampler
                proxy.delay = 0
    assert all(isinstance(o, Receipt) for o in outcomes), outcomes
    # All four at once, beside the two retries: every slot busy, not one proof after another.
    assert peak == 6, f"{peak} jobs in flight at once, for 6 slots"


# -- 7. what a proof may carry is bounded ----------------------------------------------------


async def test_a_deeply_nested_extra_field_is_refused_not_a_crash(shop: Shop) -> None:
    accept, offers = shop.offer()
    proof = json.loads(base64.b64decode(shop.proof(accept, "0x" + "1" * 64)))
    nested: Any = "x"
    for _ in range(250):
        nested = {"n": nested}
    proof["accepted"]["extra"]["deep"] = nested
    header = base64.b64encode(json.dumps(proof).encode()).decode()
    refused = await shop.settle(header, offers)
    assert isinstance(refused, Failure) and refused.error_reason is ReasonCode.INVALID_PAYLOAD
    assert "nested deeper" in refused.error_message


# -- 9. a used transaction stays used as long as any challenge could accept it ---------------


async def test_a_used_transaction_outlives_any_challenge_that_could_accept_it(
    evm: EvmEnv, make_settings: SettingsFactory, redis: Redis
) -> None:
    # The shortest retention the configuration allows: routes do not say how long library
    # offers live, so the claim itself must keep the key long enough.
    settings = evm_settings(make_settings, evm, store={"used_tx_retention": 3600})
    async with connected_gate(settings) as gate, running_worker(settings):
        shop = Shop(gate, evm)
        accept, offers = shop.offer(max_timeout_seconds=MAX_CHALLENGE_SECONDS)
        receipt = await shop.settle(shop.proof(accept, shop.pay(accept)), offers)
        assert isinstance(receipt, Receipt)
        ttl = await redis.ttl(gate.store.keys.used(f"{NETWORK}:{receipt.transaction}"))
        block_time = receipt.extensions["onchain-proof"]["blockTime"]
        w = settings.worker
        needed = (
            block_time + MAX_CHALLENGE_SECONDS + w.grace_seconds + 2 * w.clock_skew - time.time()
        )
        assert ttl >= needed, (ttl, needed)


# -- the HTTP gate: the same attacks through the headers --------------------------------------


@pytest.fixture
async def two_routes(evm: EvmEnv, make_settings: SettingsFactory, redis: Any) -> Any:
    from tests.support import serve
    from verifier.asgi import create_app

    def accepts(price: str) -> list[dict[str, Any]]:
        return [{"network": NETWORK, "asset": "USDC", "pay_to": PAYEE, "price": price}]

    settings = evm_settings(
        make_settings,
        evm,
        gate={"settle_timeout": 5, "public_url": "https://shop.example"},
        routes=[
            {"path": "/cheap", "body": '{"tier": "cheap"}', "accepts": accepts("0.01")},
            {"path": "/expensive", "body": '{"tier": "premium"}', "accepts": accepts("100")},
        ],
    )
    async with serve(create_app(settings)) as url, running_worker(settings):
        yield url


@pytest.mark.parametrize("header", ["PAYMENT-SIGNATURE", "X-PAYMENT"])
async def test_a_cheap_proof_does_not_open_the_expensive_route(
    two_routes: str, evm: EvmEnv, header: str
) -> None:
    from tests.test_asgi import pay_for
    from verifier.wire import decode_payment_response

    async with httpx.AsyncClient(timeout=20) as client:
        paid = await pay_for(
            client, f"{two_routes}/cheap", evm.chain, evm.token, v1=header != "PAYMENT-SIGNATURE"
        )
        assert paid.status_code == 200 and paid.json() == {"tier": "cheap"}
        proof = paid.request.headers[header]
        replay = await client.get(f"{two_routes}/expensive", headers={header: proof})
        assert replay.status_code == 402, replay.text
        assert "premium" not in replay.text
        refused = decode_payment_response(replay.headers["PAYMENT-RESPONSE"])
        assert isinstance(refused, Failure) and refused.error_reason is ReasonCode.NONCE_UNKNOWN


async def test_too_many_proofs_is_a_429_over_http(two_routes: str) -> None:
    from verifier.models import PaymentPayload, ProofBody
    from verifier.wire import decode_payment_required, encode_json

    async with httpx.AsyncClient(timeout=20) as client:
        first = await client.get(f"{two_routes}/cheap")
        accept = decode_payment_required(first.headers["PAYMENT-REQUIRED"]).accepts[0]
        statuses = []
        for _ in range(6):
            body = ProofBody(nonce=accept.extra.nonce, tx_hash="0x" + os.urandom(32).hex())
            proof = encode_json(PaymentPayload(accepted=accept, payload=body))
            r = await client.get(f"{two_routes}/cheap", headers={"PAYMENT-SIGNATURE": proof})
            statuses.append((r.status_code, r.headers.get("Retry-After")))
    assert statuses[:4] == [(402, "2")] * 4
    assert statuses[4:] == [(429, "2")] * 2


# -- malformed input against the documented processes: never a 5xx, never a traceback ---------

FUZZ_TABLES = """
[gate]
settle_timeout = 0.2
public_url = "https://shop.example"
[[routes]]
path = "/report"
body = '{{"report": 42}}'
[[routes.accepts]]
network = "{network}"
asset = "USDC"
pay_to = "{payee}"
price = "0.10"
"""


@dataclasses.dataclass
class Processes:
    url: str
    logs: dict[str, Path]
    valid: dict[str, Any]  # a well-formed proof for the route (its tx never mined)


@pytest.fixture
def gate_and_worker(
    evm: EvmEnv, redis_server: Any, redis: Any, tmp_path: Path
) -> Iterator[Processes]:
    config = tmp_path / "verifier.toml"
    config.write_text(
        evm_config(
            redis=redis_server.url,
            rpc=evm.anvil.url,
            evm=evm,
            worker={"retry_base": 0.05, "retry_max": 0.2},
            more=FUZZ_TABLES.format(network=NETWORK, payee=PAYEE),
        )
    )
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("gate", "worker")}
    commands = {
        "gate": ["gate", "--config", str(config), "--port", str(port)],
        "worker": ["worker", "--config", str(config)],
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "verifier.cli", *args],
            stdout=logs[name].open("w"),
            stderr=subprocess.STDOUT,
        )
        for name, args in commands.items()
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(logs["gate"].read_text())
            time.sleep(0.1)
        first = httpx.get(f"{url}/report", timeout=10)
        accept = first.json()["accepts"][0]
        valid = {
            "x402Version": 2,
            "accepted": accept,
            "payload": {"nonce": accept["extra"]["nonce"], "txHash": "0x" + "42" * 32},
        }
        yield Processes(url, logs, valid)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=12)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _mutated(valid: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    proof: dict[str, Any] = json.loads(json.dumps(valid))
    node = proof
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return proof


_PATHS = [
    ["x402Version"],
    ["accepted"],
    ["accepted", "amount"],
    ["accepted", "network"],
    ["accepted", "maxTimeoutSeconds"],
    ["accepted", "extra"],
    ["accepted", "extra", "nonce"],
    ["accepted", "extra", "minConfirmations"],
    ["accepted", "extra", "binding"],
    ["accepted", "extra", "unknown"],
    ["payload"],
    ["payload", "txHash"],
    ["payload", "signature"],
    ["payload", "nonce"],
    ["resource"],
]


@st.composite
def hostile_headers(draw: st.DrawFn, valid: dict[str, Any]) -> list[tuple[str, str]]:
    kind = draw(st.sampled_from(["mutated", "json", "deep", "raw", "base64", "huge", "duplicate"]))
    names = ["PAYMENT-SIGNATURE", "X-PAYMENT", "payment-signature"]
    name = draw(st.sampled_from(names))
    if kind == "mutated":
        proof = _mutated(valid, draw(st.sampled_from(_PATHS)), draw(_JSON))
        value = _b64(json.dumps(proof).encode())
    elif kind == "json":
        value = _b64(json.dumps(draw(_JSON)).encode())
    elif kind == "deep":
        proof = _mutated(valid, ["accepted", "extra", "deep"], _nested(draw(st.integers(1, 400))))
        value = _b64(json.dumps(proof).encode())
    elif kind == "raw":
        value = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80))
    elif kind == "base64":
        value = _b64(draw(st.binary(max_size=200)))
    elif kind == "huge":
        value = "A" * draw(st.integers(16 * 1024, 48 * 1024))
    else:
        good = _b64(json.dumps(valid).encode())
        other = _b64(json.dumps(_mutated(valid, ["payload", "txHash"], draw(_JSON))).encode())
        return [("PAYMENT-SIGNATURE", good), (draw(st.sampled_from(names)), other)]
    return [(name, value or "x")]


def test_malformed_proofs_never_get_a_5xx_or_a_traceback(gate_and_worker: Processes) -> None:
    seen: set[int] = set()

    @hypothesis_settings(
        max_examples=int(os.environ.get("X402_FUZZ_EXAMPLES", "150")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def probe(data: st.DataObject) -> None:
        headers = data.draw(hostile_headers(gate_and_worker.valid))
        with httpx.Client(timeout=20) as client:
            r = client.get(f"{gate_and_worker.url}/report", headers=headers)
        seen.add(r.status_code)
        assert r.status_code < 500, (
            r.status_code,
            r.text[:300],
            [(k, v[:200]) for k, v in headers],
        )
        if r.status_code == 402:
            assert "PAYMENT-REQUIRED" in r.headers

    probe()
    assert 402 in seen
    time.sleep(1)  # let the worker try what was queued
    for name, log in gate_and_worker.logs.items():
        text = log.read_text()
        assert "Traceback" not in text, f"{name} log:\n{text[-4000:]}"
