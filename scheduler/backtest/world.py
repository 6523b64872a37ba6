"""The backtest's world: per site and hour, what power costs, what mining pays, what can run.

One `World` is built once per scenario and read by every policy and by the hindsight optimum, so
they are scored on exactly the same numbers. It holds no decisions. Building it from a fleet file
and the market data (FX, hashprice, R_mine through scheduler.core.economics) is in
scheduler.backtest.build; this module is only the shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from scheduler.backtest.workload import WorkClass
from scheduler.core.fleet import Fleet
from scheduler.core.planner.split import AsicLevels

KW_PER_MW = 1000.0
S_PER_H = 3600.0
TOKENS_PER_MTOK = 1e6


@dataclass(frozen=True)
class GpuPool:
    """Identical GPUs at one site: the unit of GPU capacity in the backtest.

    A pool stands for a group of GPU servers (`nodes`); power and throughput are per GPU.
    """

    pool_id: str
    site_index: int
    gpus: int
    busy_kw_per_gpu: float
    idle_kw_per_gpu: float
    # Tokens (input + output) per second of one GPU, per model it serves.
    tokens_per_s: Mapping[str, float]
    memory_mb: int = 80_000
    nodes: int = 1
    gpu_kind: str = "gpu"

    @property
    def busy_mw(self) -> float:
        return self.gpus * self.busy_kw_per_gpu / KW_PER_MW

    @property
    def idle_mw(self) -> float:
        return self.gpus * self.idle_kw_per_gpu / KW_PER_MW

    def mtok_per_gpu_hour(self, model: str) -> float:
        return self.tokens_per_s.get(model, 0.0) * S_PER_H / TOKENS_PER_MTOK

    def busy_mwh_per_mtok(self, model: str) -> float:
        """Energy of one million tokens on this pool, counting the whole busy draw."""
        rate = self.mtok_per_gpu_hour(model)
        return self.busy_kw_per_gpu / KW_PER_MW / rate if rate > 0 else float("inf")


@dataclass(frozen=True, eq=False)
class World:
    """Sites x hours. Arrays are indexed [site] or [site, hour]; hour 0 starts at `start_s`."""

    start_s: float
    hours: int
    site_names: tuple[str, ...]
    site_regions: tuple[str, ...]
    cap_mw: np.ndarray  # grid interconnect per site
    asic_mw: np.ndarray  # what the site's ASICs draw at full hash
    asic_j_per_th: np.ndarray  # fleet efficiency per site (for reports)
    price_usd_per_mwh: np.ndarray  # [S, T], after FX
    r_mine_usd_per_mwh: np.ndarray  # [S, T], what a MWh of mining earns (after pool fee)
    hashprice_usd_per_phs_day: np.ndarray  # [T]
    pools: tuple[GpuPool, ...]
    price_zone: tuple[str, ...] = ()  # per site
    # What a policy may expect for hour t when it looks ahead (a forecast: the realised price for
    # day-ahead markets, yesterday's for real-time ones; see scheduler.backtest.build). [S, T]
    forecast_usd_per_mwh: np.ndarray | None = None
    # The Bitcoin facts behind the hashprice, per hour (from the day's row), for market snapshots.
    btc_usd: np.ndarray | None = None
    difficulty: np.ndarray | None = None
    fees_btc_per_block: np.ndarray | None = None
    # The fleet the sites and pools were built from (the planner reads it); pool i of
    # `pools` came from group `pool_group[i]` of its site.
    fleet: Fleet | None = None
    # The mining levels each site's controls can run (whole curtailment blocks); empty: any MW.
    asic_levels: tuple[AsicLevels, ...] = ()
    pool_group: tuple[int, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)

    @property
    def sites(self) -> int:
        return len(self.site_names)

    def hour_s(self, t: int) -> float:
        return self.start_s + t * S_PER_H

    def pools_at(self, site_index: int) -> tuple[GpuPool, ...]:
        return tuple(p for p in self.pools if p.site_index == site_index)

    def gpu_busy_mw_by_site(self) -> np.ndarray:
        out = np.zeros(self.sites)
        for pool in self.pools:
            out[pool.site_index] += pool.busy_mw
        return out

    def gpu_idle_mw_by_site(self) -> np.ndarray:
        out = np.zeros(self.sites)
        for pool in self.pools:
            out[pool.site_index] += pool.idle_mw
        return out

    def mining_floor_mw(self, site_index: int, mw: float) -> float:
        """The highest mining level the site can run at or below `mw`."""
        if not self.asic_levels:
            return max(mw, 0.0)
        return self.asic_levels[site_index].floor(mw)

    def eligible_pools(self, work: WorkClass) -> tuple[int, ...]:
        """Pools that can run a class at all: model served, memory fits, region allowed."""
        out = []
        for index, pool in enumerate(self.pools):
            if pool.tokens_per_s.get(work.model, 0.0) <= 0 or pool.memory_mb < work.memory_mb:
                continue
            region = self.site_regions[pool.site_index]
            if work.allowed_regions and region not in work.allowed_regions:
                continue
            out.append(index)
        return tuple(out)
