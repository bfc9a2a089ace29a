"""What one payment buys on a route of the HTTP gate: one delivery, or access for a period.

The same proof sent again gets the same receipt (``verifier.gate``: a retry never charges twice).
This module keeps a retry from multiplying what was bought. Each route has a policy
(``RouteSettings.delivery``). State is kept per payment (the receipt's consumption key) and
route, in Redis, and only the Lua scripts below change it, so any number of gate processes agree.

``once`` (the default)
    The first successful delivery consumes the payment. While it produces the response (the
    static body, or one upstream call) it holds a lease. When it is done it stores that response
    for ``replay_window`` seconds and marks the payment redeemed. The same proof within the window
    gets the stored response again and the upstream is never called a second time. Copies that
    arrive while the first delivery is in flight wait for it. They are woken through the
    ``deliveries`` channel, check the state again every second, and wait at most as long as a
    lease lives. An upstream failure (no answer, a timeout, a 5xx) gives the lease back and
    consumes nothing, so the client retries with the same proof. After the window the proof gets
    ``Redeemed`` (``payment_already_redeemed``). A response whose body is larger than
    ``max_stored_response_bytes`` is delivered, but not stored: a replay within the window gets
    ``Unstored``.
``entitlement``
    A bearer pass: whoever holds the proof gets the resource, served anew each time (the static
    body, or a new upstream call), until ``access_period`` seconds after the first successful
    delivery. After that it gets ``Redeemed``.

The redeemed marker lives as long as a proof could still obtain its receipt (the longer of
``store.used_tx_retention`` and ``store.receipt_retention``), so a marker expiring can never
hand out the resource again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from verifier.settings import RouteSettings

if TYPE_CHECKING:
    from verifier.gate import Gate

# A lease outlives the upstream call it covers (gate.upstream_timeout) by this much.
LEASE_MARGIN = 10.0
# A waiting copy checks the state again this often, even without a notice: a gate that died
# holding a lease announces nothing, its lease just expires.
RECHECK = 1.0

# KEYS: replay, delivered, lease. ARGV: lease token, lease ms.
_BEGIN_ONCE = """
local stored = redis.call('HGETALL', KEYS[1])
if #stored > 0 then
  return {'replay', stored}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'redeemed'}
end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'lease'}
end
return {'wait'}
"""

# KEYS: replay, delivered, lease. ARGV: lease token, replay ms, delivered s, now, channel,
# then the stored response's field/value pairs. A delivery whose lease expired under it and
# was retaken keeps the first stored response: every replay sees one answer.
_FINISH_ONCE = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[3])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], unpack(ARGV, 6))
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
end
redis.call('PUBLISH', ARGV[5], KEYS[3])
return 1
"""

# KEYS: lease. ARGV: lease token, channel.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('PUBLISH', ARGV[2], KEYS[1])
return 1
"""

# KEYS: access, delivered.
_BEGIN_ENTITLEMENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'access'
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'redeemed'
end
return 'first'
"""

# KEYS: access, delivered. ARGV: access ms, delivered s, now. The first delivery starts the period.
_FINISH_ENTITLEMENT = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as delivered, and as replayed: status, headers (repeats kept) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class UpstreamFailed:
    """The resource could not be produced. Nothing was consumed; the same proof may retry."""

    detail: str


@dataclass(frozen=True, slots=True)
class Served:
    """The resource: produced now, or (``replay``) the first delivery's stored response."""

    response: StoredResponse
    replay: bool = False


@dataclass(frozen=True, slots=True)
class Unstored:
    """Delivered already, within the window, but too large to have been kept for replays."""

    size: int
    limit: int


@dataclass(frozen=True, slots=True)
class Redeemed:
    """The payment has had what it bought: a final answer."""

    message: str


@dataclass(frozen=True, slots=True)
class Busy:
    """The first delivery is still in flight after the longest wait: try again."""


Produce = Callable[[], Awaitable[StoredResponse | UpstreamFailed]]
Result = Served | Unstored | Redeemed | Busy | UpstreamFailed


