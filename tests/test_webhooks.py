"""Signed receipt webhooks: real Redis (the receipts stream written by the real claim), a real
HTTP receiver; deliveries signed, retried, dead-lettered, replayed, shared by dispatchers and
taken over from one that died."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import SettingsFactory, serve
from verifier.models import Receipt
from verifier.store import Store
from verifier.webhooks import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Dispatcher,
    verify_signature,
)

SECRETS = {"k1": "old-secret-0123456789", "k2": "new-secret-9876543210"}
ENV = {"HOOK_K1": SECRETS["k1"], "HOOK_K2": SECRETS["k2"]}


class Receiver:
    """Records each delivery; answers ``statuses`` in turn (then 200), or hangs when told."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.hang = asyncio.Event()  # set: requests wait for ``release``
        self.release = asyncio.Event()

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if self.hang.is_set():
            await self.release.wait()
        self.seen.append((dict(request.headers), body))
        return Response(status_code=self.statuses.pop(0) if self.statuses else 200)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.endpoint, methods=["POST"])])


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    async with serve(r.app()) as url:
        yield r, url + "/hook"


def hook_settings(make_settings: SettingsFactory, url: str, **changes: Any) -> Any:
    return make_settings(
        webhooks={
            "url": url,
            "secrets_env": {"k1": "HOOK_K1", "k2": "HOOK_K2"},
            "active": "k2",
            "backoff_base": 0.05,
            "backoff_max": 0.1,
            "max_attempts": 3,
            "reclaim_after": 1,
            **changes,
        }
    )


async def paid(redis: Redis, settings: Any, n: int) -> list[Receipt]:
    """``n`` receipts through the real claim, which appends each to the receipts stream."""
    store = Store(redis, settings.store)
    out = []
    for i in range(n):
        key = f"eip155:31337:0x{i:064x}"
        receipt = Receipt(
            network="eip155:31337",
            transaction=f"0x{i:064x}",
            asset="0x" + "11" * 20,
            amount="1000",
            payer="0x" + "22" * 20,
            pay_to="0x" + "33" * 20,
            verified_at="2026-12-02T00:00:00.000Z",
            nonce=f"n{i}",
            extensions={"onchain-proof": {"consumptionKey": key}, "trace": {"traceId": f"t{i}"}},
        )
        await store.claim(
            nonce=f"n{i}", consumption_key=key, job=f"j{i}", receipt=receipt, nonce_ttl=60
        )
        out.append(receipt)
    return out


@contextlib.asynccontextmanager
async def dispatching(settings: Any, redis: Redis, name: str) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(settings, redis, environ=ENV, consumer=name)
    await dispatcher.ensure_group()
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop=stop))
    try:
        yield dispatcher
    finally:
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await dispatcher.close()


async def until(predicate: Any, within: float = 10) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 (a probe)
            await asyncio.sleep(0.02)


async def test_a_receipt_is_delivered_signed_with_its_id_and_trace(
    make_settings: SettingsFactory, redis: Redis, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    settings = hook_settings(make_settings, url)
    async with dispatching(settings, redis, "a"):
        [receipt] = await paid(redis, settings, 1)
        await until(lambda: len(r.seen) == 1)
    headers, body = r.seen[0]
    keys = {k: v.encode() for k, v in SECRETS.items()}
    assert verify_signature(headers, body, keys)
    assert "kid=k2" in headers[SIGNATURE_HEADER.lower()]
    assert headers[ID_HEADER.lower()] == "eip155:31337:0x" + "0" * 64
    assert Receipt.model_validate_json(body) == receipt  # the receipt as stored, trace included
    assert not verify_signature(headers, body + b" ", keys)  # a changed body
    assert not verify_signature(headers, body, {"k1": keys["k1"]})  # a key id it does not know
    stale = float(headers[TIMESTAMP_HEADER.lower()]) + 301
    assert not verify_signature(headers, body, keys, now=stale)
    assert await redis.xpending(settings.store.prefix + ":receipts", "webhooks") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_failures_are_retried_then_dead_lettered_then_replayed(
    make_settings: SettingsFactory, redis: Redis, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    settings = hook_settings(make_settings, url)
    dead = settings.store.prefix + ":webhooks:dead"
    r.statuses = [503, 429]  # retried: the third try delivers
    async with dispatching(settings, redis, "a") as dispatcher:
        await paid(redis, settings, 1)
        await until(lambda: len(r.seen) == 3)
        r.statuses = [400]  # not retried: dead at once
        await paid_more(redis, settings, "400")
        await until(lambda: len(r.seen) == 4)
        r.statuses = [500, 502, 503]  # every try fails: dead after max_attempts
        await paid_more(redis, settings, "5xx")
        await until(lambda: len(r.seen) == 7)
        async with asyncio.timeout(10):
            while await redis.xlen(dead) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        letters = await redis.xrange(dead)
        assert [f[b"error"] for _, f in letters] == [b"HTTP 400", b"HTTP 503"]
        assert [f[b"attempts"] for _, f in letters] == [b"1", b"3"]
        assert await dispatcher.replay() == (2, 0)  # the receiver answers 200 now
    assert await redis.xlen(dead) == 0
    assert len(r.seen) == 9


async def paid_more(redis: Redis, settings: Any, tag: str) -> None:
    store = Store(redis, settings.store)
    key = f"eip155:31337:{tag}"
    receipt = Receipt(
        network="eip155:31337",
        transaction=tag,
        asset="a",
        amount="1",
        payer="p",
        pay_to="q",
        verified_at="2026-12-02T00:00:00.000Z",
        nonce=tag,
        extensions={"onchain-proof": {"consumptionKey": key}},
    )
    await store.claim(nonce=tag, consumption_key=key, job=tag, receipt=receipt, nonce_ttl=60)


async def test_dispatchers_share_the_work_and_one_takes_over_from_one_that_died(
    make_settings: SettingsFactory, redis: Redis, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    settings = hook_settings(make_settings, url)
    # A dispatcher takes a delivery and dies while the receiver has not answered.
    r.hang.set()
    async with dispatching(settings, redis, "dies"):
        await paid(redis, settings, 1)
        async with asyncio.timeout(10):
            while not (  # noqa: ASYNC110 (a probe)
                await redis.xpending(settings.store.prefix + ":receipts", "webhooks")
            )["pending"]:
                await asyncio.sleep(0.02)
    r.hang.clear()
    r.release.set()
    async with dispatching(settings, redis, "b"), dispatching(settings, redis, "c"):
        await until(lambda: len(r.seen) >= 1)  # taken over after reclaim_after
        await paid_batch(redis, settings, 20)
        await until(lambda: len(r.seen) >= 21)
        await asyncio.sleep(0.3)
    ids = [h[ID_HEADER.lower()] for h, _ in r.seen]
    assert len(ids) == len(set(ids)) == 21  # every receipt once: shared, not repeated


async def paid_batch(redis: Redis, settings: Any, n: int) -> None:
    for i in range(n):
        await paid_more(redis, settings, f"batch{i}")
