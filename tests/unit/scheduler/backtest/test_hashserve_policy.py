"""hashserve's policy: the live planner and placer, driven hour by hour on small worlds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scheduler.backtest.optimum import hindsight_optimum
from scheduler.backtest.policies import BASELINES, HashservePolicy, make_policy
from scheduler.backtest.simulate import simulate
from scheduler.backtest.world import World
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


def test_no_baseline_beats_it_on_the_hand_worked_world() -> None:
    world = two_site_world(with_fleet=True)
    ours = simulate(HashservePolicy(), world, standard_workload()).profit_usd
    for name in BASELINES:
        assert ours >= simulate(make_policy(name), world, standard_workload()).profit_usd - 1e-6


def test_prices_ai_at_the_opportunity_price_where_cheapest_now_does_not() -> None:
    # Interactive 1,000 Mtok an hour only. Hour 0: A is cheapest by price (20) but at its cap,
    # so its GPUs displace mining worth 100 - 20 = 80/MWh; B costs 60 with spare power.
    # hashserve serves at B (60 x 1 MWh); cheapest_now at A (20 + 80 of lost mining): 40 less.
    # Hours 1 and 2 both use B. hashserve: mining (10 + 10 + 0 + 9) * 100 = 2,900, AI 6,000,
    # power A 10*20 + 10*50 = 700, B 4 * 100 = 400: 2,900 + 6,000 - 1,100 = 7,800 = the LP.
    world = two_site_world(with_fleet=True)
    work = workload([(work_class(Tier.INTERACTIVE, 2.0, 1), (1000, 1000, 1000))])
    ours = simulate(HashservePolicy(), world, work).profit_usd
    assert ours == pytest.approx(7_800.0)
    assert ours == pytest.approx(hindsight_optimum(world, work).profit_usd)
    assert simulate(make_policy("cheapest_now"), world, work).profit_usd == pytest.approx(7_760.0)
    for name in BASELINES:
        assert ours > simulate(make_policy(name), world, work).profit_usd


def b_only_world() -> World:
    """The hand-worked world with GPUs at B alone; B's prices 80 / 10 / 80."""
    base = two_site_world(price=((500, 500, 500), (80, 10, 80)), with_fleet=True)
    world = replace(base, pools=base.pools[1:])
    fleet = world.fleet
    assert fleet is not None
    return replace(
        world,
        fleet=replace(fleet, sites=(replace(fleet.sites[0], gpu_groups=()), fleet.sites[1])),
        pool_group=(0,),
    )


def test_flex_work_waits_for_the_cheap_hour() -> None:
    # Only B has GPUs (spare power, not at its cap); B's prices 80 / 10 / 80 are known ahead
    # (day-ahead). Flex work from hour 0 with 3 h is deferred by the placer to hour 1.
    world = b_only_world()
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


def test_flex_work_never_waits_into_its_last_hour() -> None:
    # B alone has GPUs; its price 80 / 10 / 80. Flex work of hour 0 may run in hours 0 and 1
    # only, and hour 1 is cheap; but interactive work fills B's GPUs in hour 1. Waiting into the
    # last allowed hour would leave the flex work no hour to run in: it runs now instead.
    world = b_only_world()
    flex = work_class(Tier.FLEX, 1.0, 2)
    interactive = work_class(Tier.INTERACTIVE, 2.0, 1)
    work = workload([(flex, (800, 0, 0)), (interactive, (0, 100_000, 0))])
    result = simulate(HashservePolicy(), world, work)
    assert result.deadline_misses_by_tier["flex"] == 0
    assert result.ai_mw[1, 0] == pytest.approx(0.8)
