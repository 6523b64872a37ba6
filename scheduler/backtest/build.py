"""Building a backtest's `World` and `Workload` from a fleet, the market files and the traces.

What it decides: which price column each site reads (its zone's), the FX conversion (the fleet
file's rates), hashprice and R_mine per site and day (through scheduler.core.economics, the same
functions the planner calls), the GPU pools (one per node group, in accelerators), the price
outlook policies may read, and the request rate when none is given (a share of the fleet's GPU
throughput). What it leaves to others: reading and checking files (inputs), policies, the LP.

Outlook (what policies may expect of the hours ahead; never the realised price unless it was
published in advance): by default what the live scheduler forecasts, the mean price at the same
hour of day over the past week. Alternatives: `market` -- day-ahead markets publish tomorrow's
hourly prices around midday today, so for the next hours of a day-ahead zone the realised price
is what a scheduler could have known, while the real-time series (PJM real-time LMP, Ontario
HOEP, AEMO NSW; see the shared data README) get the same hour yesterday; `persistence`; and
`perfect` (an upper bound on what forecasting can give).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from enum import Enum
from pathlib import Path

import numpy as np

from scheduler.backtest.inputs import (
    BtcDaily,
    InputError,
    PriceTable,
    Trace,
    day_start_s,
    load_btc_daily,
    load_prices,
    read_header,
)
from scheduler.backtest.throughput import tokens_per_s
from scheduler.backtest.workload import Workload, build_workload
from scheduler.backtest.world import GpuPool, World
from scheduler.core.economics import (
    block_subsidy_btc,
    hashprice_usd_per_phs_day,
    mining_revenue_usd_per_mwh,
)
from scheduler.core.fleet import Fleet, SiteSpec, market_zone
from scheduler.core.market import PRICE_ZONE_CURRENCY
from scheduler.core.models import DEFAULT_CATALOGUE, ModelKind, ModelSpec, Tier, priced_catalogue
from scheduler.core.planner.split import AsicLevels

# Real-time (not day-ahead) series in the shipped price file, per the shared data README:
# PJM real-time hourly LMP, Ontario's HOEP, AEMO NSW hourly mean of 5-minute prices.
REALTIME_ZONES = frozenset({"US-MIDA-PJM", "CA-ON", "AU-NSW"})
PERSISTENCE_H = 24


class OutlookMode(str, Enum):
    # What the live scheduler forecasts (scheduler.core.outlook.hour_of_day_outlook): the mean
    # price at the same hour of day over the past week, in every zone.
    LIVE = "live"
    MARKET = "market"  # day-ahead zones: realised; real-time zones: same hour yesterday
    PERSISTENCE = "persistence"  # every zone: same hour yesterday
    PERFECT = "perfect"  # every zone: realised (an upper bound on forecasting)
    # The price file's day-ahead column of each zone (`<zone>:day_ahead__<CUR>_per_MWh`, what the
    # market published the day before); LIVE for a zone without one.
    FILE = "file"


DAY_AHEAD_SUFFIX = ":day_ahead"


def week_hour_of_day_mean(native: np.ndarray, lookback_h: int, hours: int) -> np.ndarray:
    """For each period hour t: the mean of the prices at t - 24, t - 48, ..., t - 168.

    What `scheduler.core.outlook.hour_of_day_outlook` expects for an hour 1 to 24 ahead from a
    week of past prices (the unit tests check the two agree); vectorised here because a year has
    8,784 hours per site.
    """
    days = min(lookback_h // PERSISTENCE_H, 7)
    if days < 1:
        raise ValueError("the live outlook needs at least a day of past prices")
    start = lookback_h
    stacked = np.stack([
        native[start - k * PERSISTENCE_H : start - k * PERSISTENCE_H + hours]
        for k in range(1, days + 1)
    ])
    result: np.ndarray = stacked.mean(axis=0)
    return result


@dataclass(frozen=True)
class MarketData:
    """Prices (native, with a day of lookback) and Bitcoin days for one period."""

    start_s: float
    hours: int
    prices: PriceTable
    btc: BtcDaily
    zone_column: Mapping[str, str]
    zone_currency: Mapping[str, str]
    # Zones whose file has a day-ahead column, and that column (loaded with the prices).
    day_ahead_column: Mapping[str, str] = field(default_factory=dict)


def period(start: date, end_inclusive: date) -> tuple[float, int]:
    if end_inclusive < start:
        raise ValueError(f"the end date {end_inclusive} is before the start {start}")
    days = (end_inclusive - start).days + 1
    return day_start_s(start), days * 24


def price_columns(path: Path, zones: Sequence[str]) -> dict[str, str]:
    """The column of each zone: `<ZONE>__<CUR>_per_MWh` in the file's header."""
    header = read_header(Path(path))
    out: dict[str, str] = {}
    for zone in zones:
        # A zone's own column (a settlement point's, in an exported live file), else its market's.
        matches = [h for h in header if h.split("__", 1)[0] == zone] or [
            h for h in header if h.split("__", 1)[0] == market_zone(zone)
        ]
        if not matches:
            raise InputError(
                path, f"no price column for zone {zone} (expected {zone}__<CUR>_per_MWh)", 1, zone
            )
        out[zone] = matches[0]
    return out


