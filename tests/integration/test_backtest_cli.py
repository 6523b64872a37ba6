"""`hashserve backtest` end to end: one week of real prices, Bitcoin data and the Azure traces on
the example fleet, every policy and the optimum fanned out on a local Ray, --json and --report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_one_week_through_the_cli_on_ray(tmp_path: Path) -> None:
    report = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )}
    completed = subprocess.run(
        [
            sys.executable, "-m", "hashserve", "backtest",
            "--start", "2024-07-01", "--end", "2024-07-07",
            "--json", "--report", str(report),
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    document = json.loads(lines[-1])
    assert document["ray"] is True
    policies = document["policies"]
    assert set(policies) == {"hashserve", "always_mine", "serve_first", "cheapest_now",
                             "round_robin"}
    ours = policies["hashserve"]
    assert ours["fraction_of_optimum"] >= 0.95
    for name, other in policies.items():
        if name != "hashserve":
            assert ours["profit_usd"] > other["profit_usd"], name
        assert other["fraction_of_optimum"] <= 1.0 + 1e-9, name
    assert ours["deadline_misses_by_tier"]["interactive"] == 0
    assert ours["jobs_served"] > 0 and ours["mwh"]["mining"] > 0
    assert set(ours["interactive_latency_s"]) == {"p50", "p95", "p99"}
    assert document["optimum"]["profit_usd"] > 0
    text = (report / "report.md").read_text()
    assert "hashserve" in text and "hindsight optimum" in text
    for png in ("cumulative_profit_base.png", "price_vs_mode_base_hashserve.png"):
        assert (report / png).stat().st_size > 10_000
        assert f"({png})" in text
    assert json.loads((report / "results.json").read_text())["policies"].keys() == policies.keys()
