"""The atomic claim against a real Redis: one receipt per transaction, whatever the races."""

from __future__ import annotations

import asyncio

import orjson
from redis.asyncio import Redis

from verifier.models import Failure, ReasonCode, Receipt, failure
from verifier.queue import job_key, queue_entry
from verifier.settings import StoreSettings
from verifier.store import ClaimStatus, QueueEntry, Store


def receipt(nonce: str, tx: str = "0xaa") -> Receipt:
    return Receipt(
        network="eip155:1",
        transaction=tx,
        asset="0xtoken",
        amount="1",
        payer="0xpayer",
        pay_to="0xpayee",
        verified_at="2026-01-01T00:00:00.000Z",
        nonce=nonce,
        extensions={"onchain-proof": {"consumptionKey": f"eip155:1:{tx}"}},
    )


async def claim(store: Store, nonce: str, tx: str = "0xaa") -> tuple[ClaimStatus, Receipt | None]:
    r = await store.claim(
        nonce=nonce,
        consumption_key=f"eip155:1:{tx}",
        job=job_key(nonce, tx),
        receipt=receipt(nonce, tx),
        nonce_ttl=600,
    )
    return r.status, r.receipt


async def test_claim_is_idempotent_and_exclusive(redis: Redis) -> None:
    store = Store(redis, StoreSettings())
    status, first = await claim(store, "n1")
    assert status is ClaimStatus.NEW and first is not None
    status, again = await claim(store, "n1")
    assert status is ClaimStatus.SAME and again == first
    assert (await claim(store, "n2"))[0] is ClaimStatus.TX_USED
    assert (await claim(store, "n1", tx="0xbb"))[0] is ClaimStatus.NONCE_USED
    assert await store.outcome(job_key("n1", "0xaa")) == first
    assert [r.nonce for r in await store.receipts()] == ["n1"]


async def test_retention_is_set_on_every_key(redis: Redis) -> None:
    settings = StoreSettings(used_tx_retention=86400 * 3, receipt_retention=7200)
    store = Store(redis, settings)
    await claim(store, "n1")
    keys = store.keys
    assert 86400 * 3 - 5 < await redis.ttl(keys.used("eip155:1:0xaa")) <= 86400 * 3
    assert 86400 * 3 - 5 < await redis.ttl(keys.receipt("eip155:1:0xaa")) <= 86400 * 3
    assert 7200 - 5 < await redis.ttl(keys.nonce("n1")) <= 7200
    assert 7200 - 5 < await redis.ttl(keys.outcome(job_key("n1", "0xaa"))) <= 7200


async def test_twenty_concurrent_claims_one_receipt(redis: Redis) -> None:
    store = Store(redis, StoreSettings())
    same = await asyncio.gather(*(claim(store, "n1") for _ in range(20)))
    assert [s for s, _ in same].count(ClaimStatus.NEW) == 1
    assert {r.model_dump_json() for _, r in same if r is not None} == {
        same[0][1].model_dump_json()  # type: ignore[union-attr]
    }
    others = await asyncio.gather(*(claim(store, f"other{i}") for i in range(20)))
    assert {s for s, _ in others} == {ClaimStatus.TX_USED}
    assert await redis.xlen(store.keys.stream) == 1


async def test_claim_notifies_subscribers(redis: Redis) -> None:
    store = Store(redis, StoreSettings())
    pubsub = redis.pubsub()
    await pubsub.subscribe(store.keys.channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    await claim(store, "n1")
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert msg is not None
    job, _, raw = msg["data"].partition(b"\n")
    assert job.decode() == job_key("n1", "0xaa")
    assert orjson.loads(raw)["nonce"] == "n1"
    await store.record_failure("j2", failure(ReasonCode.AMOUNT_TOO_LOW, "x"), 60)
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert msg is not None and msg["data"].startswith(b"j2\n")
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated


async def test_pending_then_final(redis: Redis) -> None:
    store = Store(redis, StoreSettings())
    await store.record_pending("j", failure(ReasonCode.TX_NOT_FOUND, "later"), 60)
    pending = await store.pending("j")
    assert pending is not None and pending.transient
    await store.record_failure("j", failure(ReasonCode.WRONG_ASSET, "no"), 60)
    assert await store.pending("j") is None
    final = await store.outcome("j")
    assert final is not None and not final.success


async def queued(redis: Redis, job: str) -> QueueEntry:
    """A job as the queue holds it: its record, try count, mark and queue entry."""
    entry = queue_entry("x402:verify", job)
    for key in entry.keys:
        await redis.set(key, b"1")
    await redis.zadd(entry.queue, {job: 1})
    return entry


async def left_of(redis: Redis, entry: QueueEntry) -> list[str]:
    keys = [k for k in entry.keys if await redis.exists(k)]
    return keys + (["queue"] if await redis.zscore(entry.queue, entry.job) is not None else [])


async def test_a_final_outcome_ends_its_job_in_the_same_step(redis: Redis) -> None:
    """The claim and the stored failure remove the job with the outcome; a refused claim (its
    refusal is stored next, by ``record_failure``) leaves it."""
    store = Store(redis, StoreSettings())

    async def claim_for(nonce: str, tx: str, job: str, entry: QueueEntry) -> ClaimStatus:
        result = await store.claim(
            nonce=nonce,
            consumption_key=f"eip155:1:{tx}",
            job=job,
            receipt=receipt(nonce, tx),
            nonce_ttl=600,
            entry=entry,
        )
        return result.status

    new = await queued(redis, "job-new")
    assert await claim_for("n1", "0xaa", "job-new", new) is ClaimStatus.NEW
    assert await left_of(redis, new) == []
    same = await queued(redis, "job-same")  # the same payment, another proof of it
    assert await claim_for("n1", "0xaa", "job-same", same) is ClaimStatus.SAME
    assert await left_of(redis, same) == []
    for nonce, tx in (("n2", "0xaa"), ("n1", "0xbb")):  # tx used, nonce used
        refused = await queued(redis, f"job-{nonce}-{tx}")
        assert await claim_for(nonce, tx, refused.job, refused) is not ClaimStatus.NEW
        assert len(await left_of(redis, refused)) == 4
        await store.record_failure(
            refused.job, failure(ReasonCode.TX_ALREADY_USED, "x", nonce=nonce), 60, refused
        )
        assert await left_of(redis, refused) == []
        assert isinstance(await store.outcome(refused.job), Failure)
