"""Signed webhooks for receipts: ``x402-verifier webhooks`` (and ``webhooks replay``).

A dispatcher reads the receipts stream (``<prefix>:receipts``, written by every claim) through a
Redis consumer group (``webhooks.group``), so any number of dispatchers share the work, and
POSTs each receipt to ``webhooks.url``:

* **Body**: the receipt's JSON exactly as stored (its ``extensions.trace.traceId`` included).
* **Headers**: ``X402-Webhook-Id`` (the receipt's consumption key: the idempotency key, the
  same on every retry and replay), ``X402-Webhook-Timestamp`` (unix seconds of this try) and
  ``X402-Webhook-Signature: v1,kid=<key id>,sig=<hex>`` where ``sig`` is HMAC-SHA256 under
  that key's secret of ``<timestamp>.<raw body>``. Keys rotate by id (``secrets_env``,
  ``active``): receivers accept the ids they know. ``verify_signature`` is the receiver side.
* **Retries**: timeouts, connection failures, ``408``, ``429`` and ``5xx`` are tried again with
  exponential backoff (``backoff_base`` doubling to ``backoff_max``) up to ``max_attempts``
  tries; any other answer below ``300`` delivers it; any other status, or the last failed try,
  puts it in the dead-letter stream ``<prefix>:webhooks:dead`` (the receipt, the status or
  error, the tries), from which ``webhooks replay`` delivers again.
* **At least once**: an entry is acknowledged (``XACK``) only once delivered or dead-lettered.
  A dispatcher that dies leaves its entries pending; another one takes those idle longer than
  ``reclaim_after`` (``XAUTOCLAIM``) and delivers them. With Redis on AOF (``appendfsync
  always``) nothing is lost; a receiver may see a delivery twice and deduplicates on the id.

The group is created at the stream's current end the first time a dispatcher starts: receipts
written before that are not sent (``webhooks replay`` only re-sends dead letters).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from verifier.errors import ConfigError
from verifier.metrics import host_of
from verifier.settings import Settings, WebhookSettings

log = logging.getLogger(__name__)

ID_HEADER = "X402-Webhook-Id"
TIMESTAMP_HEADER = "X402-Webhook-Timestamp"
SIGNATURE_HEADER = "X402-Webhook-Signature"
_RETRIED = {408, 429}


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(key_id: str, secret: bytes, timestamp: int, body: bytes) -> str:
    return f"v1,kid={key_id},sig={sign(secret, timestamp, body)}"


def verify_signature(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, bytes],
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """The receiver's check: a known key id, a fresh timestamp, the right HMAC of the raw body."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        timestamp = int(lower[TIMESTAMP_HEADER.lower()])
        parts = dict(p.split("=", 1) for p in lower[SIGNATURE_HEADER.lower()].split(",")[1:])
    except (KeyError, ValueError):
        return False
    secret = secrets.get(parts.get("kid", ""))
    if secret is None or abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(parts.get("sig", ""), sign(secret, timestamp, body))


@dataclass(frozen=True, slots=True)
class Delivered:
    ok: bool
    retry: bool
    detail: str