class Delivery:
    """The delivery policy of one route (see the module docstring)."""

    def __init__(self, gate: Gate, route: RouteSettings) -> None:
        settings = gate.settings
        self.path = route.path
        self.once = route.delivery == "once"
        self.replay_ms = route.replay_window * 1000
        self.access_ms = (route.access_period or 0) * 1000
        limit = route.max_stored_response_bytes
        self.max_stored = settings.gate.max_stored_response_bytes if limit is None else limit
        self.lease_seconds = settings.gate.upstream_timeout + LEASE_MARGIN
        self.redeemed_ttl = max(settings.store.used_tx_retention, settings.store.receipt_retention)
        self.keys = gate.store.keys
        self.watch = gate.watch
        redis = gate.redis
        self._begin_once = redis.register_script(_BEGIN_ONCE)
        self._finish_once = redis.register_script(_FINISH_ONCE)
        self._release = redis.register_script(_RELEASE)
        self._begin_entitlement = redis.register_script(_BEGIN_ENTITLEMENT)
        self._finish_entitlement = redis.register_script(_FINISH_ENTITLEMENT)

    async def deliver(self, consumption_key: str, produce: Produce) -> Result:
        """What the holder of the payment ``consumption_key`` gets now; ``produce`` makes the
        resource when this request is the one to deliver it."""
        if self.once:
            return await self._deliver_once(consumption_key, produce)
        return await self._deliver_entitlement(consumption_key, produce)

    async def _deliver_once(self, consumption_key: str, produce: Produce) -> Result:
        k, path = self.keys, self.path
        lease = k.delivery_lease(consumption_key, path)
        keys = [k.delivery_replay(consumption_key, path), k.delivered(consumption_key, path), lease]
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.lease_seconds
        while True:
            # Watch before reading, so that a notice sent between the read and the wait is seen.
            with self.watch(lease) as changed:
                state, *found = await self._begin_once(
                    keys=keys, args=[token, int(self.lease_seconds * 1000)]
                )
                if state != b"wait":
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return Busy()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(changed), min(left, RECHECK))
        if state == b"replay":
            return _load(found[0], self.max_stored)
        if state == b"redeemed":
            return Redeemed("this payment bought one delivery, and its replay window has passed")
        try:
            made = await produce()
        except Exception:
            await self._release(keys=[lease], args=[token, k.deliveries])
            raise
        if isinstance(made, UpstreamFailed):
            await self._release(keys=[lease], args=[token, k.deliveries])
            return made
        args: list[Any] = [token, self.replay_ms, self.redeemed_ttl, int(time.time())]
        await self._finish_once(keys=keys, args=[*args, k.deliveries, *self._fields(made)])
        return Served(made)

    def _fields(self, response: StoredResponse) -> list[bytes | str | int]:
        if len(response.body) > self.max_stored:
            return ["oversize", len(response.body)]
        headers = orjson.dumps([list(pair) for pair in response.headers])
        return ["status", response.status, "headers", headers, "body", response.body]

    async def _deliver_entitlement(self, consumption_key: str, produce: Produce) -> Result:
        k, path = self.keys, self.path
        keys = [k.delivery_access(consumption_key, path), k.delivered(consumption_key, path)]
        state = await self._begin_entitlement(keys=keys)
        if state == b"redeemed":
            return Redeemed("the access period this payment bought has ended")
        made = await produce()
        if isinstance(made, UpstreamFailed):
            return made
        if state == b"first":
            args = [self.access_ms, self.redeemed_ttl, int(time.time())]
            await self._finish_entitlement(keys=keys, args=args)
        return Served(made, replay=state == b"access")


def _load(flat: list[bytes], limit: int) -> Served | Unstored:
    """A stored response from its hash (``HGETALL``'s flat list of fields and values)."""
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    if b"oversize" in fields:
        return Unstored(int(fields[b"oversize"]), limit)
    headers = tuple((str(name), str(value)) for name, value in orjson.loads(fields[b"headers"]))
    return Served(StoredResponse(int(fields[b"status"]), headers, fields[b"body"]), replay=True)
