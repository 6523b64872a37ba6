"""The planner hour by hour on the real 2022 price series (shipped copy) and real Bitcoin data.

Four sites of the shipped example fleet on four zones with spikes and negative hours (ERCOT,
Germany, the Netherlands, New South Wales), a steady AI load on each, a 4-hour dwell so that the
dwell matters at hourly ticks. Checked over the year: a price above R_mine (beyond the hysteresis
band) stops mining in that very tick; a negative price turns on everything that can consume, as
far as the cap allows, once the dwell allows; and no site changes its mining level sooner than
its dwell after the previous change, except to cut a loss (price above R_mine) or on a fallback.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from itertools import pairwise

from scheduler.core.fleet import Fleet
from scheduler.core.planner import PlannerConfig, PowerPlan, SiteAiDemand, plan_power
from scheduler.core.planner.split import AsicLevels
from scheduler.feeds import ReplayFeed
from scheduler.fleet import default_fleet_path, load_fleet

SITES = ("tx-odessa", "de-leipzig", "nl-eemshaven", "au-nsw-hunter")
CONFIG = PlannerConfig(min_dwell_s=4 * 3600.0, hysteresis_usd_per_mwh=2.0)
START = dt.datetime(2022, 1, 1, tzinfo=dt.UTC).timestamp()
HOURS = 365 * 24


@cache
def run_year() -> tuple[Fleet, list[PowerPlan]]:
    fleet = load_fleet(default_fleet_path()).subset(SITES)
    feed = ReplayFeed(start=START, zones=sorted(fleet.price_zones),
                      fx_usd_per_unit=fleet.fx_usd_per_unit)
    demand = {
        s.name: SiteAiDemand(ai_busy_mw=0.5 * s.gpu_busy_mw, ai_queued_mw=0.25 * s.gpu_busy_mw,
                             value_usd_per_mwh=1500.0)
        for s in fleet.sites
    }
    plans: list[PowerPlan] = []
    previous: PowerPlan | None = None
    for h in range(HOURS):
        now_s = START + h * 3600.0
        previous = plan_power(fleet, feed.snapshot(now_s), demand, previous, {}, now_s, CONFIG)
        plans.append(previous)
    return fleet, plans


def test_a_price_above_r_mine_stops_mining_in_the_same_tick() -> None:
    fleet, plans = run_year()
    spikes = 0
    for before, now in pairwise(plans):
        for site in fleet.sites:
            p = now.sites[site.name]
            if p.fallback:
                continue
            if p.price_usd_per_mwh > p.r_mine_usd_per_mwh + CONFIG.hysteresis_usd_per_mwh:
                assert p.mining_mw == 0.0, (site.name, now.t_s, p.reasons)
                if before.sites[site.name].mining_mw > 0.0:
                    spikes += 1
    assert spikes >= 20  # 2022 had many: the test is not vacuous


def test_a_negative_price_turns_on_everything_that_can_consume() -> None:
    fleet, plans = run_year()
    negative_hours = all_on = 0
    for before, now in pairwise(plans):
        for site in fleet.sites:
            p = now.sites[site.name]
            prev = before.sites[site.name]
            dwell_over = now.t_s - prev.mode_changed_at_s >= max(CONFIG.min_dwell_s,
                                                                 site.asic.ramp_s)
            if p.fallback or p.price_usd_per_mwh >= 0.0 or not dwell_over:
                continue
            negative_hours += 1
            # Everything on, as far as the cap allows: any room left is too small for one more
            # ASIC block, and GPU nodes fill room to the last kW.
            room_mw = p.cap_mw - p.mining_mw - p.serving_mw
            levels = AsicLevels.of(site.asic)
            smallest_block_mw = min(b for b in (levels.block_mw, levels.partial_mw) if b > 0)
            assert p.serving_mw == site.gpu_busy_mw or room_mw <= 1e-9, (site.name, now.t_s)
            assert p.mining_mw == levels.max_mw or room_mw < smallest_block_mw, (site.name, now.t_s)
            all_on += p.serving_mw == site.gpu_busy_mw and p.mining_mw == levels.max_mw
    assert negative_hours >= 50
    assert all_on >= 10  # where the cap has room, literally everything is on


def test_no_site_changes_mode_sooner_than_its_dwell_allows() -> None:
    fleet, plans = run_year()
    changes = held = 0
    for site in fleet.sites:
        dwell_s = max(CONFIG.min_dwell_s, site.asic.ramp_s)
        last_change_s: float | None = None
        previous = None
        for plan in plans:
            p = plan.sites[site.name]
            held += any(r.startswith("dwell:") for r in p.reasons)
            if previous is not None and p.mining_mw != previous.mining_mw:
                assert p.mode_changed_at_s == plan.t_s
                cutting_loss = (p.mining_mw < previous.mining_mw
                                and p.price_usd_per_mwh > p.r_mine_usd_per_mwh)
                exempt = cutting_loss or p.fallback or previous.fallback
                if last_change_s is not None and not exempt:
                    assert plan.t_s - last_change_s >= dwell_s, (site.name, plan.t_s, p.reasons)
                last_change_s = plan.t_s
                changes += 1
            previous = p
    assert changes >= 100
    assert held >= 10  # the dwell did hold changes back
