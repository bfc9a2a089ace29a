"""What guards the operator APIs: a bearer token, and a rate limit per client.

The facilitator endpoint (``verifier.facilitator_api``) and the gate's receipts endpoint take
``Authorization: Bearer <token>``, the token read from the variable ``api.token_env`` names
(default ``X402_API_TOKEN``). Compared in constant time; with no token configured every request
is refused, so an endpoint is never open by accident.

The rate limit is a token bucket per client key (the caller's address), held in the process:
each process of a facilitator limits on its own, so N processes let a client through N times
the rate. Buckets idle long enough to be full again are forgotten, so the table stays bounded by
the clients of the last few seconds.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable


def bearer_ok(authorization: str | None, token: str | None) -> bool:
    """``authorization`` (the header's value) is ``Bearer <token>``; ``False`` when no token."""
    if not token or not authorization:
        return False
    kind, _, given = authorization.partition(" ")
    if kind.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class RateLimiter:
    """A token bucket per key: ``rate`` per second, at most ``burst`` at once."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._swept = clock()

    def allow(self, key: str) -> float:
        """``0.0`` when ``key`` may go now (and it is counted); else the seconds to wait."""
        now = self._clock()
        self._sweep(now)
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        full_after = self.burst / self.rate
        if now - self._swept < full_after:
            return
        self._swept = now
        self._buckets = {
            k: (tokens, at) for k, (tokens, at) in self._buckets.items() if now - at < full_after
        }
