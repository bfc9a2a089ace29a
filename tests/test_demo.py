"""``make demo`` end to end (``python -m devchain.demo``), as a user runs it from a clone: every
payment verified, and the operations it shows (trace ids, signed webhooks, metrics) there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_demo_pays_everything_and_shows_traces_webhooks_and_metrics() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "devchain.demo", "--workers", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "demo finished: every payment verified" in out
    paid = [line for line in out.splitlines() if re.search(r"\s200\s+paid", line)]
    assert len(paid) >= 8  # 3 EVM routes, Solana, Stellar, TON, exact, the replay
    assert all(re.search(r"trace [0-9a-f]{32}$", line) for line in paid), paid
    delivered = re.search(r"(\d+) receipts delivered, (\d+) signatures verified", out)
    assert delivered and int(delivered.group(1)) == 7 and int(delivered.group(2)) >= 7, out
    assert re.search(r'x402_outcomes_total\{component="gate".*outcome="receipt".*\} \d', out)
    assert re.search(r'x402_outcomes_total\{component="worker".*outcome="receipt".*\} \d', out)
