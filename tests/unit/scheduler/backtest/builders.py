"""Builders for small backtest worlds whose results can be worked out by hand.

The standard world (`two_site_world`): site A (cap 10 MW, 10 MW of ASICs, so GPU power displaces
mining) and site B (cap 5 MW, 3 MW of ASICs, 2 MW spare); 2,000 GPUs at A and 1,000 at B, each
1 kW busy, 0.2 kW idle, 1 million tokens per GPU-hour; three hours of prices, A 20/50/200 and
B 60/10/30 USD/MWh; R_mine 100 USD/MWh everywhere (hashprice 48 USD/PH/day at 20 J/TH, no pool
fee: 48 / (0.024 * 20) = 100).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scheduler.backtest.workload import WorkClass, Workload
from scheduler.backtest.world import GpuPool, World
from scheduler.core.fleet import AsicFleetSpec, Fleet, GpuNodeGroup, SiteSpec
from scheduler.core.models import Tier
from scheduler.core.planner.split import AsicLevels

MODEL = "m"
TOKENS_PER_S_FOR_1_MTOK_PER_H = 1e6 / 3600.0
EFFICIENCY_J_PER_TH = 20.0
HASHPRICE_USD_PER_PHS_DAY = 48.0  # R_mine = 48 / (0.024 * 20) = 100 USD/MWh
START_S = 1_719_792_000.0  # 2024-07-01T00:00Z


def pool(pool_id: str, site: int, gpus: int, busy_kw: float = 1.0, idle_kw: float = 0.2,
         mtok_per_gpu_h: float = 1.0) -> GpuPool:
    return GpuPool(pool_id, site, gpus, busy_kw, idle_kw,
                   {MODEL: mtok_per_gpu_h * TOKENS_PER_S_FOR_1_MTOK_PER_H}, memory_mb=80_000)


def asic(power_mw: float, block_mw: float) -> AsicFleetSpec:
    # power = PH/s * e kW / 1000, so PH/s = power_mw * 1000 / e.
    return AsicFleetSpec(power_mw * 1000 / EFFICIENCY_J_PER_TH, EFFICIENCY_J_PER_TH, 0.0,
                         block_mw, 60.0)


def two_site_fleet(block_mw: float = 0.5) -> Fleet:
    group_a = GpuNodeGroup("gpu", 2000, 0.2, 1.0, 80_000, (MODEL,), gpus_per_node=1)
    group_b = GpuNodeGroup("gpu", 1000, 0.2, 1.0, 80_000, (MODEL,), gpus_per_node=1)
    return Fleet(
        sites=(
            SiteSpec("a", "north_america", "US-TEX-ERCO", 10.0, asic(10.0, block_mw), (group_a,)),
            SiteSpec("b", "europe", "DE-LU", 5.0, asic(3.0, block_mw), (group_b,)),
        ),
        fx_usd_per_unit={"USD": 1.0, "EUR": 1.0},
    )


def two_site_world(
    price: Sequence[Sequence[float]] | np.ndarray = ((20, 50, 200), (60, 10, 30)),
    with_fleet: bool = False,
    block_mw: float = 0.5,
) -> World:
    prices = np.asarray(price, dtype=float)
    hours = prices.shape[1]
    fleet = two_site_fleet(block_mw) if with_fleet else None
    return World(
        start_s=START_S,
        hours=hours,
        site_names=("a", "b"),
        site_regions=("north_america", "europe"),
        cap_mw=np.array([10.0, 5.0]),
        asic_mw=np.array([10.0, 3.0]),
        asic_j_per_th=np.array([EFFICIENCY_J_PER_TH, EFFICIENCY_J_PER_TH]),
        price_usd_per_mwh=prices,
        r_mine_usd_per_mwh=np.full_like(prices, 100.0),
        hashprice_usd_per_phs_day=np.full(hours, HASHPRICE_USD_PER_PHS_DAY),
        pools=(pool("a/gpu#0", 0, 2000), pool("b/gpu#0", 1, 1000)),
        price_zone=("US-TEX-ERCO", "DE-LU"),
        forecast_usd_per_mwh=prices,
        btc_usd=np.full(hours, 60_000.0),
        difficulty=np.full(hours, 1e14),
        fees_btc_per_block=np.zeros(hours),
        fleet=fleet,
        asic_levels=tuple(AsicLevels.of(s.asic) for s in fleet.sites) if fleet else (),
        pool_group=(0, 0),
    )


def work_class(tier: Tier, usd_per_mtok: float, deadline_h: int) -> WorkClass:
    return WorkClass(tier, MODEL, deadline_h, usd_per_mtok, 10.0, deadline_h * 3600.0)


def workload(rows: Sequence[tuple[WorkClass, Sequence[float] | np.ndarray]],
             request_tokens: tuple[float, float] = (900.0, 100.0)) -> Workload:
    """Each row: a class and its Mtok per hour; one request is `request_tokens` (in, out)."""
    mtok = np.array([list(r[1]) for r in rows], dtype=float)
    per_request_mtok = sum(request_tokens) / 1e6
    return Workload(
        classes=tuple(r[0] for r in rows),
        mtok=mtok,
        requests=mtok / per_request_mtok,
        request_input_tokens=np.array([request_tokens[0]]),
        request_output_tokens=np.array([request_tokens[1]]),
    )


def standard_workload() -> Workload:
    """Interactive 1,500 Mtok every hour at $2/Mtok; flex 1,500 Mtok at hour 0, $1/Mtok, 3 h."""
    return workload([
        (work_class(Tier.INTERACTIVE, 2.0, 1), (1500, 1500, 1500)),
        (work_class(Tier.FLEX, 1.0, 3), (1500, 0, 0)),
    ])
