"""The benchmark's table: each figure with its target, as ``make bench`` prints it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

# (label, results key, target) of the per-family request counts, besides EVM's.
FAMILY_ROWS = [
    ("Solana", "solana_rpc_per_verification", 1.2),
    ("Stellar", "stellar_rpc_per_verification", 2.0),
    ("TON", "tvm_rpc_per_verification", 2.0),
]

# (workers, target ratio to 1 worker) of the latency-bound scale-out rows (200 ms RPC).
SCALE_ROWS = [(2, 1.9), (4, 3.6)]


def scale_key(workers: int) -> str:
    """The results key of the latency-bound scale-out throughput with ``workers`` workers."""
    return f"scale_{workers}_worker{'s' if workers > 1 else ''}_200ms_s"


@dataclass
class Row:
    name: str
    figure: str
    target: str
    ok: bool | None


def _ratio(r: dict[str, Any], key: str, of: float) -> tuple[float, str]:
    """A ratio and how it reads: the median of the interleaved runs' ratios, with their spread,
    when the results have them (``<key>_ratios``); else the ratio of the two figures."""
    ratios = r.get(key.removesuffix("_s") + "_ratios")
    if not ratios:
        return r[key] / of, ""
    mid = statistics.median(ratios)
    return mid, f" (median of {len(ratios)} interleaved: {min(ratios):.2f}-{max(ratios):.2f}x)"


def table(r: dict[str, Any]) -> list[Row]:
    base = r["queue_baseline_jobs_s"]
    v0 = r["verify_0ms_s"]
    r2, s2 = _ratio(r, "verify_0ms_s", base)
    r50, s50 = _ratio(r, "verify_50ms_s", v0)
    r200, s200 = _ratio(r, "verify_200ms_s", v0)
    one = r[scale_key(1)]
    flood = r["flood_honest_p50_ms"] / r["flood_honest_quiet_p50_ms"]
    rows = [
        Row("1 queue baseline (arq no-op, 1 worker)", f"{base:,.0f} jobs/s", "reference", None),
        Row(
            "2 verification, 1 worker, 0 ms RPC",
            f"{v0:,.0f}/s = {r2:.2f}x baseline{s2}",
            ">= 0.6x",
            r2 >= 0.6,
        ),
        Row(
            "3 latency hiding, 50 ms RPC",
            f"{r['verify_50ms_s']:,.0f}/s = {r50:.2f}x 0 ms{s50}",
            ">= 0.8x",
            r50 >= 0.8,
        ),
        Row(
            "3 latency hiding, 200 ms RPC",
            f"{r['verify_200ms_s']:,.0f}/s = {r200:.2f}x 0 ms{s200}",
            ">= 0.5x",
            r200 >= 0.5,
        ),
        Row(
            "4 gate overhead @100/s p50",
            f"{r['gate_overhead_p50_ms']:.1f} ms (RPC {r['rpc_time_ms']:.1f} ms subtracted)",
            "<= 10 ms",
            r["gate_overhead_p50_ms"] <= 10,
        ),
        Row(
            "4 gate overhead @100/s p99",
            f"{r['gate_overhead_p99_ms']:.1f} ms",
            "<= 40 ms",
            r["gate_overhead_p99_ms"] <= 40,
        ),
        Row("4 gate overhead @100/s max", f"{r['gate_overhead_max_ms']:.1f} ms", "-", None),
        Row(
            "5 RPC requests / verification, EVM",
            f"{r['evm_rpc_per_verification']:.2f}",
            "<= 1.2",
            r["evm_rpc_per_verification"] <= 1.2,
        ),
        *[
            Row(
                f"5 RPC requests / verification, {family}",
                f"{r[key]:.2f}",
                f"<= {limit:g}",
                r[key] <= limit,
            )
            for family, key, limit in FAMILY_ROWS
            if key in r
        ],
        Row(
            "6 challenge issuance, 1 gate process",
            f"{r['challenges_s']:,.0f} offers/s",
            ">= 20,000/s",
            r["challenges_s"] >= 20000,
        ),
        Row(
            "7 HTTP gate, paid requests",
            f"{r['http_paid_rps']:,.0f} req/s ({r['http_verification_share']:.0%} in verification)",
            "-",
            None,
        ),
        Row("7 HTTP gate, unpaid 402s", f"{r['http_unpaid_rps']:,.0f} req/s", "-", None),
        Row(
            "8 scale-out @50 ms, 2 workers vs 1 (bound by the 2 shared cores)",
            f"{r['scale_2_workers_50ms_s']:,.0f}/s vs {r['scale_1_worker_50ms_s']:,.0f}/s = "
            f"{r['scale_2_workers_50ms_s'] / r['scale_1_worker_50ms_s']:.2f}x",
            "-",
            None,
        ),
        *[
            Row(
                f"8 scale-out @{r['scale_rpc_ms']:.0f} ms, max_jobs {r['scale_max_jobs']}, "
                f"{count} workers vs 1",
                f"{r[scale_key(count)]:,.0f}/s vs {one:,.0f}/s = {r[scale_key(count)] / one:.2f}x "
                f"(CPU {r[scale_key(count) + '_cpu_busy']:.0%} busy)",
                f">= {limit:g}x",
                r[scale_key(count)] / one >= limit,
            )
            for count, limit in SCALE_ROWS
        ],
        Row(
            "9 worker RSS idle / peak under load",
            f"{r['worker_rss_idle_mb']:.0f} / {r['worker_rss_load_mb']:.0f} MB",
            "<= 150 MB",
            r["worker_rss_load_mb"] <= 150,
        ),
        Row(
            f"10 honest proof p50 under {r['flood_proofs']:,} never-mined "
            f"@{r['flood_rpc_ms']:.0f} ms",
            f"{r['flood_honest_p50_ms']:.0f} ms vs {r['flood_honest_quiet_p50_ms']:.0f} ms quiet = "
            f"{flood:.2f}x",
            "<= 2x",
            flood <= 2,
        ),
    ]
    if "exact_settlements_s" in r:
        rows += [
            Row(
                "11 exact, local settlement, 1 worker (anvil, automine)",
                f"{r['exact_settlements_s']:,.0f} settlements/s",
                "-",
                None,
            ),
            Row(
                "11 RPC requests / exact settlement",
                f"{r['exact_rpc_per_settlement']:.2f}",
                "-",
                None,
            ),
        ]
    if "cost_worker_cpu_ms" in r:
        rows += cost_rows(r)
    return rows


def cost_rows(r: dict[str, Any]) -> list[Row]:
    """Row 12: what one verification costs (``devchain.bench_cost``)."""
    name = f"12 per verification ({r['cost_proofs']:,} ERC-20 proofs, 50 at a time)"
    return [
        Row(
            f"{name}: worker CPU",
            f"{r['cost_worker_cpu_ms']:.2f} ms (~{r['cost_per_worker_core_s']:,.0f}/s per core)",
            "<= 1.2 ms",
            r["cost_worker_cpu_ms"] <= 1.2,
        ),
        Row(f"{name}: gate CPU", f"{r['cost_gate_cpu_ms']:.2f} ms", "-", None),
        Row(
            f"{name}: Redis CPU",
            f"{r['cost_redis_cpu_ms']:.2f} ms (~{r['cost_per_redis_core_s']:,.0f}/s per core)",
            "-",
            None,
        ),
        Row(
            f"{name}: Redis commands",
            f"{r['cost_redis_commands']:.1f} (idle background {r['cost_idle_commands']:.1f})",
            "<= 15",
            r["cost_redis_commands"] <= 15,
        ),
        Row(
            f"{name}: Redis round trips",
            f"{r['cost_redis_round_trips']:.1f} (idle background {r['cost_idle_round_trips']:.1f})",
            "<= 6",
            r["cost_redis_round_trips"] <= 6,
        ),
        Row(f"{name}: AOF bytes", f"{r['cost_aof_bytes']:,.0f} B", "-", None),
        Row(f"{name}: RPC requests", f"{r['cost_rpc_requests']:.2f}", "-", None),
    ]


def render(rows: list[Row]) -> str:
    w = [
        max(len(x) for x in col)
        for col in zip(*[(r.name, r.figure, r.target) for r in rows], strict=True)
    ]
    lines = [f"{'row':<{w[0]}}  {'measured':<{w[1]}}  {'target':<{w[2]}}  ok"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        mark = "" if r.ok is None else ("yes" if r.ok else "NO")
        lines.append(f"{r.name:<{w[0]}}  {r.figure:<{w[1]}}  {r.target:<{w[2]}}  {mark}")
    return "\n".join(lines)