class Dispatcher:
    """One dispatcher process's work: deliver, retry, dead-letter, acknowledge (module doc)."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        *,
        environ: Mapping[str, str] | None = None,
        consumer: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        config = settings.webhooks
        if config.url is None or config.active is None:
            raise ConfigError("[webhooks] has no url: nothing to deliver to")
        env = os.environ if environ is None else environ
        self._secrets: dict[str, bytes] = {}
        for key_id, variable in config.secrets_env.items():
            value = env.get(variable)
            if not value:
                raise ConfigError(f"webhooks.secrets_env: {variable} (key {key_id}) is not set")
            self._secrets[key_id] = value.encode()
        self.config: WebhookSettings = config
        self.url = config.url
        self.redis = redis
        prefix = settings.store.prefix
        self.stream = f"{prefix}:receipts"
        self.dead = f"{prefix}:webhooks:dead"
        self.group = config.group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._http = httpx.AsyncClient(timeout=config.timeout, transport=transport)
        self._limit = asyncio.Semaphore(config.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    async def ensure_group(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: made by another dispatcher
            await self.redis.xgroup_create(self.stream, self.group, id="$", mkstream=True)

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Deliver until ``stop`` is set: new entries, and entries others left pending."""
        await self.ensure_group()
        stop = stop or asyncio.Event()
        last_reclaim = 0.0
        while not stop.is_set():
            if time.monotonic() - last_reclaim > self.config.reclaim_after / 2:
                await self._reclaim()
                last_reclaim = time.monotonic()
            await self._limit.acquire()
            self._limit.release()
            reply = await self.redis.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=self.config.concurrency,
                block=500,
            )
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    await self._spawn(entry_id, fields)

    async def _reclaim(self) -> None:
        idle_ms = int(self.config.reclaim_after * 1000)
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, idle_ms, start_id=start, count=100
            )
            start, entries = reply[0], reply[1]
            for entry_id, fields in entries:
                if str(entry_id) in self._in_flight:
                    continue  # ours, being tried (a slow receiver): not taken over twice
                if fields:  # an entry trimmed from the stream comes back empty: nothing to send
                    log.info("webhook %s taken over from a stopped dispatcher", entry_id)
                    await self._spawn(entry_id, fields)
                else:
                    await self.redis.xack(self.stream, self.group, entry_id)
            if start in (b"0-0", "0-0"):
                return

    async def _spawn(self, entry_id: Any, fields: Mapping[Any, Any]) -> None:
        await self._limit.acquire()
        task = asyncio.create_task(self._handle(entry_id, fields))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._limit.release())

    async def _handle(self, entry_id: Any, fields: Mapping[Any, Any]) -> None:
        body = fields.get(b"receipt") or fields.get("receipt") or b""
        body = body.encode() if isinstance(body, str) else body
        self._in_flight.add(str(entry_id))
        try:
            attempts, outcome = await self._deliver_with_retries(entry_id, body)
        finally:
            self._in_flight.discard(str(entry_id))
        if not outcome.ok:
            await self.redis.xadd(
                self.dead,
                {
                    "receipt": body,
                    "error": outcome.detail,
                    "attempts": str(attempts),
                    "entry": str(entry_id),
                },
            )
            log.warning(
                "webhook %s dead-lettered after %d tries: %s", entry_id, attempts, outcome.detail
            )
        await self.redis.xack(self.stream, self.group, entry_id)

    async def _deliver_with_retries(self, entry_id: Any, body: bytes) -> tuple[int, Delivered]:
        delay = self.config.backoff_base
        outcome = Delivered(False, False, "not tried")
        for attempt in range(1, self.config.max_attempts + 1):
            outcome = await self.deliver(body)
            if outcome.ok or not outcome.retry:
                return attempt, outcome
            if attempt < self.config.max_attempts:
                await self._wait(entry_id, delay)
                delay = min(delay * 2, self.config.backoff_max)
        return self.config.max_attempts, outcome

    async def _wait(self, entry_id: Any, seconds: float) -> None:
        """Sleep before the next try, keeping the entry ours: its idle time is reset more often
        than ``reclaim_after``, so no other dispatcher takes it while we wait."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self.config.reclaim_after / 3))
            await self.redis.xclaim(
                self.stream, self.group, self.consumer, 0, [entry_id], justid=True
            )

    async def deliver(self, body: bytes) -> Delivered:
        """One signed POST of ``body``."""
        try:
            receipt = orjson.loads(body)
            key = str(receipt["extensions"]["onchain-proof"]["consumptionKey"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return Delivered(False, False, "the stream entry is not a receipt")
        timestamp = int(time.time())
        assert self.config.active is not None
        headers = {
            "content-type": "application/json",
            ID_HEADER: key,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature_header(
                self.config.active, self._secrets[self.config.active], timestamp, body
            ),
        }
        try:
            reply = await self._http.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return Delivered(False, True, "timed out")
        except httpx.HTTPError as exc:
            return Delivered(False, True, f"{type(exc).__name__}")
        status = reply.status_code
        if 200 <= status < 300:
            return Delivered(True, False, str(status))
        return Delivered(False, status in _RETRIED or status >= 500, f"HTTP {status}")

    async def replay(self, count: int = 1000) -> tuple[int, int]:
        """Deliver dead letters again, oldest first (one try each); those delivered leave the
        dead-letter stream. (delivered, still failing)."""
        delivered = failed = 0
        for entry_id, fields in await self.redis.xrange(self.dead, count=count):
            body = fields.get(b"receipt") or b""
            outcome = await self.deliver(body)
            if outcome.ok:
                await self.redis.xdel(self.dead, entry_id)
                delivered += 1
            else:
                failed += 1
        return delivered, failed


async def run_dispatcher(settings: Settings) -> None:
    from verifier.queue import open_redis

    redis = await open_redis(settings)
    dispatcher = Dispatcher(settings, redis)
    # The host only: a receiver's URL may carry a token in its path or query.
    log.info("delivering receipts to %s as %s", host_of(dispatcher.url), dispatcher.consumer)
    try:
        await dispatcher.run()
    finally:
        await dispatcher.close()
        await redis.aclose()


async def replay_dead_letters(settings: Settings, count: int) -> tuple[int, int]:
    from verifier.queue import open_redis

    redis = await open_redis(settings)
    dispatcher = Dispatcher(settings, redis)
    try:
        return await dispatcher.replay(count)
    finally:
        await dispatcher.close()
        await redis.aclose()
