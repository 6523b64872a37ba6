"""Brute-force oracle: on small random sites, the planner's split is the profit-maximising one.

Absent hysteresis (no previous plan) and overrides, the planner should maximise the hour's profit

    (R_mine - p) * mining + (V - p) * ai - p * idle_draw

over every feasible split: mining a whole number of blocks (plus, optionally, the leftover
partial block), AI up to its demand, the other GPU nodes on idle or off, all of it (GPU nodes at
busy power, as reserved) under the cap. With integer capacities the optimum of this linear
problem sits on the integer grid, so enumerating integer MW is exact. Random sites come from
fixed seeds (reproducible), as in SkyPilot's optimizer oracle test.
"""

from __future__ import annotations

import random

import pytest

from scheduler.core.economics import mining_revenue_usd_per_mwh
from scheduler.core.fleet import AsicFleetSpec, Fleet, GpuNodeGroup, SiteSpec
from scheduler.core.market import MarketSnapshot
from scheduler.core.planner import PlannerConfig, SiteAiDemand, plan_power

ZONE = "DE-LU"
T0 = 1_700_000_000.0


def _levels(asic_mw: int, block_mw: int) -> list[int]:
    full, partial = divmod(asic_mw, block_mw)
    levels = {j * block_mw for j in range(full + 1)}
    if partial:
        levels |= {j * block_mw + partial for j in range(full + 1)}
    return sorted(levels)


def _profit(
    mining: float, ai: float, idle_on: float, price: float, r_mine: float, value: float,
    idle_fraction: float,
) -> float:
    return (r_mine - price) * mining + (value - price) * ai - price * idle_on * idle_fraction


def brute_force(
    cap: int, asic_mw: int, block_mw: int, gpu_mw: int, demand_mw: int, idle_fraction: float,
    price: float, r_mine: float, value: float,
) -> float:
    best = -float("inf")
    for m in _levels(asic_mw, block_mw):
        if m > cap:
            continue
        for a in range(min(demand_mw, gpu_mw, cap - m) + 1):
            for i in range(min(gpu_mw - a, cap - m - a) + 1):
                best = max(best, _profit(m, a, i, price, r_mine, value, idle_fraction))
    return best


def _case(rng: random.Random) -> dict[str, float]:
    block_mw = rng.randint(1, 6)
    asic_mw = rng.randint(0, 30)
    gpu_nodes = rng.randint(0, 8)
    return {
        "cap": rng.randint(0, 36),
        "asic_mw": asic_mw,
        "block_mw": block_mw,
        "gpu_nodes": gpu_nodes,
        "demand_mw": rng.randint(0, gpu_nodes + 2),
        "idle_fraction": rng.choice([0.0, 0.1, 0.25, 0.5, 1.0]),
        "price": rng.choice([rng.uniform(-300, 0), rng.uniform(0, 150), rng.uniform(150, 3000)]),
        "hashprice": rng.uniform(20, 120),
        "efficiency": rng.choice([15.0, 17.5, 21.5, 29.5]),
        "value": rng.choice([0.0, rng.uniform(0, 200), rng.uniform(200, 3000)]),
    }


@pytest.mark.parametrize("seed", range(40))
def test_planner_split_is_the_profit_maximising_one(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        c = _case(rng)
        # ASIC fleet sized to exactly asic_mw: PH/s = MW * 1000 / (J/TH).
        asic = AsicFleetSpec(c["asic_mw"] * 1000.0 / c["efficiency"], c["efficiency"], 0.0,
                             c["block_mw"], 0.0)
        # GPU nodes of exactly 1 MW busy each.
        gpus = (
            (GpuNodeGroup("g", int(c["gpu_nodes"]), 1000.0 * c["idle_fraction"], 1000.0,
                          1000, ("m",)),)
            if c["gpu_nodes"] else ()
        )
        site = SiteSpec("s", "europe", ZONE, c["cap"], asic, gpus)
        market = MarketSnapshot(T0, {ZONE: c["price"]}, None, None, None, c["hashprice"])
        demand = SiteAiDemand(ai_queued_mw=c["demand_mw"], value_usd_per_mwh=c["value"])
        plan = plan_power(
            Fleet((site,), {"EUR": 1.0}), market, {"s": demand}, None, {}, T0,
            PlannerConfig(hysteresis_usd_per_mwh=0.0),
        ).sites["s"]

        r_mine = mining_revenue_usd_per_mwh(c["hashprice"], c["efficiency"], 0.0)
        assert plan.r_mine_usd_per_mwh == pytest.approx(r_mine)
        idle_on = plan.serving_mw - plan.ai_mw
        got = _profit(plan.mining_mw, plan.ai_mw, idle_on, c["price"], r_mine, c["value"],
                      c["idle_fraction"])
        want = brute_force(int(c["cap"]), int(c["asic_mw"]), int(c["block_mw"]),
                           int(c["gpu_nodes"]), int(c["demand_mw"]), c["idle_fraction"],
                           c["price"], r_mine, c["value"])
        assert plan.mining_mw + plan.serving_mw <= c["cap"] + 1e-9, c
        assert plan.serving_mw <= c["gpu_nodes"] + 1e-9, c
        assert plan.ai_mw <= c["demand_mw"] + 1e-9, c
        assert plan.idle_gpu_mw == pytest.approx(idle_on * c["idle_fraction"]), c
        assert got == pytest.approx(want, abs=1e-6), c
