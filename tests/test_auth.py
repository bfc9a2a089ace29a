"""The operator APIs' guards: the bearer token and the rate limit per client."""

from __future__ import annotations

import pytest

from verifier.auth import RateLimiter, bearer_ok


@pytest.mark.parametrize(
    ("header", "token", "ok"),
    [
        ("Bearer s3cret-token", "s3cret-token", True),
        ("bearer s3cret-token", "s3cret-token", True),
        ("Bearer s3cret-tokeN", "s3cret-token", False),
        ("Bearer s3cret-token", None, False),  # no token configured: nothing is open
        ("Bearer ", "", False),
        (None, "s3cret-token", False),
        ("Basic s3cret-token", "s3cret-token", False),
        ("s3cret-token", "s3cret-token", False),
    ],
)
def test_bearer_token(header: str | None, token: str | None, ok: bool) -> None:
    assert bearer_ok(header, token) is ok


def test_rate_limit_is_per_client_and_refills() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.allow("a")
    assert wait == pytest.approx(0.5)
    assert limiter.allow("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert limiter.allow("a") == 0.0
    assert limiter.allow("a") > 0


def test_idle_buckets_are_forgotten() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=10.0, burst=5, clock=lambda: now[0])
    for i in range(1000):
        limiter.allow(f"client-{i}")
    now[0] += 1.0  # every bucket is full again after burst / rate = 0.5 s
    limiter.allow("late")
    assert len(limiter._buckets) == 1
