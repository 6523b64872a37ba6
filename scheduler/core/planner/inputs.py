"""What the power planner is told besides fleet and market: AI demand, ops overrides, config.

Plain frozen data. The scheduler builds `SiteAiDemand` from its queue and running jobs; the admin
API builds `SiteOverride`; the backtester builds both itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class SiteAiDemand:
    """What AI work at a site wants, in MW of GPU busy power, and what it is worth.

    `ai_busy_mw`: work running now. `ai_queued_mw`: work waiting for this site (include the
    interactive work you expect before the next tick: the planner does not forecast).
    `value_usd_per_mwh`: revenue per MWh of GPU energy the work uses (tokens/MWh x price/token).
    `standby_mw`: GPU capacity to keep switched on, idle, for work arriving before the next tick;
    kept when AI is worth serving here (a bet the caller makes, counted at idle power).
    """

    ai_busy_mw: float = 0.0
    ai_queued_mw: float = 0.0
    value_usd_per_mwh: float = 0.0
    standby_mw: float = 0.0

    @property
    def wanted_mw(self) -> float:
        return self.ai_busy_mw + self.ai_queued_mw


NO_AI_DEMAND = SiteAiDemand()


class ForceMode(str, Enum):
    """An ops order for a site, obeyed regardless of price, dwell and fallback."""

    CURTAIL = "curtail"  # draw nothing: ASICs off, GPU nodes off (running AI work is preempted)
    MINE = "mine"  # every ASIC block that fits under the cap mines; AI gets what is left if it pays
    SERVE = "serve"  # AI demand (and standby) first, up to the cap; the rest by economics


@dataclass(frozen=True)
class CurtailmentWindow:
    """Demand response: from `start_s` (inclusive) to `end_s` (exclusive) the site's load stays at
    or under `max_load_mw` (0 = fully curtailed)."""

    start_s: float
    end_s: float
    max_load_mw: float = 0.0
    reason: str = "demand response"
    window_id: str = ""  # how ops name it to cancel it

    def active(self, now_s: float) -> bool:
        return self.start_s <= now_s < self.end_s


@dataclass(frozen=True)
class SiteOverride:
    force: ForceMode | None = None
    cap_mw: float | None = None  # ops cap on the site's power, below the interconnect's
    windows: tuple[CurtailmentWindow, ...] = ()


NO_OVERRIDE = SiteOverride()


@dataclass(frozen=True)
class PlannerConfig:
    """Knobs of the planner. Defaults are choices, not sourced figures; each says why."""

    # Minimum time between two changes of a site's mining level, unless the change cuts a loss
    # (price above R_mine), or an override, window or fallback forces it. 15 minutes: a quarter of
    # an hourly price interval, longer than the minutes an ASIC block takes to ramp. A site's own
    # `asic.ramp_s` is used instead when longer.
    min_dwell_s: float = 900.0
    # Switching cost charged per MW changed (mining or AI) when comparing splits: a change must
    # gain more than this per MWh. About 2% of a typical R_mine (~$95/MWh).
    hysteresis_usd_per_mwh: float = 2.0
    # Zone price unknown: the price assumed for new AI work (queued, standby), conservative: fewer
    # than 0.6% of hours in any zone of the shipped 2020-24 data were above $1,000/MWh.
    fallback_price_usd_per_mwh: float = 1000.0
    # Zone price unknown: mining holds its last level this long, then curtails.
    fallback_hold_s: float = 900.0
    # Hashprice unknown: R_mine is computed from this floor. $30/PH/day is below every daily
    # (subsidy-only) hashprice in the shipped 2020-07..2025-03 data (lowest $37.46, 2024-08-05).
    fallback_hashprice_usd_per_phs_day: float = 30.0
    # How much faster the scheduler's clock runs than the market's (a replay on a compressed
    # clock: 360 when an hour of history passes in 10 s). The durations above and the sites'
    # `ramp_s` are in market seconds; the planner divides them by this. Windows are given on the
    # scheduler's clock and are not scaled.
    clock_speedup: float = 1.0

    def dwell_s(self, ramp_s: float) -> float:
        """Minimum dwell on the scheduler's clock for a site whose blocks ramp in `ramp_s`."""
        return max(self.min_dwell_s, ramp_s) / self.clock_speedup

    @property
    def fallback_hold_scheduler_s(self) -> float:
        return self.fallback_hold_s / self.clock_speedup


DEFAULT_PLANNER_CONFIG = PlannerConfig()
