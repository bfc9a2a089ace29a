"""Prometheus metrics of gates and workers (``prometheus-client``).

Names (all ``x402_``; labels in braces):

* ``x402_outcomes_total{component, scheme, network, outcome}``: answers, ``outcome`` being
  ``receipt`` or the failure's reason code (``component`` ``gate`` counts what clients were told,
  ``worker`` what verifications ended with).
* ``x402_answer_seconds{scheme, network}`` (histogram): from a proof reaching ``Gate.settle`` to
  its answer, pending ones included.
* ``x402_step_seconds{step}`` (histogram): the worker's steps, ``observe`` (chain reads),
  ``settle`` (an exact payment's checks and broadcast) and ``claim`` (the atomic claim).
* ``x402_rpc_requests_total{host, result}`` and ``x402_rpc_seconds{host}`` (histogram): every
  HTTP request of every adapter, by host only (an RPC URL may carry a key in its path or query;
  it never becomes a label). ``result`` is ``ok`` or ``error``.
* ``x402_retries_total{reason}``: attempts that ended transient and were scheduled again.
* ``x402_claims_total{result}``: ``new`` (a payment counted), ``same`` (a double submission of
  one that counted), ``tx_used`` and ``nonce_used`` (refused: consumed by another proof).
* ``x402_settlements_total{network, result}``: exact settlements broadcast (``sent``), found on
  chain (``found``), replaced (``replaced``), refused before sending (``refused``).
* ``x402_queue_depth`` and ``x402_queue_oldest_seconds`` (gauges, read from Redis when
  scraped, on workers): jobs due now (not those waiting for a retry), and how long the oldest
  due one has waited.

Workers serve ``/metrics`` on ``worker.metrics_port``; the HTTP gate on ``gate.metrics_path``.
Under several processes of one kind on one host (uvicorn ``--workers``, or workers side by
side), set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by them: prometheus-client
then aggregates every process's values at scrape (its multiprocess mode).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from redis import Redis as SyncRedis

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

OUTCOMES = Counter(
    "x402_outcomes", "Answers, by outcome", ["component", "scheme", "network", "outcome"]
)
ANSWER_SECONDS = Histogram(
    "x402_answer_seconds", "Proof to answer at the gate", ["scheme", "network"], buckets=_LATENCY
)
STEP_SECONDS = Histogram("x402_step_seconds", "Worker step durations", ["step"], buckets=_LATENCY)
RPC_REQUESTS = Counter("x402_rpc_requests", "Adapter HTTP requests", ["host", "result"])
RPC_SECONDS = Histogram("x402_rpc_seconds", "Adapter HTTP request time", ["host"], buckets=_LATENCY)
RETRIES = Counter("x402_retries", "Attempts scheduled again", ["reason"])
CLAIMS = Counter("x402_claims", "Claims of payments, by result", ["result"])
SETTLEMENTS = Counter("x402_settlements", "Exact settlements", ["network", "result"])


def host_of(url: str) -> str:
    """The host (and port) of ``url``: never its path or query, which may hold a key."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or "?"


def rpc_observed(url: str, seconds: float, ok: bool) -> None:
    host = host_of(url)
    RPC_REQUESTS.labels(host, "ok" if ok else "error").inc()
    RPC_SECONDS.labels(host).observe(seconds)


def settlement_observed(network: str, result: str) -> None:
    SETTLEMENTS.labels(network, result).inc()


class Timer:
    """``with Timer(STEP_SECONDS.labels("observe")):`` observes the block's duration."""

    def __init__(self, histogram: Any) -> None:
        self._histogram = histogram

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._histogram.observe(time.perf_counter() - self._start)


class QueueCollector:
    """``x402_queue_depth`` and ``x402_queue_oldest_seconds``, read from Redis at scrape.

    Due jobs are those scored up to now; a fresh job is scored ``FRESH_AHEAD_MS`` before its
    enqueue time (``verifier.queue``), which gives its age back.
    """

    def __init__(self, redis: SyncRedis, queue: str) -> None:
        self._redis = redis
        self._queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from verifier.queue import FRESH_AHEAD_MS

        now_ms = time.time() * 1000
        depth = GaugeMetricFamily("x402_queue_depth", "Jobs due now")
        oldest = GaugeMetricFamily("x402_queue_oldest_seconds", "Age of the oldest due job")
        try:
            count = int(self._redis.zcount(self._queue, "-inf", now_ms))  # type: ignore[arg-type]
            head: Any = self._redis.zrangebyscore(
                self._queue, "-inf", now_ms, start=0, num=1, withscores=True
            )
        except (RedisError, OSError):  # a scrape must not fail while Redis is away: no sample
            return
        depth.add_metric([], count)
        age = 0.0
        if head:
            score = float(head[0][1])
            due = score + FRESH_AHEAD_MS if score < now_ms - FRESH_AHEAD_MS // 10 else score
            age = max(0.0, (now_ms - due) / 1000)
        oldest.add_metric([], age)
        yield depth
        yield oldest


def registry() -> CollectorRegistry:
    """What a scrape reads: this process's metrics, or every process's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    from prometheus_client import REGISTRY

    return REGISTRY


def render() -> tuple[bytes, str]:
    """The exposition of ``registry()``, and its content type."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def serve_worker_metrics(port: int, redis_url: str, queue: str, host: str = "0.0.0.0") -> None:
    """``/metrics`` of a worker process on ``port`` (a thread), with the queue's gauges."""
    from redis import Redis as SyncRedis

    from verifier.queue import RedisAddress

    at = RedisAddress.parse(redis_url)
    sync = SyncRedis(
        host=at.host,
        port=at.port,
        unix_socket_path=at.unix_socket_path,
        db=at.database,
        username=at.username,
        password=at.password,
        ssl=at.ssl,
        socket_timeout=2,
    )
    target = registry()
    target.register(QueueCollector(sync, queue))
    start_http_server(port, addr=host, registry=target)
