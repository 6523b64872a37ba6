"""The mode planner: per site and tick, how many MW mine, serve AI, idle, or are curtailed.

`plan_power(fleet, market, ai_demand, previous, overrides, now_s) -> PowerPlan` is pure: the live
scheduler and the backtester call the very same function. What it weighs (`planner.py` has the
order of precedence, `split.py` the optimisation):
- the zone's power price `p` and R_mine (from hashprice, the site's J/TH and pool fee);
- the site's cap (interconnect, ops cap, demand-response windows);
- the AI work running and queued at the site and its value per MWh;
- the previous plan: a switching cost (hysteresis) and a minimum dwell on the mining level.

Safe fallback, when the market cannot be trusted (`MarketSnapshot.stale_zones`, a None hashprice):
- Zone price unknown (missing, stale, NaN or absurd): AI work already running keeps running (it is
  paid, and stopping it wastes the work done); queued work and standby capacity are admitted only
  if worth more than `fallback_price_usd_per_mwh` ($1,000/MWh by default); mining holds its last
  planned level for `fallback_hold_s` (15 min) from when the price went missing, then is
  curtailed; with no previous plan it is curtailed at once. No GPU is switched on for a negative
  price that cannot be seen. The plan's price is the fallback price, so the opportunity price the
  placer sees there is high and new flexible work goes elsewhere.
- Hashprice unknown (Bitcoin price or difficulty unusable): R_mine is computed from a floor
  hashprice, `fallback_hashprice_usd_per_phs_day` ($30/PH/day, below every day in 2020-25), so
  mining runs only where the price is below that conservative R_mine.
- Missing fees alone do not trigger a fallback: hashprice then counts the subsidy only, which
  understates R_mine a little (the safe direction).
Every fallback sets `SitePowerPlan.fallback` and says why in `reasons`. Ops overrides (force modes,
caps, windows) are obeyed in fallback too.
"""

from __future__ import annotations

from scheduler.core.planner.inputs import (
    DEFAULT_PLANNER_CONFIG,
    NO_AI_DEMAND,
    NO_OVERRIDE,
    CurtailmentWindow,
    ForceMode,
    PlannerConfig,
    SiteAiDemand,
    SiteOverride,
)
from scheduler.core.planner.output import PowerPlan, SitePowerPlan
from scheduler.core.planner.planner import plan_power, plan_site
from scheduler.core.planner.split import AsicLevels, Split, SplitProblem, solve_split

__all__ = [
    "DEFAULT_PLANNER_CONFIG",
    "NO_AI_DEMAND",
    "NO_OVERRIDE",
    "AsicLevels",
    "CurtailmentWindow",
    "ForceMode",
    "PlannerConfig",
    "PowerPlan",
    "SiteAiDemand",
    "SiteOverride",
    "SitePowerPlan",
    "Split",
    "SplitProblem",
    "plan_power",
    "plan_site",
    "solve_split",
]
