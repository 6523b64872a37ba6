"""Output: the JSON object and the Markdown report with its charts."""

from __future__ import annotations

import json
from pathlib import Path

from scheduler.backtest.optimum import hindsight_optimum
from scheduler.backtest.policies import make_policy
from scheduler.backtest.report import (
    ScenarioOutcome,
    dumps_line,
    json_document,
    write_report,
)
from scheduler.backtest.simulate import simulate
from tests.unit.scheduler.backtest.builders import standard_workload, two_site_world


def outcome() -> ScenarioOutcome:
    world = two_site_world()
    work = standard_workload()
    results = tuple(
        simulate(make_policy(n), world, work) for n in ("cheapest_now", "always_mine")
    )
    return ScenarioOutcome("base", results, hindsight_optimum(world, work), world)


def test_json_has_each_policy_and_its_fraction() -> None:
    document = json.loads(dumps_line(json_document([outcome()], {"period": "x"})))
    cheapest = document["policies"]["cheapest_now"]
    # 11,950 / 11,950 (see test_baselines and test_optimum); always_mine 6,800 / 11,950
    assert cheapest["fraction_of_optimum"] == 1.0
    assert document["policies"]["always_mine"]["fraction_of_optimum"] == round(6_800 / 11_950, 5)
    for key in ("profit_usd", "revenue_usd", "power_cost_usd", "mwh", "jobs_served",
                "deadline_misses", "interactive_latency_s"):
        assert key in cheapest
    assert document["optimum"]["profit_usd"] == 11_950.0
    assert "scenarios" not in document  # one scenario: its policies are at the top


def test_report_writes_markdown_and_charts(tmp_path: Path) -> None:
    path = write_report(tmp_path / "out", [outcome()], {"period": "x"})
    text = path.read_text()
    assert "| cheapest_now |" in text and "hindsight optimum" in text
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == ["cumulative_profit_base.png", "price_vs_mode_base_cheapest_now.png"]
    for name in pngs:
        assert f"({name})" in text
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "out" / "results.json").read_text())["policies"]
