"""The core's power tick: the ledger it books, and a site that refused work staying closed."""

from __future__ import annotations

import pytest

from scheduler.core.fleet import Fleet
from scheduler.core.planner import PlannerConfig
from scheduler.core.power_tick import PowerTick
from scheduler.core.scheduler import Assign, SchedulerCore
from tests.unit.scheduler.core.builders import make_node_info, make_record
from tests.unit.scheduler.core.test_planner import T0, make_market, make_site

HOUR_S = 3600.0
# 20 MW of ASICs in 2.5 MW blocks, and 0.5 kW beside them: room for one 0.35 kW job, not two.
FLEET = Fleet(sites=(make_site(cap_mw=20.0005),), fx_usd_per_unit={"USD": 1.0})


def loaded_core() -> SchedulerCore:
    core = SchedulerCore()
    core.connect_node(make_node_info("n1", site="s1", models=("m",), slots_total=2), (), T0)
    for i in range(2):
        core.submit(make_record(f"j{i}", model="m", submitted_s=T0, memory_mb=1))
    for intent in core.schedule(T0).intents:
        assert isinstance(intent, Assign)
        core.job_started(intent.node_id, intent.job_id, intent.attempt, T0)
    assert len(core.nodes["n1"].running) == 2
    return core


def test_a_site_that_refused_running_work_sheds_it_and_takes_none_for_the_hour() -> None:
    core = loaded_core()
    tick = PowerTick(FLEET, PlannerConfig())
    first = tick.run(core, make_market(50.0, t_s=T0), {}, T0, T0, {})
    plan = first.step.plan.sites["s1"]
    assert plan.preempt_mw == pytest.approx(0.0002, abs=1e-6)  # 0.7 kW runs, 0.5 kW fits
    assert [m.shed_cause for m in first.shed.moves] == ["plan"]
    assert core.serving_sites == frozenset()
    # Later in the same hour one job runs, and the plan has room for more on paper: still closed.
    later = tick.run(core, make_market(50.0, t_s=T0 + 60), {}, T0 + 60, T0 + 60, {})
    assert later.shed.moves == [] and core.serving_sites == frozenset()
    # The next market hour decides afresh.
    next_hour_s = (T0 // HOUR_S + 1) * HOUR_S
    tick.run(core, make_market(50.0, t_s=next_hour_s), {}, next_hour_s, next_hour_s, {})
    assert core.serving_sites == {"s1"}


def test_each_run_books_the_interval_since_the_last_in_market_time() -> None:
    core = SchedulerCore()
    tick = PowerTick(FLEET, PlannerConfig())
    assert tick.run(core, make_market(50.0), {}, T0, T0, {}).booked == ()
    # Two scheduler seconds that stand for 720 market seconds (a compressed clock).
    second = tick.run(core, make_market(50.0, t_s=T0 + 2), {}, T0 + 2, T0 + 720, {})
    (interval,) = second.booked
    assert interval.start_s == T0 and interval.duration_s == 720.0
    assert interval.mining_mwh == pytest.approx(20.0 * 720 / 3600)


def test_placement_stops_at_the_busy_power_a_site_plan_switched_on() -> None:
    core = SchedulerCore()
    core.connect_node(make_node_info("n1", site="s1", models=("m",), slots_total=2), (), T0)
    core.connect_node(make_node_info("n2", site="s2", models=("m",), slots_total=2), (), T0)
    core.site_budget_mw = {"s1": 0.00035, "s2": 0.0}  # one 0.35 kW job at s1, none at s2
    for i in range(3):
        core.submit(make_record(f"j{i}", model="m", submitted_s=T0, memory_mb=1))
    placed = [i.node_id for i in core.schedule(T0).intents if isinstance(i, Assign)]
    assert placed == ["n1"]
    assert sum(1 for r in core.jobs.values() if r.state.value == "queued") == 2
    # A new plan with room for both nodes: the queue drains.
    core.site_budget_mw = {"s1": 0.0007, "s2": 0.0007}
    placed = [i.node_id for i in core.schedule(T0 + 1).intents if isinstance(i, Assign)]
    assert sorted(placed) == ["n1", "n2"]