def column_currency(column: str, zone: str) -> str:
    suffix = column.split("__", 1)[1] if "__" in column else ""
    currency = suffix.split("_per_", 1)[0] if "_per_" in suffix else ""
    return currency or PRICE_ZONE_CURRENCY.get(market_zone(zone), "USD")


def load_market(
    fleet: Fleet,
    prices_path: Path,
    btc_path: Path,
    btc_fees_path: Path | None,
    start: date,
    end_inclusive: date,
    max_gap_h: int = 48,
    day_ahead: bool = False,
) -> MarketData:
    """`day_ahead`: also load each zone's day-ahead column where the file has one."""
    start_s, hours = period(start, end_inclusive)
    zones = sorted(fleet.price_zones)
    columns = price_columns(prices_path, zones)
    ahead: dict[str, str] = {}
    if day_ahead:
        header = read_header(Path(prices_path))
        for zone in zones:
            for key in (zone + DAY_AHEAD_SUFFIX, market_zone(zone) + DAY_AHEAD_SUFFIX):
                found = [h for h in header if h.split("__", 1)[0] == key]
                if found:
                    ahead[zone] = found[0]
                    break
    wanted = list(dict.fromkeys([*(columns[z] for z in zones), *ahead.values()]))
    prices = load_prices(prices_path, wanted, start_s, hours, max_gap_h)
    btc = load_btc_daily(btc_path, start, hours // 24, btc_fees_path)
    currency = {z: column_currency(columns[z], z) for z in zones}
    return MarketData(start_s, hours, prices, btc, columns, currency, ahead)


def scaled_fleet(fleet: Fleet, gpu_scale: float) -> Fleet:
    """Every GPU group's node count times `gpu_scale`, rounded (a what-if on GPU count)."""
    if gpu_scale == 1.0:
        return fleet
    sites = tuple(
        replace(
            site,
            gpu_groups=tuple(
                replace(g, count=round(g.count * gpu_scale)) for g in site.gpu_groups
            ),
        )
        for site in fleet.sites
    )
    return replace(fleet, sites=sites)


def build_world(
    fleet: Fleet,
    market: MarketData,
    throughput: Mapping[tuple[str, str], float] | None = None,
    outlook: OutlookMode = OutlookMode.LIVE,
    hashprice_scale: float = 1.0,
    fleet_source: str = "",
) -> World:
    sites = fleet.sites
    hours = market.hours
    lookback = market.prices.lookback_h
    price = np.zeros((len(sites), hours))
    forecast = np.zeros((len(sites), hours))
    for s, site in enumerate(sites):
        rate = _fx(fleet, market.zone_currency[site.price_zone], site, fleet_source)
        native = market.prices.native_per_mwh[market.zone_column[site.price_zone]] * rate
        price[s] = native[lookback:]
        realtime = outlook is OutlookMode.PERSISTENCE or (
            outlook is OutlookMode.MARKET and market_zone(site.price_zone) in REALTIME_ZONES
        )
        ahead_column = market.day_ahead_column.get(site.price_zone)
        if outlook is OutlookMode.FILE and ahead_column is not None:
            ahead_rate = _fx(fleet, column_currency(ahead_column, market_zone(site.price_zone)),
                             site, fleet_source)
            forecast[s] = market.prices.native_per_mwh[ahead_column][lookback:] * ahead_rate
        elif outlook in (OutlookMode.LIVE, OutlookMode.FILE):
            forecast[s] = week_hour_of_day_mean(native, lookback, hours)
        elif realtime:
            shifted = lookback - PERSISTENCE_H
            forecast[s] = native[shifted : shifted + hours]
        else:
            forecast[s] = price[s]
    days = hours // 24
    btc = market.btc
    btc_usd = btc.btc_usd[:days] * hashprice_scale
    hashprice_day = np.array([
        hashprice_usd_per_phs_day(
            float(btc_usd[d]), float(btc.difficulty[d]), float(btc.fees_btc_per_block[d]),
            block_subsidy_btc(btc.first_day + timedelta(days=d)),
        )
        for d in range(days)
    ])
    day_of_hour = np.arange(hours) // 24
    r_mine = np.zeros((len(sites), hours))
    for s, site in enumerate(sites):
        per_day = np.array([
            mining_revenue_usd_per_mwh(
                float(h), site.asic.efficiency_j_per_th, site.asic.pool_fee
            ) if site.asic.power_mw > 0 else 0.0
            for h in hashprice_day
        ])
        r_mine[s] = per_day[day_of_hour]
    pools, pool_group = _pools(sites, throughput)
    return World(
        start_s=market.start_s,
        hours=hours,
        site_names=tuple(s.name for s in sites),
        site_regions=tuple(s.region for s in sites),
        cap_mw=np.array([s.power_cap_mw for s in sites], dtype=float),
        asic_mw=np.array([s.asic.power_mw for s in sites], dtype=float),
        asic_j_per_th=np.array([s.asic.efficiency_j_per_th for s in sites], dtype=float),
        price_usd_per_mwh=price,
        r_mine_usd_per_mwh=r_mine,
        hashprice_usd_per_phs_day=hashprice_day[day_of_hour],
        pools=pools,
        price_zone=tuple(s.price_zone for s in sites),
        forecast_usd_per_mwh=forecast,
        btc_usd=btc_usd[day_of_hour],
        difficulty=btc.difficulty[:days][day_of_hour],
        fees_btc_per_block=btc.fees_btc_per_block[:days][day_of_hour],
        fleet=fleet,
        asic_levels=tuple(AsicLevels.of(s.asic) for s in sites),
        pool_group=pool_group,
        meta={"outlook": outlook.value},
    )


def _fx(fleet: Fleet, currency: str, site: SiteSpec, source: str) -> float:
    rate = fleet.fx_usd_per_unit.get(currency)
    if rate is None or not rate > 0:
        raise ValueError(
            f"{source or 'fleet'}: site {site.name} prices in {currency} "
            f"({site.price_zone}) but fx_usd_per_unit has no rate for it"
        )
    return float(rate)


def _pools(
    sites: Sequence[SiteSpec], throughput: Mapping[tuple[str, str], float] | None
) -> tuple[tuple[GpuPool, ...], tuple[int, ...]]:
    pools: list[GpuPool] = []
    groups: list[int] = []
    for s, site in enumerate(sites):
        for g, group in enumerate(site.gpu_groups):
            if group.count <= 0:
                continue
            per_node = max(group.gpus_per_node, 1)  # a node without GPUs is one accelerator
            pools.append(
                GpuPool(
                    pool_id=f"{site.name}/{group.kind}#{g}",
                    site_index=s,
                    gpus=group.count * per_node,
                    busy_kw_per_gpu=group.busy_power_kw / per_node,
                    idle_kw_per_gpu=group.idle_power_kw / per_node,
                    tokens_per_s={
                        m: tokens_per_s(group.kind, m, throughput) for m in group.models
                    },
                    memory_mb=group.memory_mb // per_node,
                    nodes=group.count,
                    gpu_kind=group.kind,
                )
            )
            groups.append(g)
    return tuple(pools), tuple(groups)


# ---------------------------------------------------------------- workload


def generation_model(fleet: Fleet, name: str | None = None) -> ModelSpec:
    """The model the LLM traces ask for, with the fleet's tier prices.

    Default: the one generation model of the catalogue that the fleet serves and prices.
    """
    served = {m for site in fleet.sites for g in site.gpu_groups for m in g.models}
    if name is None:
        candidates = sorted(
            m for m in served
            if m in DEFAULT_CATALOGUE and DEFAULT_CATALOGUE[m].kind is ModelKind.GENERATION
        )
        if not candidates:
            raise ValueError("the fleet serves no generation model; pass --model")
        name = candidates[0]
    if name not in served:
        raise ValueError(f"model {name!r} is not served by any GPU group of the fleet")
    spec = DEFAULT_CATALOGUE.get(name)
    if spec is None:
        raise ValueError(f"model {name!r} is not in the model catalogue")
    return priced_catalogue({name: spec}, fleet.tier_prices_usd_per_million_tokens)[name]


def fleet_tokens_per_s(world: World, model: str) -> float:
    return float(sum(p.gpus * p.tokens_per_s.get(model, 0.0) for p in world.pools))


def make_workload(
    world: World,
    traces: Sequence[Trace],
    model: ModelSpec,
    tier_mix: Mapping[Tier, float],
    requests_per_s: float | None = None,
    gpu_load: float = 0.6,
    daily_amplitude: float = 0.0,
    load_scale: float = 1.0,
) -> tuple[Workload, float]:
    """The hourly work; without a rate, `gpu_load` x the fleet's throughput for the model.

    Returns the workload and the request rate used (before `load_scale`).
    """
    if requests_per_s is None:
        tokens = np.concatenate([t.input_tokens + t.output_tokens for t in traces])
        mean_tokens = float(tokens.mean()) if tokens.size else 1.0
        requests_per_s = gpu_load * fleet_tokens_per_s(world, model.name) / max(mean_tokens, 1.0)
    workload = build_workload(
        traces, world.start_s, world.hours, requests_per_s * load_scale, tier_mix, model,
        daily_amplitude,
    )
    return workload, requests_per_s

