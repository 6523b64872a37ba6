"""The power tick as one pure step, on hand-worked cases.

The site is test_planner's: 20 MW of ASICs in 8 blocks of 2.5 MW, R_mine $83.33/MWh at a $40
hashprice, 4 GPU nodes in the fleet file, with a cap of 20.5 MW (0.5 MW beside the ASICs). The
connected nodes are CPU agents of 2 slots at 0.7 kW busy, so one running job is 0.35 kW =
0.00035 MW of busy AI power.
"""

from __future__ import annotations

import math

import pytest

from scheduler.core.fleet import Fleet
from scheduler.core.planner import CurtailmentWindow, ForceMode, PowerPlan, SiteOverride
from scheduler.core.power_step import (
    PowerInputs,
    PowerStep,
    PriceHistory,
    SetPowerMode,
    node_value_usd_per_mwh,
    power_step,
    price_outlook,
    site_demand,
)
from scheduler.core.scheduler import NodeState
from tests.unit.scheduler.core.builders import make_node_info
from tests.unit.scheduler.core.test_planner import CONFIG, R_MINE, T0, ZONE, make_market, make_site

FLEET = Fleet(
    sites=(make_site(cap_mw=20.5),), fx_usd_per_unit={"USD": 1.0},
    tier_prices_usd_per_million_tokens={"m": {"standard": 1.0}},
)


def node(node_id: str, site: str = "s1", running: int = 0) -> NodeState:
    state = NodeState(info=make_node_info(node_id, site=site, models=("m",), slots_total=2))
    state.running = {(f"{node_id}-j{i}", 1) for i in range(running)}
    return state


def step(
    price: float = 50.0,
    nodes: tuple[NodeState, ...] = (),
    previous: PowerPlan | None = None,
    overrides: dict[str, SiteOverride] | None = None,
    history: dict[str, PriceHistory] | None = None,
) -> PowerStep:
    return power_step(PowerInputs(
        fleet=FLEET, market=make_market(price), nodes=list(nodes), previous=previous,
        overrides=overrides or {}, now_s=T0, config=CONFIG, ai_value_floor_usd_per_mwh=1000.0,
        price_history=history or {},
    ))


def test_demand_is_busy_power_of_what_runs_and_standby_for_the_rest() -> None:
    demand = site_demand([node("a", running=1), node("b", running=2)], {}, 1000.0)["s1"]
    assert demand.ai_busy_mw == pytest.approx((0.35 + 0.7) / 1000)
    assert demand.standby_mw == pytest.approx(0.35 / 1000)
    # 2 slots of 100 tokens/s untrained at $0.15/Mtok on 0.7 kW: 2*100*3600/0.0007*0.15/1e6 =
    # $154/MWh, so the value is the floor's.
    assert demand.value_usd_per_mwh == 1000.0


def test_a_node_sells_every_slot_of_its_busy_power() -> None:
    # 120 GPU slots (15 H100 servers) at 20,000 tokens/s each, 153 kW busy, $0.15/Mtok:
    # 120 * 20,000 * 3600 / 0.153 * 0.15 / 1e6 = $8,470.6/MWh, above the floor.
    pool = NodeState(info=make_node_info(
        "pool", models=("m",), slots_total=120, idle_power_kw=45.0, busy_power_kw=153.0
    ))
    pool.estimates.learn("m", 20_000 * 3600, 3600.0, 0.0)
    value = node_value_usd_per_mwh(pool, {"m": {"standard": 0.15}})
    assert value == pytest.approx(8470.588, rel=1e-6)
    demand = site_demand([pool], {"m": {"standard": 0.15}}, 1000.0)["s1"]
    assert demand.value_usd_per_mwh == pytest.approx(8470.588, rel=1e-6)


def test_a_disconnected_node_is_no_demand() -> None:
    gone = node("a", running=2)
    gone.connected = False
    assert site_demand([gone], {}, 1000.0) == {}


def test_the_outlook_starts_at_the_next_hour_and_prices_the_cap() -> None:
    # A week of flat $30, except $200 at the hour of day one hour ahead.
    past = [30.0] * 168
    for i in range(168 - 24, -1, -24):
        past[i] = 200.0
    history = PriceHistory(past, next_hour_start_s=T0 + 5.0, hour_s=5.0)
    spare = price_outlook(history, R_MINE, at_cap=False)
    assert [w.start_s for w in spare[:3]] == [T0 + 5.0, T0 + 10.0, T0 + 15.0]
    assert spare[0].opportunity_price_usd_per_mwh == pytest.approx(200.0)
    assert spare[1].opportunity_price_usd_per_mwh == pytest.approx(30.0)
    # At the cap an MWh of AI is taken from mining: it costs at least R_mine.
    capped = price_outlook(history, R_MINE, at_cap=True)
    assert capped[1].opportunity_price_usd_per_mwh == pytest.approx(R_MINE)
    assert price_outlook(None, R_MINE, at_cap=False) == ()


def test_a_mode_is_sent_only_when_the_split_changes() -> None:
    first = step(nodes=(node("a", running=1),))
    assert [m.site for m in first.mode_changes] == ["s1"]  # nothing sent before
    again = step(nodes=(node("a", running=1),), previous=first.plan)
    assert again.mode_changes == ()
    assert [m.site for m in again.modes] == ["s1"]
    spike = step(price=5000.0, nodes=(node("a", running=1),), previous=again.plan)
    (change,) = spike.mode_changes
    assert change.mining_mw == 0.0 and change.ai_mw == 0.0
    assert "mining curtailed" in change.reason


