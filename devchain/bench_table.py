"""The benchmark's table: each figure with its target, as ``make bench`` prints it."""

from __future__ import annotations

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


def table(r: dict[str, Any]) -> list[Row]:
    base = r["queue_baseline_jobs_s"]
    v0 = r["verify_0ms_s"]
    one = r[scale_key(1)]
    flood = r["flood_honest_p50_ms"] / r["flood_honest_quiet_p50_ms"]
    rows = [
        Row("1 queue baseline (arq no-op, 1 worker)", f"{base:,.0f} jobs/s", "reference", None),
        Row(
            "2 verification, 1 worker, 0 ms RPC",
            f"{v0:,.0f}/s = {v0 / base:.2f}x baseline",
            ">= 0.6x",
            v0 / base >= 0.6,
        ),
        Row(
            "3 latency hiding, 50 ms RPC",
            f"{r['verify_50ms_s']:,.0f}/s = {r['verify_50ms_s'] / v0:.2f}x 0 ms",
            ">= 0.8x",
            r["verify_50ms_s"] / v0 >= 0.8,
        ),
        Row(
            "3 latency hiding, 200 ms RPC",
            f"{r['verify_200ms_s']:,.0f}/s = {r['verify_200ms_s'] / v0:.2f}x 0 ms",
            ">= 0.5x",
            r["verify_200ms_s"] / v0 >= 0.5,
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
    return rows


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
