"""One power tick, pure: the market, the nodes and the last plan in; the plan and what it asks of
the rest out.

Everything a plan interval decides lives here, so that every driver decides it the same way:
- each site's AI demand and what that work is worth (`site_demand`);
- the power plan (`plan_power`);
- the placer's view of each site: price, opportunity price and the outlook for flex deferral
  (`site_views`);
- which sites may take new work (`serving.may_serve`), and which must shed what runs
  (`serving.shed_orders`);
- a `SetPowerMode` for each site whose split changed.

The edge (`scheduler/control/power.py`) reads the feed, calls `power_step`, and carries the result
out: site views and serving sites to the scheduler core, shed orders to `SchedulerCore.shed`, power
modes to the agents through the api, rows to the journal, series to the metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.core.economics import opportunity_price_usd_per_mwh
from scheduler.core.fleet import Fleet
from scheduler.core.market import MarketSnapshot
from scheduler.core.outlook import hour_of_day_outlook
from scheduler.core.placement import PriceOutlook, SiteView
from scheduler.core.placement.scores import KW_PER_MW
from scheduler.core.planner import (
    PlannerConfig,
    PowerPlan,
    SiteAiDemand,
    SiteOverride,
    plan_power,
)
from scheduler.core.planner.inputs import NO_OVERRIDE
from scheduler.core.scheduler import NodeState, ShedOrder
from scheduler.core.serving import may_serve, shed_orders

OUTLOOK_HOURS = 12
# Hours of past prices the outlook is built from (the same hours of the past week).
PRICE_HISTORY_HOURS = 7 * 24
# Tokens per second a node is assumed to turn out before it has run anything (its value per MWh).
DEFAULT_TOKENS_PER_S = 100.0
DEFAULT_PRICE_USD_PER_MILLION_TOKENS = 0.15
_MODE_EPS_MW = 1e-9


@dataclass(frozen=True)
class PriceHistory:
    """A zone's past hourly prices in USD/MWh, the last being the current hour, and when the
    next hour starts on the scheduler's clock (a compressed market clock makes hours short)."""

    past_usd_per_mwh: Sequence[float]
    next_hour_start_s: float
    hour_s: float
    # Prices the market has published for later hours (a day-ahead auction), in USD/MWh, by the
    # start of their hour on the scheduler's clock. Where one covers an outlook hour, the
    # outlook uses it instead of the past week's mean at that hour of day.
    published_usd_per_mwh: Mapping[float, float] = field(default_factory=dict)

    def published_at(self, start_s: float) -> float | None:
        """The published price of the hour containing `start_s`, if any."""
        hour_start_s = math.floor(start_s / 3600.0) * 3600.0
        value = self.published_usd_per_mwh.get(hour_start_s)
        return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class SetPowerMode:
    """Tell a site's agents its new split (their power adapters apply it)."""

    site: str
    mining_mw: float
    ai_mw: float
    curtailed_mw: float
    reason: str

    def same_split(self, other: SetPowerMode | None) -> bool:
        return other is not None and all(
            abs(a - b) <= _MODE_EPS_MW
            for a, b in (
                (self.mining_mw, other.mining_mw),
                (self.ai_mw, other.ai_mw),
                (self.curtailed_mw, other.curtailed_mw),
            )
        )


@dataclass(frozen=True)
class PowerInputs:
    fleet: Fleet
    market: MarketSnapshot
    nodes: Sequence[NodeState]
    previous: PowerPlan | None
    overrides: Mapping[str, SiteOverride]
    now_s: float
    config: PlannerConfig
    ai_value_floor_usd_per_mwh: float
    price_history: Mapping[str, PriceHistory]  # by price zone; missing: no outlook
    # A site stops taking new work this long before a demand-response window that cuts its
    # load, so that work started now is not cut off by it (it would be preempted and moved).
    window_lead_s: float = 120.0


