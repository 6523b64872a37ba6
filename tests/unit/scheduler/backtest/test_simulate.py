"""The simulator's checks and books: plans must fit the plant, deadlines drop work."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.backtest.policies.base import Assignment, HourPlan, HourView
from scheduler.backtest.runner import PreparedScenario, run_all
from scheduler.backtest.simulate import PlanError, simulate
from scheduler.backtest.workload import Workload
from scheduler.backtest.world import World
from scheduler.core.models import Tier
from tests.unit.scheduler.backtest.builders import (
    standard_workload,
    two_site_world,
    work_class,
    workload,
)


class Scripted:
    """A policy that returns a fixed plan per hour and records what it was shown."""

    name = "scripted"

    def __init__(self, plans: list[HourPlan]) -> None:
        self.plans = plans
        self.views: list[HourView] = []

    def reset(self, world: World, workload: Workload) -> None:
        self.views = []

    def decide(self, view: HourView) -> HourPlan:
        self.views.append(view)
        return self.plans[view.t]


def idle_plan(mining: tuple[float, float] = (0.0, 0.0)) -> HourPlan:
    return HourPlan(np.array(mining), np.zeros(2), ())


def test_books_one_hour_by_hand() -> None:
    # Hour 0: A mines 9 MW, 1,000 GPUs on at A serving 500 Mtok of interactive work.
    # A draws 9 + 500 * 1 kW + 500 * 0.2 kW = 9.6 MW at $20: 192. Mining 9 * 100 = 900.
    # AI 500 * $2 = 1,000. Profit 1,708; the other 1,000 Mtok of the hour are missed.
    work = workload([(work_class(Tier.INTERACTIVE, 2.0, 1), (1500, 0, 0))])
    first = HourPlan(np.array([9.0, 0.0]), np.array([1000.0, 0.0]), (Assignment(0, 0, 500.0),))
    result = simulate(Scripted([first, idle_plan(), idle_plan()]), two_site_world(), work)
    assert result.profit_by_hour_usd[0] == pytest.approx(1_708.0)
    assert result.ai_busy_mwh == pytest.approx(0.5)
    assert result.ai_idle_mwh == pytest.approx(0.1)
    assert result.deadline_misses_by_tier["interactive"] == pytest.approx(1.0e6)
    assert result.requests_served_by_tier["interactive"] == pytest.approx(0.5e6)


def test_flex_waits_until_its_last_hour_then_is_missed() -> None:
    work = workload([(work_class(Tier.FLEX, 1.0, 2), (100, 0, 0))])
    policy = Scripted([idle_plan()] * 3)
    result = simulate(policy, two_site_world(), work)
    assert [len(v.queue) for v in policy.views] == [1, 1, 0]  # due hour 1, dropped after it
    assert result.deadline_misses_by_tier["flex"] == pytest.approx(1e5)


def test_outlook_is_the_forecast_and_stops_at_the_end() -> None:
    policy = Scripted([idle_plan()] * 3)
    simulate(policy, two_site_world(), standard_workload())
    ahead = policy.views[0].outlook_usd_per_mwh
    np.testing.assert_allclose(ahead[0, :2], [50, 200])
    assert np.isnan(ahead[:, 2:]).all()


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        # 10 MW of mining + 1,000 busy GPUs (1 MW) at A: over its 10 MW cap
        (HourPlan(np.array([10.0, 0.0]), np.array([1000.0, 0.0]), (Assignment(0, 0, 1000.0),)),
         "over its cap"),
        # more work than GPUs on
        (HourPlan(np.zeros(2), np.array([10.0, 0.0]), (Assignment(0, 0, 100.0),)),
         "GPU-hours"),
        # work that is not queued
        (HourPlan(np.zeros(2), np.zeros(2), (Assignment(99, 0, 1.0),)), "not queued"),
        # mining beyond the ASICs
        (HourPlan(np.array([0.0, 4.0]), np.zeros(2), ()), "ASIC"),
    ],
)
def test_impossible_plans_are_refused(plan: HourPlan, words: str) -> None:
    with pytest.raises(PlanError, match=words):
        simulate(Scripted([plan] * 3), two_site_world(), standard_workload())


def test_run_all_in_process_collects_every_policy_and_the_optimum() -> None:
    prepared = [PreparedScenario("base", two_site_world(), standard_workload())]
    (outcome,) = run_all(prepared, ["cheapest_now", "serve_first"], use_ray=False)
    assert [r.policy for r in outcome.results] == ["cheapest_now", "serve_first"]
    assert outcome.optimum is not None
    assert outcome.optimum.profit_usd == pytest.approx(11_950.0)