def test_a_price_spike_closes_the_site_and_orders_it_to_shed() -> None:
    calm = step(nodes=(node("a", running=2),))
    assert calm.serving_sites == {"s1"} and calm.shed_orders == ()
    spike = step(price=5000.0, nodes=(node("a", running=2),))
    assert spike.serving_sites == frozenset()
    assert [(o.site, o.ai_target_mw, o.cause) for o in spike.shed_orders] == [
        ("s1", 0.0, "price")
    ]


def test_where_the_interconnect_is_the_asics_a_cpu_job_is_not_worth_a_block() -> None:
    # Cap 20 MW = the ASICs: 0.35 kW of AI would stop a 2.5 MW block earning $33/MWh over the
    # price. The plan mines all of it, the site takes no work, and the running job is shed.
    exact = Fleet(sites=(make_site(),), fx_usd_per_unit={"USD": 1.0},
                  tier_prices_usd_per_million_tokens={"m": {"standard": 1.0}})
    out = power_step(PowerInputs(
        fleet=exact, market=make_market(50.0), nodes=[node("a", running=1)], previous=None,
        overrides={}, now_s=T0, config=CONFIG, ai_value_floor_usd_per_mwh=1000.0,
        price_history={},
    ))
    plan = out.plan.sites["s1"]
    assert plan.mining_mw == 20.0 and plan.serving_mw == 0.0
    assert plan.preempt_mw == pytest.approx(0.00035)
    assert out.serving_sites == frozenset()
    assert [(o.site, o.ai_target_mw, o.cause) for o in out.shed_orders] == [("s1", 0.0, "plan")]


def test_an_ops_curtail_sheds_and_a_node_outside_the_fleet_still_serves() -> None:
    out = step(
        nodes=(node("a", running=1), node("x", site="lab")),
        overrides={"s1": SiteOverride(force=ForceMode.CURTAIL)},
    )
    assert out.serving_sites == {"lab"}
    assert [(o.site, o.cause) for o in out.shed_orders] == [("s1", "ops_curtail")]
    view = out.site_views["s1"]
    assert (view.site, view.region, view.outlook) == ("s1", "north_america", ())


def test_site_views_carry_the_outlook_of_the_site_zone() -> None:
    history = {ZONE: PriceHistory([40.0] * 168, next_hour_start_s=T0 + 5.0, hour_s=5.0)}
    view = step(history=history).site_views["s1"]
    assert len(view.outlook) == 12 and view.outlook[0].start_s == T0 + 5.0
    assert math.isfinite(view.opportunity_price_usd_per_mwh)


def test_a_site_takes_no_new_work_just_before_a_window_and_flex_does_not_wait_for_it() -> None:
    history = {ZONE: PriceHistory([40.0] * 168, next_hour_start_s=T0 + 5.0, hour_s=5.0)}
    soon = SiteOverride(windows=(CurtailmentWindow(T0 + 60.0, T0 + 600.0, 0.0, "4CP"),))
    before = power_step(PowerInputs(
        fleet=FLEET, market=make_market(50.0), nodes=[node("a", running=1)], previous=None,
        overrides={"s1": soon}, now_s=T0, config=CONFIG, ai_value_floor_usd_per_mwh=1000.0,
        price_history=history, window_lead_s=120.0,
    ))
    # Closed to new work within the lead time, but what runs is not shed before the window.
    assert before.serving_sites == frozenset() and before.shed_orders == ()
    # The outlook skips the hours the window covers: on this 5 s market clock the hours ahead
    # start at T0+5, +10, ...; those from T0+60 on fall in the window.
    starts = [w.start_s - T0 for w in before.site_views["s1"].outlook]
    assert starts == [5.0 * k for k in range(1, 12)]
    later = power_step(PowerInputs(
        fleet=FLEET, market=make_market(50.0), nodes=[node("a", running=1)], previous=None,
        overrides={"s1": soon}, now_s=T0 - 600.0, config=CONFIG,
        ai_value_floor_usd_per_mwh=1000.0, price_history={}, window_lead_s=120.0,
    ))
    assert later.serving_sites == {"s1"}


def test_same_split_ignores_the_reason() -> None:
    a = SetPowerMode("s1", 10.0, 0.001, 0.0, "price 40")
    assert a.same_split(SetPowerMode("s1", 10.0, 0.001, 0.0, "price 41"))
    assert not a.same_split(SetPowerMode("s1", 7.5, 0.001, 2.5, "price 90"))
    assert not a.same_split(None)


def test_published_day_ahead_prices_replace_last_weeks_means() -> None:
    # A flat $30 week; the market has published $5 for the hour two hours ahead and $90 for the
    # one after (the live clock: scheduler time is market time, hours start on the hour).
    hour0_s = 1_733_040_000.0  # 2024-12-01T08:00Z
    history = PriceHistory(
        [30.0] * 168, next_hour_start_s=hour0_s + 3600, hour_s=3600.0,
        published_usd_per_mwh={hour0_s + 7200: 5.0, hour0_s + 10_800: 90.0,
                               hour0_s + 14_400: math.nan},
    )
    outlook = price_outlook(history, R_MINE, at_cap=False)
    assert [w.opportunity_price_usd_per_mwh for w in outlook[:5]] == [30.0, 5.0, 90.0, 30.0, 30.0]
    assert history.published_at(hour0_s + 7200 + 1800) == 5.0  # any second of that hour
    assert history.published_at(hour0_s + 14_400) is None  # a NaN is no price