@dataclass(frozen=True)
class PowerStep:
    plan: PowerPlan
    site_views: dict[str, SiteView]
    serving_sites: frozenset[str]
    shed_orders: tuple[ShedOrder, ...]
    modes: tuple[SetPowerMode, ...]  # every site's split now
    mode_changes: tuple[SetPowerMode, ...]  # the sites whose split changed since `previous`


def node_value_usd_per_mwh(node: NodeState, prices: Mapping[str, Mapping[str, float]]) -> float:
    """What a node's busy MWh sells for: the tokens it turns out per MWh at busy power, times
    what a token sells for (standard tier), for its best model.

    A node's estimate is per job (tokens over a job's own run time), and its busy power is the
    whole node's with every slot taken, so the node's output is slots times the job's rate. A
    pool of 120 H100s at 20,000 tokens/s each, 0.153 MW busy: 120 * 20,000 * 3600 / 0.153 * $0.15
    / 1e6 = $8,471/MWh (per slot alone it would read $71).
    """
    info = node.info
    rates = node.estimates.tokens_per_s or {m: DEFAULT_TOKENS_PER_S for m in info.models}
    slots = max(info.slots_total, 1)
    best = 0.0
    for model, tokens_per_s in rates.items():
        price = prices.get(model, {}).get("standard", DEFAULT_PRICE_USD_PER_MILLION_TOKENS)
        tokens_per_mwh = slots * tokens_per_s * 3600.0 / max(info.busy_power_kw / KW_PER_MW, 1e-9)
        best = max(best, tokens_per_mwh * price / 1e6)
    return best


def site_demand(
    nodes: Iterable[NodeState],
    prices: Mapping[str, Mapping[str, float]],
    ai_value_floor_usd_per_mwh: float,
) -> dict[str, SiteAiDemand]:
    """AI demand per site from the connected nodes: busy power of what runs, and standby for the
    rest of their capacity.

    Its value is what the nodes' measured throughput earns per MWh, but never less than the
    floor: serving capacity is sold with latency promises, and keeping it is worth that much to
    the business (the price of a broken promise). Below the floor price a site keeps its
    connected nodes serving; above it (a real price spike) AI curtails there.

    Where the floor decides, in numbers: a GPU node's measured value is far above it (an H100 at
    SmolLM2's 20,000 tokens/s sells its busy MWh for about $8,500), so there the work's own value
    decides. It decides for CPU nodes (a few hundred tokens/s on 0.35 kW: $150-300/MWh) and for
    nodes that have run nothing yet. In the shipped 2024 prices ERCOT was above $308/MWh in 40
    hours and above $1,000 in 8: at the floor a CPU site stops serving in those 8 hours only.
    """
    busy_kw: dict[str, float] = {}
    standby_kw: dict[str, float] = {}
    value_weighted: dict[str, float] = {}
    for node in nodes:
        if not node.connected:
            continue
        info = node.info
        share = min(len(node.running) / max(info.slots_total, 1), 1.0)
        busy_kw[info.site] = busy_kw.get(info.site, 0.0) + info.busy_power_kw * share
        standby_kw[info.site] = standby_kw.get(info.site, 0.0) + info.busy_power_kw * (1 - share)
        value_weighted[info.site] = value_weighted.get(info.site, 0.0) + (
            node_value_usd_per_mwh(node, prices) * info.busy_power_kw
        )
    demand = {}
    for site, kw in standby_kw.items():
        total_kw = kw + busy_kw.get(site, 0.0)
        demand[site] = SiteAiDemand(
            ai_busy_mw=busy_kw.get(site, 0.0) / KW_PER_MW,
            ai_queued_mw=0.0,
            value_usd_per_mwh=max(
                value_weighted[site] / total_kw if total_kw else 0.0,
                ai_value_floor_usd_per_mwh,
            ),
            standby_mw=kw / KW_PER_MW,
        )
    return demand


