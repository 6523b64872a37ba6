"""hashserve's policy: the live planner and placer, driven hour by hour on small worlds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scheduler.backtest.optimum import hindsight_optimum
from scheduler.backtest.policies import BASELINES, HashservePolicy, make_policy
from scheduler.backtest.simulate import simulate
from scheduler.core.models import Tier
from tests.unit.scheduler.backtest.builders import (
    standard_workload,
    two_site_world,
    work_class,
    workload,
)


def test_matches_the_optimum_on_the_hand_worked_world() -> None:
    # See test_optimum.test_two_sites_three_hours_by_hand: 11,950. With 0.5 MW blocks the LP's
    # plan is still feasible (A mines 8 / 9.5 / 0), and the planner and placer find it: the
    # interactive work fills B (price 60 < A's opportunity price max(20, R_mine 100)), the flex
    # work takes A's free GPUs at 100 now (B is full, so its cheap hours are not advertised).
    world = two_site_world(with_fleet=True)
    result = simulate(HashservePolicy(), world, standard_workload())
    assert result.profit_usd == pytest.approx(11_950.0, abs=1e-3)
    assert result.deadline_misses == 0
    np.testing.assert_allclose(result.mining_mw[1], [3.0, 3.0, 3.0])
    assert result.mining_mw[0, 2] == 0.0  # 200 > R_mine 100: A curtails


def test_beats_every_baseline_here() -> None:
    world = two_site_world(with_fleet=True)
    ours = simulate(HashservePolicy(), world, standard_workload()).profit_usd
    for name in BASELINES:
        assert ours > simulate(make_policy(name), world, standard_workload()).profit_usd


def test_flex_work_waits_for_the_cheap_hour() -> None:
    # Only B has GPUs (spare power, not at its cap); B's prices 80 / 10 / 80 are known ahead
    # (day-ahead). Flex work from hour 0 with 3 h is deferred by the placer to hour 1.
    base = two_site_world(price=((500, 500, 500), (80, 10, 80)), with_fleet=True)
    world = replace(base, pools=base.pools[1:])
    fleet = world.fleet
    assert fleet is not None
    world = replace(
        world,
        fleet=replace(fleet, sites=(replace(fleet.sites[0], gpu_groups=()), fleet.sites[1])),
        pool_group=(0,),
    )
    flex = work_class(Tier.FLEX, 1.0, 3)
    result = simulate(HashservePolicy(), world, workload([(flex, (800, 0, 0))]))
    np.testing.assert_allclose(result.ai_mw[1], [0.0, 0.8, 0.0], atol=1e-9)
    bound = hindsight_optimum(world, workload([(flex, (800, 0, 0))])).profit_usd
    assert result.profit_usd == pytest.approx(bound)


def test_interactive_work_never_waits() -> None:
    # The same world with interactive work: served in its hour even at 80.
    base = two_site_world(price=((500, 500, 500), (80, 10, 80)), with_fleet=True)
    interactive = work_class(Tier.INTERACTIVE, 2.0, 1)
    result = simulate(HashservePolicy(), base, workload([(interactive, (800, 0, 0))]))
    assert result.deadline_misses == 0
    assert result.ai_mw[:, 0].sum() == pytest.approx(0.8)


def test_no_gpu_draw_without_work() -> None:
    # Idle GPUs are switched off by the plan (no standby asked for): no idle MWh.
    result = simulate(HashservePolicy(), two_site_world(with_fleet=True), standard_workload())
    assert result.ai_idle_mwh == pytest.approx(0.0)


def test_needs_a_fleet() -> None:
    with pytest.raises(ValueError, match="fleet"):
        simulate(HashservePolicy(), two_site_world(), standard_workload())
