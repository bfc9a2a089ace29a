"""Row 12 of ``make bench``: what one verification costs, read from the processes themselves.

One worker, 0 ms RPC, ``n`` ERC-20 proofs settled 50 at a time through the gate in the
benchmark's process. Over exactly that interval it reads:

- CPU time of the worker, the gate (this process) and redis-server: ``utime + stime`` from
  ``/proc/<pid>/stat`` (clock ticks, 10 ms each), before and after;
- Redis commands executed, per command (``INFO commandstats``: commands run inside Lua scripts
  are counted too, which is the work Redis does);
- round trips: the read events Redis processed (``INFO stats`` ``total_reads_processed``); a
  pipeline or a script call arrives as one read, so this counts client requests, not commands;
- bytes appended to the AOF (``INFO persistence`` ``aof_current_size``), with AOF switched on for
  this row only (``CONFIG SET appendonly yes``, the default ``everysec``);
- RPC requests at the canned node.

The background of an idle system (workers polling the queue, health checks, the gate's
subscription) runs during the interval too and is part of the figures; it is measured alone
over one second first and reported beside them, so a reader can tell it apart.

From the CPU figures, a projection: verifications per second one worker core, and one Redis
core, could carry (1000 / ms per verification).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devchain.bench import Bench

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
# What the measurement itself sends (one INFO per snapshot), left out of the counts.
_OURS = {"info", "config"}


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` so far, in milliseconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) * TICK_MS


async def _snapshot(redis: Any, pids: dict[str, int]) -> dict[str, Any]:
    info = await redis.info("all")
    calls = {
        key.removeprefix("cmdstat_"): int(value["calls"])
        for key, value in info.items()
        if key.startswith("cmdstat_")
    }
    return {
        "cpu": {name: cpu_ms(pid) for name, pid in pids.items()},
        "calls": calls,
        "reads": int(info["total_reads_processed"]),
        "aof": int(info.get("aof_current_size", 0)),
        "at": time.perf_counter(),
    }


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    calls = {
        name: n - before["calls"].get(name, 0)
        for name, n in after["calls"].items()
        if name not in _OURS and n - before["calls"].get(name, 0) > 0
    }
    return {
        "cpu": {k: after["cpu"][k] - before["cpu"][k] for k in after["cpu"]},
        "calls": calls,
        "reads": after["reads"] - before["reads"] - 1,  # the second snapshot's own INFO
        "aof": after["aof"] - before["aof"],
        "seconds": after["at"] - before["at"],
    }


async def _aof(redis: Any, on: bool) -> None:
    await redis.config_set("appendonly", "yes" if on else "no")
    deadline = time.monotonic() + 30
    while on:
        info = await redis.info("persistence")
        if info.get("aof_enabled") == 1 and not info.get("aof_rewrite_in_progress"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("AOF did not switch on")
        await asyncio.sleep(0.05)


async def verification_cost(bench: Bench, worker_pid: int, n: int) -> dict[str, Any]:
    """Row 12's figures (module docstring) for ``n`` proofs, 50 at a time."""
    redis = bench.gate.redis
    server = await redis.info("server")
    pids = {"worker": worker_pid, "gate": os.getpid(), "redis": int(server["process_id"])}
    await _aof(redis, True)
    try:
        headers = await bench.proofs(n)
        start = await _snapshot(redis, pids)
        await asyncio.sleep(1.0)
        idle = _delta(start, await _snapshot(redis, pids))

        rpc_before = await bench.stub_requests()
        before = await _snapshot(redis, pids)
        elapsed, ok = await bench.settle_all(headers, concurrency=50)
        after = await _snapshot(redis, pids)
        rpc = (await bench.stub_requests() - rpc_before) / n
        if ok != n:
            raise RuntimeError(f"only {ok} of {n} proofs verified")
    finally:
        await _aof(redis, False)
    d = _delta(before, after)
    per = {name: calls / n for name, calls in sorted(d["calls"].items(), key=lambda kv: -kv[1])}
    idle_share = d["seconds"] / idle["seconds"]  # the idle background scaled to this interval
    out: dict[str, Any] = {
        "cost_proofs": n,
        "cost_rate_s": n / elapsed,
        "cost_worker_cpu_ms": d["cpu"]["worker"] / n,
        "cost_gate_cpu_ms": d["cpu"]["gate"] / n,
        "cost_redis_cpu_ms": d["cpu"]["redis"] / n,
        "cost_redis_commands": sum(d["calls"].values()) / n,
        "cost_redis_round_trips": d["reads"] / n,
        "cost_aof_bytes": d["aof"] / n,
        "cost_rpc_requests": rpc,
        "cost_commands": per,
        "cost_idle_commands": sum(idle["calls"].values()) * idle_share / n,
        "cost_idle_round_trips": idle["reads"] * idle_share / n,
    }
    out["cost_per_worker_core_s"] = 1000 / max(out["cost_worker_cpu_ms"], 1e-9)
    out["cost_per_redis_core_s"] = 1000 / max(out["cost_redis_cpu_ms"], 1e-9)
    return out
