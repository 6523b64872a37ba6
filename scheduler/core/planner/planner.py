"""`plan_power`: each tick, per site, the MW that mine, serve AI, idle or are curtailed.

Order of precedence for a site (the first that applies decides, later ones fill in the rest):
1. The cap: the interconnect, lowered by an ops cap and by any active curtailment window.
   Always obeyed, immediately (no dwell).
2. An ops force mode (`ForceMode`): curtail everything, mine everything that fits, or serve AI
   first. Obeyed immediately, whatever the price, dwell or fallback.
3. Fallbacks (see the package docstring): an unknown zone price or an unknown hashprice.
4. Economics (`split.solve_split`) with hysteresis: a switching cost of
   `hysteresis_usd_per_mwh` on each MW of mining or AI changed versus the previous plan.
5. Minimum dwell on the mining level: after a change, the level is held for
   `max(min_dwell_s, asic.ramp_s)`, except that a cut while the price is above R_mine (cutting a
   loss) is made at once, and a cap lowered below the level frees the choice (the economics then
   decide what gives way); the level then waits the full dwell before it may rise again.
AI load is not held by dwell: it follows its demand within the power left to it.

The plan is data; nothing here talks to a site. The previous tick's plan is the only memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from scheduler.core.economics import (
    mining_revenue_usd_per_mwh,
    opportunity_price_usd_per_mwh,
)
from scheduler.core.fleet import Fleet, SiteSpec
from scheduler.core.market import MarketSnapshot
from scheduler.core.planner.inputs import (
    DEFAULT_PLANNER_CONFIG,
    NO_AI_DEMAND,
    NO_OVERRIDE,
    ForceMode,
    PlannerConfig,
    SiteAiDemand,
    SiteOverride,
)
from scheduler.core.planner.output import PowerPlan, SitePowerPlan
from scheduler.core.planner.split import AsicLevels, Split, SplitProblem, solve_split

_EPS = 1e-6


def plan_power(
    fleet: Fleet,
    market: MarketSnapshot,
    ai_demand: Mapping[str, SiteAiDemand],
    previous: PowerPlan | None,
    overrides: Mapping[str, SiteOverride],
    now_s: float,
    config: PlannerConfig = DEFAULT_PLANNER_CONFIG,
) -> PowerPlan:
    """The power plan for every site of the fleet at `now_s` (sites without demand get none)."""
    sites: dict[str, SitePowerPlan] = {}
    for site in fleet.sites:
        sites[site.name] = plan_site(
            site,
            market,
            ai_demand.get(site.name, NO_AI_DEMAND),
            previous.sites.get(site.name) if previous is not None else None,
            overrides.get(site.name, NO_OVERRIDE),
            now_s,
            config,
        )
    return PowerPlan(t_s=now_s, sites=sites)


def _effective_cap(site: SiteSpec, override: SiteOverride, now_s: float) -> tuple[float, list[str]]:
    cap_mw = max(0.0, site.power_cap_mw)
    reasons: list[str] = []
    if override.cap_mw is not None and override.cap_mw < cap_mw:
        cap_mw = max(0.0, override.cap_mw)
        reasons.append(f"ops cap {cap_mw:g} MW")
    for window in override.windows:
        if window.active(now_s) and window.max_load_mw < cap_mw:
            cap_mw = max(0.0, window.max_load_mw)
            reasons.append(f"{window.reason}: load <= {cap_mw:g} MW until t={window.end_s:.0f}")
    return cap_mw, reasons


def _r_mine(site: SiteSpec, market: MarketSnapshot, config: PlannerConfig) -> tuple[float, bool]:
    """(R_mine, whether the hashprice was known). An unknown hashprice uses the config's floor."""
    hashprice = market.hashprice_usd_per_phs_day
    known = hashprice is not None and math.isfinite(hashprice) and hashprice >= 0.0
    if not known or hashprice is None:
        hashprice = config.fallback_hashprice_usd_per_phs_day
    if site.asic.efficiency_j_per_th <= 0.0:
        return 0.0, known
    return (
        mining_revenue_usd_per_mwh(hashprice, site.asic.efficiency_j_per_th, site.asic.pool_fee),
        known,
    )


