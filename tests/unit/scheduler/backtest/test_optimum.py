"""The hindsight optimum: hand-worked cases, deadlines, blocks, and the bound it must keep."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scheduler.backtest.optimum import hindsight_optimum
from scheduler.backtest.policies import BASELINES, make_policy
from scheduler.backtest.simulate import simulate
from scheduler.backtest.workload import Workload
from scheduler.backtest.world import World
from scheduler.core.models import Tier
from tests.unit.scheduler.backtest.builders import (
    pool,
    standard_workload,
    two_site_world,
    work_class,
    workload,
)


def test_two_sites_three_hours_by_hand() -> None:
    # Site A: cap 10 MW all ASICs, prices 20/50/200; site B: cap 5, 3 MW ASICs, prices 60/10/30;
    # R_mine 100 everywhere; a GPU-hour is 1 Mtok and 0.001 MWh busy (idle GPUs may be off).
    # What a GPU-hour of AI costs: at B (spare power) its price, 0.06/0.01/0.03; at A (at its
    # cap while mining runs) max(price, R_mine): 0.10/0.10/0.20.
    # Interactive 1,500 Mtok an hour (its own hour): B's 1,000 GPUs, then 500 at A, every hour.
    # Flex 1,500 Mtok from hour 0 (3 h): A's free GPUs at 0.10 in hour 0 or 1 (tie), not 2.
    # Say hour 0: A runs 2 MW of AI and mines 8 MW; hour 1: 0.5 MW AI, 9.5 mining; hour 2:
    # 0.5 MW AI, no mining (200 > 100). B: 1 MW AI and 3 MW mining every hour.
    #   mining revenue (8 + 9.5 + 0 + 3 * 3) * 100       =  2,650
    #   AI revenue 4,500 * 2 + 1,500 * 1                  = 10,500
    #   power A: 10*20 + 10*50 + 0.5*200 = 800; B: 4*(60 + 10 + 30) = 400; total 1,200
    #   profit 2,650 + 10,500 - 1,200                     = 11,950
    result = hindsight_optimum(two_site_world(), standard_workload())
    assert result.profit_usd == pytest.approx(11_950.0, abs=1e-6)
    assert result.mining_revenue_usd == pytest.approx(2_650.0, abs=1e-6)
    assert result.ai_revenue_usd == pytest.approx(10_500.0, abs=1e-6)
    assert result.power_cost_usd == pytest.approx(1_200.0, abs=1e-6)
    assert result.mining_mw[0, 2] == pytest.approx(0.0, abs=1e-9)
    assert result.mining_mw[0, :2].sum() == pytest.approx(17.5)
    np.testing.assert_allclose(result.ai_mw[1], [1.0, 1.0, 1.0])
    assert result.unserved_mtok.sum() == pytest.approx(0.0, abs=1e-9)


def test_a_tie_broken_by_hashprice() -> None:
    # Same world, no ASICs at B, R_mine 100/120/100: AI at A in hour 1 now forgoes 120, so the
    # flex work goes to A in hour 0. Mining A: 8 (h0), 9.5 (h1), 0 (h2):
    #   8 * (100 - 20) + 9.5 * (120 - 50) = 640 + 665 = 1,305
    #   AI energy: B 1 MW * (60 + 10 + 30) = 100; A 2*20 + 0.5*50 + 0.5*200 = 165
    #   profit 1,305 + 10,500 - 265 = 11,540
    base = two_site_world()
    world = replace(
        base,
        asic_mw=np.array([10.0, 0.0]),
        r_mine_usd_per_mwh=np.array([[100.0, 120.0, 100.0]] * 2),
    )
    result = hindsight_optimum(world, standard_workload())
    assert result.profit_usd == pytest.approx(11_540.0, abs=1e-6)
    np.testing.assert_allclose(result.mining_mw[0], [8.0, 9.5, 0.0], atol=1e-9)


def test_flex_waits_for_the_cheap_hour_but_not_past_its_deadline() -> None:
    # One pool at B only (spare power), prices 80 / 10 / 5: flex due within 2 hours is served
    # in hour 1 (10), not hour 2 (5, past its deadline).
    base = two_site_world(price=((500, 500, 500), (80, 10, 5)))
    world = replace(base, pools=(pool("b/gpu#0", 1, 1000),))
    flex = work_class(Tier.FLEX, 1.0, 2)
    result = hindsight_optimum(world, workload([(flex, (800, 0, 0))]))
    np.testing.assert_allclose(result.ai_mw[1], [0.0, 0.8, 0.0], atol=1e-9)
    # 800 * 1 - 0.8 MWh * 10 = 792 of AI; B mines 3 MW when 100 > price: h0 60, h1 270, h2 285.
    assert result.profit_usd == pytest.approx(792 + 60 + 270 + 285)


def test_unservable_work_is_dropped_not_infeasible() -> None:
    # 4,000 Mtok of interactive work in an hour with 3,000 GPUs: 1,000 Mtok go unserved.
    work = workload([(work_class(Tier.INTERACTIVE, 2.0, 1), (4000, 0, 0))])
    result = hindsight_optimum(two_site_world(), work)
    assert result.unserved_mtok.sum() == pytest.approx(1000.0)


def _random_world(seed: int) -> tuple[World, Workload]:
    rng = np.random.default_rng(seed)
    hours = 12
    prices = rng.uniform(-20, 250, size=(2, hours))
    base = two_site_world(price=prices)
    world = replace(base, r_mine_usd_per_mwh=rng.uniform(60, 140, size=(2, hours)))
    work = workload([
        (work_class(Tier.INTERACTIVE, 2.0, 1), rng.uniform(0, 2500, size=hours)),
        (work_class(Tier.FLEX, 0.3, 4), rng.uniform(0, 2500, size=hours)),
    ])
    return world, work


@pytest.mark.parametrize("seed", range(6))
def test_windows_only_loosen_the_bound(seed: int) -> None:
    # Windows of 4 h start empty and credit carried work at its best later value: a relaxation
    # of the whole-period program, so never below it.
    world, work = _random_world(seed)
    whole = hindsight_optimum(world, work, window_h=None)
    windowed = hindsight_optimum(world, work, window_h=4)
    assert windowed.windows == 3
    assert windowed.profit_usd >= whole.profit_usd - 1e-6


@pytest.mark.parametrize("seed", range(6))
def test_no_baseline_beats_the_optimum(seed: int) -> None:
    # Every policy's hourly actions are feasible in the LP, so its profit is a lower bound.
    world, work = _random_world(seed)
    bound = hindsight_optimum(world, work, window_h=None).profit_usd
    for name in BASELINES:
        assert simulate(make_policy(name), world, work).profit_usd <= bound + 1e-6


def test_mining_runs_in_whole_blocks_where_the_cap_binds() -> None:
    # One hour; site A's interconnect is its ASICs' 10 MW, in 2.5 MW blocks. Interactive
    # 1,500 Mtok ($2): B's 1,000 GPUs take 1,000, A's take 500 (0.5 MW). A cannot mine 9.5 MW:
    # its levels are 0, 2.5, 5, 7.5, 10, so it mines 7.5 and the AI still pays (500 * 2 - 0.5 *
    # 20 = 990 against 2 MW * 80 = 160 of mining lost). The stopped block's 2.5 MW then hold all
    # the work at A's $20 rather than B's $60.
    #   continuous: A mines 9.5 * 80 = 760, B 3 * 40 = 120, AI 3,000 - 60 - 10: 3,810
    #   blocks:     A mines 7.5 * 80 = 600, B 120, AI 3,000 - 1.5 * 20:          3,690
    world = two_site_world(price=((20,), (60,)), with_fleet=True, block_mw=2.5)
    work = workload([(work_class(Tier.INTERACTIVE, 2.0, 1), (1500,))])
    relaxed = hindsight_optimum(world, work, asic_blocks=False)
    blocks = hindsight_optimum(world, work)
    assert relaxed.profit_usd == pytest.approx(3_810.0, abs=1e-6)
    assert relaxed.mining_mw[0, 0] == pytest.approx(9.5)
    assert blocks.profit_usd == pytest.approx(3_690.0, abs=1e-3)
    assert blocks.mining_mw[0, 0] == pytest.approx(7.5)
    assert blocks.ai_mw[:, 0] == pytest.approx([1.5, 0.0])
    assert blocks.integer_site_hours == 1  # B's cap (5 MW) holds its ASICs and GPUs: continuous
    assert blocks.mip_gap_usd >= 0.0


@pytest.mark.parametrize("seed", range(4))
def test_blocks_only_tighten_the_bound_and_policies_stay_below_it(seed: int) -> None:
    world, work = _random_world(seed)
    world = replace(
        two_site_world(price=world.price_usd_per_mwh, with_fleet=True, block_mw=2.5),
        r_mine_usd_per_mwh=world.r_mine_usd_per_mwh,
    )
    relaxed = hindsight_optimum(world, work, window_h=None, asic_blocks=False)
    blocks = hindsight_optimum(world, work, window_h=None)
    assert blocks.profit_usd <= relaxed.profit_usd + 1e-6
    levels = world.asic_levels[0]
    for mw in blocks.mining_mw[0]:
        assert min(abs(mw - level) for level in levels.all_levels()) < 1e-6
    for name in ("hashserve", *BASELINES):
        assert simulate(make_policy(name), world, work).profit_usd <= blocks.profit_usd + 1e-6
