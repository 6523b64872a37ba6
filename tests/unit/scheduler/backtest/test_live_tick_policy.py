"""The live core as a backtest policy, on the hand-worked two-site world."""

from __future__ import annotations

from scheduler.backtest.optimum import hindsight_optimum
from scheduler.backtest.policies import DEFAULT_POLICIES, LiveTickPolicy
from scheduler.backtest.simulate import simulate
from tests.unit.scheduler.backtest.builders import standard_workload, two_site_world


def test_the_live_core_serves_the_work_within_the_plant_and_near_the_optimum() -> None:
    world = two_site_world(with_fleet=True)
    work = standard_workload()
    # simulate checks every hour's plan against caps, GPUs and blocks (PlanError otherwise)
    result = simulate(LiveTickPolicy(), world, work)
    best = hindsight_optimum(world, work)
    assert sum(result.requests_served_by_tier.values()) > 0
    assert result.profit_usd <= best.profit_usd + 1e-6
    assert result.profit_usd > 0.9 * best.profit_usd


def test_it_is_not_run_unless_asked() -> None:
    assert "hashserve_live" not in DEFAULT_POLICIES
