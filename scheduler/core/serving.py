"""Whether a site may take AI work, and when it must shed the AI work it runs: pure decisions on
the power plan, so that a curtailment is enforced, not only respected by new placements.

A plan that curtails a site (ops force, a demand-response window, an ops cap, a price above what
AI work is worth, no power at all) closes it to new work (`may_serve`) and, where running work
draws more than the plan admits, orders the scheduler core to shed it (`shed_orders`, carried out
by `SchedulerCore.shed`: least valuable work first, only as much as the target needs).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from scheduler.core.planner import ForceMode, PowerPlan, SiteOverride, SitePowerPlan
from scheduler.core.planner.inputs import NO_OVERRIDE
from scheduler.core.scheduler import ShedOrder


class ShedCause(str, Enum):
    """Why a site sheds AI work: the label of the preemption counter."""

    OPS_CURTAIL = "ops_curtail"
    OPS_MINE = "ops_mine"
    DR_WINDOW = "dr_window"
    OPS_CAP = "ops_cap"
    PRICE = "price"  # power costs more than AI work is worth
    NO_POWER = "no_power"  # the site's cap is zero
    PLAN = "plan"  # the plan gives the power to mining: its ASIC block earns more


def may_serve(p: SitePowerPlan, override: SiteOverride) -> bool:
    """May the placer send new work to this site's nodes? Where the plan switched GPU capacity
    on, and only there.

    A plan that switched none on has weighed the site's GPUs at what AI work is worth and found
    them not worth the power: a price spike, ops curtailing or forcing mining, a cap or a
    demand-response window that leaves no room, or a site whose interconnect is its ASICs', where
    the first kW of AI costs a whole ASIC block. Work placed there anyway would draw power the
    plan does not have (over the interconnect), and the next plan, seeing it, would refuse it
    again and preempt it (`shed_orders`).
    """
    if override.force in (ForceMode.CURTAIL, ForceMode.MINE):
        return False
    return p.serving_mw > 0


def shed_orders(
    plan: PowerPlan,
    overrides: Mapping[str, SiteOverride],
    now_s: float,
    ai_value_floor_usd_per_mwh: float,
) -> list[ShedOrder]:
    """For each site that must draw less AI power than it may be running, the busy AI power it
    may keep. The core preempts only where running work exceeds it."""
    orders: list[ShedOrder] = []
    for site, p in plan.sites.items():
        override = overrides.get(site, NO_OVERRIDE)
        if override.force is ForceMode.SERVE:
            continue
        if override.force is ForceMode.CURTAIL:
            orders.append(ShedOrder(site, 0.0, ShedCause.OPS_CURTAIL.value))
        elif override.force is ForceMode.MINE:
            orders.append(ShedOrder(site, p.ai_mw, ShedCause.OPS_MINE.value))
        elif any(w.active(now_s) for w in override.windows):
            orders.append(ShedOrder(site, p.ai_mw, ShedCause.DR_WINDOW.value))
        elif override.cap_mw is not None:
            orders.append(ShedOrder(site, p.ai_mw, ShedCause.OPS_CAP.value))
        elif p.cap_mw <= 0:
            orders.append(ShedOrder(site, 0.0, ShedCause.NO_POWER.value))
        elif (
            p.price_known and p.serving_mw <= 0
            and p.price_usd_per_mwh > ai_value_floor_usd_per_mwh
        ):
            # An unknown price does not shed: its fallback only limits new work.
            orders.append(ShedOrder(site, 0.0, ShedCause.PRICE.value))
        elif p.preempt_mw > 0:
            # The plan gives the running work's power to mining (a whole block earns more).
            orders.append(ShedOrder(site, p.ai_mw, ShedCause.PLAN.value))
    return orders


__all__ = ["ShedCause", "may_serve", "shed_orders"]