def price_outlook(
    history: PriceHistory | None,
    r_mine_usd_per_mwh: float,
    at_cap: bool,
    closed: Sequence[tuple[float, float]] = (),
    block_share: float = 1.0,
) -> tuple[PriceOutlook, ...]:
    """The opportunity price of each of the next hours: the market's published price where it
    has one (day-ahead), else the mean of the past week's same hours. Hours that overlap a
    `closed` interval (a demand-response window) are left out: flex work must not
    wait for a site that will have no power then."""
    if history is None:
        return ()
    windows = []
    expected = hour_of_day_outlook(list(history.past_usd_per_mwh), OUTLOOK_HOURS)
    for ahead, expected_price in enumerate(expected, start=1):
        start_s = history.next_hour_start_s + (ahead - 1) * history.hour_s
        published = history.published_at(start_s)
        price = published if published is not None else expected_price
        if math.isnan(price):
            continue
        end_s = start_s + history.hour_s
        if any(start_s < c_end and c_start < end_s for c_start, c_end in closed):
            continue
        windows.append(
            PriceOutlook(
                start_s,
                opportunity_price_usd_per_mwh(price, r_mine_usd_per_mwh, at_cap, block_share),
            )
        )
    return tuple(windows)


def _cutting_windows(
    override: SiteOverride, load_mw: float, now_s: float
) -> list[tuple[float, float]]:
    """(start, end) of the site's windows not yet over that cut its load below what it draws."""
    return [
        (w.start_s, w.end_s) for w in override.windows
        if w.end_s > now_s and w.max_load_mw < load_mw
    ]


def power_step(inputs: PowerInputs) -> PowerStep:
    fleet = inputs.fleet
    floor = inputs.ai_value_floor_usd_per_mwh
    demand = site_demand(inputs.nodes, fleet.tier_prices_usd_per_million_tokens, floor)
    plan = plan_power(
        fleet, inputs.market, demand, inputs.previous, dict(inputs.overrides), inputs.now_s,
        inputs.config,
    )
    regions = {s.name: s.region for s in fleet.sites}
    closing = {
        site: _cutting_windows(inputs.overrides.get(site, NO_OVERRIDE), p.load_mw, inputs.now_s)
        for site, p in plan.sites.items()
    }
    views = {
        site: SiteView(
            site=site,
            region=regions[site],
            price_usd_per_mwh=p.price_usd_per_mwh,
            opportunity_price_usd_per_mwh=p.opportunity_price_usd_per_mwh,
            outlook=price_outlook(
                inputs.price_history.get(p.price_zone) if p.price_zone else None,
                p.r_mine_usd_per_mwh, p.at_cap, closing[site], p.block_share,
            ),
        )
        for site, p in plan.sites.items()
    }
    # Nodes at sites the fleet does not know have no plan to obey: they may serve.
    outside = {n.info.site for n in inputs.nodes} - set(regions)
    serving = {
        site for site, p in plan.sites.items()
        if may_serve(p, inputs.overrides.get(site, NO_OVERRIDE))
        and not any(
            0 <= start_s - inputs.now_s <= inputs.window_lead_s for start_s, _ in closing[site]
        )
    } | outside
    modes = tuple(
        SetPowerMode(p.site, p.mining_mw, p.ai_mw, p.curtailed_mw, "; ".join(p.reasons)[:500])
        for p in plan.sites.values()
    )
    before = inputs.previous.sites if inputs.previous is not None else {}
    changes = tuple(
        m for m in modes
        if not m.same_split(
            SetPowerMode(m.site, old.mining_mw, old.ai_mw, old.curtailed_mw, "")
            if (old := before.get(m.site)) is not None else None
        )
    )
    return PowerStep(
        plan=plan,
        site_views=views,
        serving_sites=frozenset(serving),
        shed_orders=tuple(shed_orders(plan, inputs.overrides, inputs.now_s, floor)),
        modes=modes,
        mode_changes=changes,
    )


__all__ = [
    "OUTLOOK_HOURS",
    "PRICE_HISTORY_HOURS",
    "PowerInputs",
    "PowerStep",
    "PriceHistory",
    "SetPowerMode",
    "node_value_usd_per_mwh",
    "power_step",
    "price_outlook",
    "site_demand",
]