def _serve_first(problem: SplitProblem) -> Split:
    """Force SERVE: AI demand and standby take the cap first; the rest by economics."""
    ai = min(problem.ai_wanted_mw, problem.gpu_busy_mw, problem.cap_mw)
    standby = max(0.0, min(problem.standby_mw, problem.cap_mw - ai, problem.gpu_busy_mw - ai))
    rest = SplitProblem(
        cap_mw=problem.cap_mw - ai - standby,
        price_usd_per_mwh=problem.price_usd_per_mwh,
        r_mine_usd_per_mwh=problem.r_mine_usd_per_mwh,
        levels=problem.levels,
        gpu_busy_mw=problem.gpu_busy_mw - ai - standby,
        gpu_idle_fraction=problem.gpu_idle_fraction,
        ai_wanted_mw=0.0,
        ai_value_usd_per_mwh=problem.ai_value_usd_per_mwh,
    )
    split = solve_split(rest)
    return Split(split.mining_mw, ai, standby, split.idle_on_mw, split.score_usd_per_h)


def _fallback_split(
    problem: SplitProblem,
    running_mw: float,
    hold_mining_mw: float | None,
    config: PlannerConfig,
) -> Split:
    """Zone price unknown: running AI keeps going; new AI work only if worth more than the
    fallback price; mining holds `hold_mining_mw` (None: off) in what is left."""
    cap = problem.cap_mw
    ai = min(running_mw, cap)
    standby = 0.0
    if problem.ai_value_usd_per_mwh > config.fallback_price_usd_per_mwh:
        ai = min(problem.ai_wanted_mw, problem.gpu_busy_mw, cap)
        standby = max(0.0, min(problem.standby_mw, cap - ai, problem.gpu_busy_mw - ai))
    mining = 0.0
    if hold_mining_mw is not None:
        mining = problem.levels.floor(min(hold_mining_mw, cap - ai - standby))
    return Split(mining, ai, standby, 0.0, math.nan)


def plan_site(
    site: SiteSpec,
    market: MarketSnapshot,
    demand: SiteAiDemand,
    previous: SitePowerPlan | None,
    override: SiteOverride,
    now_s: float,
    config: PlannerConfig = DEFAULT_PLANNER_CONFIG,
) -> SitePowerPlan:
    """One site's plan; see the module docstring for the order of precedence."""
    cap_mw, reasons = _effective_cap(site, override, now_s)
    r_mine, hashprice_known = _r_mine(site, market, config)
    if not hashprice_known:
        reasons.append(
            f"fallback: hashprice unknown, R_mine {r_mine:.2f} $/MWh from the floor "
            f"${config.fallback_hashprice_usd_per_phs_day:g}/PH/day"
        )
    zone_price = market.usable_price(site.price_zone)
    price_known = zone_price is not None and math.isfinite(zone_price)
    price = config.fallback_price_usd_per_mwh
    if price_known and zone_price is not None:
        price = zone_price

    levels = AsicLevels.of(site.asic)
    gpu_mw = site.gpu_busy_mw
    running_mw = min(max(0.0, demand.ai_busy_mw), gpu_mw)
    wanted_mw = min(max(0.0, demand.wanted_mw), gpu_mw)
    value = max(0.0, demand.value_usd_per_mwh)
    prev_mining = previous.mining_mw if previous is not None else None
    problem = SplitProblem(
        cap_mw=cap_mw,
        price_usd_per_mwh=price,
        r_mine_usd_per_mwh=r_mine,
        levels=levels,
        gpu_busy_mw=gpu_mw,
        gpu_idle_fraction=site.gpu_idle_fraction,
        ai_wanted_mw=wanted_mw,
        ai_value_usd_per_mwh=value,
        standby_mw=max(0.0, demand.standby_mw),
        prev_mining_mw=prev_mining,
        prev_ai_mw=previous.ai_mw if previous is not None else None,
        switching_cost_usd_per_mwh=config.hysteresis_usd_per_mwh if previous else 0.0,
    )

    fallback_since_s: float | None = None
    if not price_known:
        fallback_since_s = now_s
        if previous is not None and previous.fallback_since_s is not None:
            fallback_since_s = previous.fallback_since_s

    if override.force is ForceMode.CURTAIL:
        split = Split(0.0, 0.0, 0.0, 0.0, 0.0)
        reasons.append("ops: force curtail")
    elif override.force is ForceMode.MINE:
        split = solve_split(problem, mining_fixed_mw=levels.floor(min(cap_mw, levels.max_mw)))
        reasons.append("ops: force mine")
    elif override.force is ForceMode.SERVE:
        split = _serve_first(problem)
        reasons.append("ops: force serve")
    elif not price_known:
        holding = previous is not None and fallback_since_s is not None and (
            now_s - fallback_since_s < config.fallback_hold_scheduler_s
        )
        split = _fallback_split(problem, running_mw, prev_mining if holding else None, config)
        reasons.append(
            f"fallback: price of {site.price_zone} unknown; "
            + ("mining held at its last level" if holding else "mining curtailed")
            + f"; new AI work only if worth > {config.fallback_price_usd_per_mwh:g} $/MWh"
        )
    else:
        split = solve_split(problem)
        if previous is not None and prev_mining is not None:
            held = levels.floor(min(prev_mining, cap_mw))
            # A lower cap (ops, a window) forces a change anyway: the economics then choose it.
            forced_by_cap = held + _EPS < prev_mining
            if abs(split.mining_mw - held) > _EPS and not forced_by_cap:
                cutting_loss = split.mining_mw < held and price > r_mine
                dwell_s = config.dwell_s(site.asic.ramp_s)
                dwell_over = now_s - previous.mode_changed_at_s >= dwell_s
                if not cutting_loss and not dwell_over:
                    split = solve_split(problem, mining_fixed_mw=held)
                    reasons.append(
                        f"dwell: mining held at {held:g} MW until "
                        f"t={previous.mode_changed_at_s + dwell_s:.0f}"
                    )
        reasons.extend(_economic_reasons(split, price, r_mine, value, wanted_mw, running_mw))

    return _make_plan(
        site, split, cap_mw, price, price_known, r_mine, previous, now_s, reasons,
        fallback=not price_known or not hashprice_known, fallback_since_s=fallback_since_s,
        running_mw=running_mw,
    )


def _economic_reasons(
    split: Split,
    price: float,
    r_mine: float,
    value: float,
    wanted_mw: float,
    running_mw: float,
) -> list[str]:
    reasons = [f"price {price:.2f} $/MWh; R_mine {r_mine:.2f}; AI value {value:.2f}"]
    if price > r_mine:
        reasons.append("mining curtailed: price above R_mine")
    if wanted_mw - split.ai_mw > _EPS:
        why = "price above its value" if price >= value else "cap"
        reasons.append(f"AI limited to {split.ai_mw:.3f} of {wanted_mw:.3f} MW ({why})")
    if running_mw - split.ai_mw > _EPS:
        reasons.append(f"preempts {running_mw - split.ai_mw:.3f} MW of running AI work")
    if split.idle_on_mw > _EPS:
        reasons.append("negative price: idle GPU nodes switched on")
    return reasons


def _make_plan(
    site: SiteSpec,
    split: Split,
    cap_mw: float,
    price: float,
    price_known: bool,
    r_mine: float,
    previous: SitePowerPlan | None,
    now_s: float,
    reasons: list[str],
    fallback: bool,
    fallback_since_s: float | None,
    running_mw: float = 0.0,
) -> SitePowerPlan:
    serving_mw = split.ai_mw + split.standby_mw + split.idle_on_mw
    idle_gpu_mw = (split.standby_mw + split.idle_on_mw) * site.gpu_idle_fraction
    curtailed_mw = max(0.0, site.asic.power_mw - split.mining_mw) + max(
        0.0, site.gpu_busy_mw - serving_mw
    )
    # At the cap: no room left, or AI holds room that whole mining blocks would use while mining
    # pays. Either way more AI here displaces mining, so its opportunity price includes R_mine.
    levels = AsicLevels.of(site.asic)
    mining_room_mw = levels.floor(min(cap_mw, site.asic.power_mw))
    no_room = cap_mw - split.mining_mw - serving_mw <= _EPS
    at_cap = no_room or (
        serving_mw > _EPS and split.mining_mw + _EPS < mining_room_mw and price < r_mine
    )
    # More AI with no room left stops the next block, of which the GPUs still off use a part.
    share = 1.0
    gpus_off_mw = site.gpu_busy_mw - serving_mw
    if no_room and split.mining_mw > _EPS and gpus_off_mw > _EPS:
        share = levels.stop_share(split.mining_mw, gpus_off_mw)
    changed = previous is None or abs(split.mining_mw - previous.mining_mw) > _EPS
    return SitePowerPlan(
        site=site.name,
        mining_mw=split.mining_mw,
        ai_mw=split.ai_mw,
        idle_gpu_mw=idle_gpu_mw,
        curtailed_mw=curtailed_mw,
        price_usd_per_mwh=price,
        r_mine_usd_per_mwh=r_mine,
        opportunity_price_usd_per_mwh=opportunity_price_usd_per_mwh(price, r_mine, at_cap, share),
        block_share=share,
        at_cap=at_cap,
        mode_changed_at_s=now_s if changed or previous is None else previous.mode_changed_at_s,
        reasons=tuple(reasons),
        fallback=fallback,
        serving_mw=serving_mw,
        cap_mw=cap_mw,
        price_zone=site.price_zone,
        price_known=price_known,
        fallback_since_s=fallback_since_s,
        preempt_mw=max(running_mw - split.ai_mw, 0.0) if running_mw - split.ai_mw > _EPS else 0.0,
    )
