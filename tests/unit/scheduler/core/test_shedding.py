"""A curtailment sheds AI load: which running work is preempted, and what the core does with it.

The choice is a table of hand-worked cases; the core is stepped by hand with an injected clock.
A node of 2 slots at 0.7 kW busy gives each job 0.35 kW = 0.00035 MW of busy power.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core.job_states import JobState
from scheduler.core.planner import CurtailmentWindow, ForceMode, PowerPlan, SiteOverride
from scheduler.core.planner.output import SitePowerPlan
from scheduler.core.scheduler import (
    RetryReason,
    RunningWork,
    ShedOrder,
    choose_preemptions,
)
from scheduler.core.serving import ShedCause, may_serve, shed_orders
from tests.unit.scheduler.core.builders import make_node_info, make_record, make_site
from tests.unit.scheduler.core.test_scheduler_core import POLICY, Harness, cancels

JOB_MW = 0.7 / 2 / 1000


def work(job_id: str, value_usd: float, tier_rank: int = 1, started_s: float = 0.0) -> RunningWork:
    return RunningWork(job_id, 1, "n1", 0.001, value_usd, tier_rank, started_s)


@pytest.mark.parametrize(
    ("target_mw", "expected"),
    [
        (0.003, []),  # three jobs of 1 kW fit a 3 kW target: nothing to stop
        (0.0025, ["cheap"]),  # 0.5 kW over: the least valuable one goes
        (0.002, ["cheap"]),  # exactly at the target after one
        (0.0015, ["cheap", "mid"]),
        (0.0, ["cheap", "mid", "dear"]),
    ],
)
def test_lowest_value_first_and_only_as_much_as_needed(
    target_mw: float, expected: list[str]
) -> None:
    running = [work("dear", 0.03), work("cheap", 0.01), work("mid", 0.02)]
    assert [w.job_id for w in choose_preemptions(running, target_mw)] == expected


def test_ties_go_flex_first_then_the_most_recently_started() -> None:
    running = [
        work("std-old", 0.01, tier_rank=1, started_s=10.0),
        work("flex", 0.01, tier_rank=2, started_s=5.0),
        work("std-new", 0.01, tier_rank=1, started_s=20.0),
    ]
    assert [w.job_id for w in choose_preemptions(running, 0.0)] == ["flex", "std-new", "std-old"]


def running_harness() -> Harness:
    """Two nodes at site s1 (2 slots each) and one at s2, four jobs running at s1."""
    h = Harness()
    h.connect(make_node_info("n1", slots_total=2))
    h.connect(make_node_info("n2", slots_total=2))
    h.core.site_views = {"s1": make_site("s1")}
    for i in range(4):
        rec = make_record(f"j{i}")
        h.submit(replace(rec, spec=replace(rec.spec, value_usd=0.01 * (i + 1))))
    h.tick(1.0)
    for i in range(4):
        rec = h.job(f"j{i}")
        h.start(rec.node_id, rec.job_id, 1)
    return h


def test_shed_preempts_to_the_target_and_queues_the_work_again() -> None:
    h = running_harness()
    h.core.serving_sites = set()  # the plan closed s1
    step = h.core.shed([ShedOrder("s1", 2 * JOB_MW, "dr_window")], h.now_s)
    moved = [(m.job_id, m.reason, m.shed_cause) for m in step.moves]
    assert moved == [
        ("j0", RetryReason.PREEMPTED, "dr_window"),
        ("j1", RetryReason.PREEMPTED, "dr_window"),
    ]
    assert sorted(c[1] for c in cancels(step)) == ["j0", "j1"]
    assert {h.job(j).state for j in ("j0", "j1")} == {JobState.QUEUED}
    assert {h.job(j).state for j in ("j2", "j3")} == {JobState.RUNNING}
    # Closed to new work, s1 takes nothing back.
    assert h.tick(0.5).intents == []


def test_a_preempted_job_keeps_its_attempts() -> None:
    h = running_harness()
    for _ in range(POLICY.max_attempts + 2):
        step = h.core.shed([ShedOrder("s1", 0.0, "ops_curtail")], h.now_s)
        assert all(m.reason is RetryReason.PREEMPTED for m in step.moves)
        h.tick(0.5)  # s1 still serves in this core: the jobs go straight back
    assert not any(r.state is JobState.FAILED for r in step.changed)
    assert h.job("j0").attempt == POLICY.max_attempts + 3


def test_an_order_for_a_site_within_its_target_changes_nothing() -> None:
    h = running_harness()
    assert h.core.shed([ShedOrder("s1", 1.0, "ops_cap")], h.now_s).moves == []
    assert h.core.shed([ShedOrder("nowhere", 0.0, "ops_cap")], h.now_s).moves == []


def site_plan(**changes: object) -> SitePowerPlan:
    base = SitePowerPlan(
        site="s1", mining_mw=10.0, ai_mw=0.002, idle_gpu_mw=0.0, curtailed_mw=0.0,
        price_usd_per_mwh=40.0, r_mine_usd_per_mwh=60.0, opportunity_price_usd_per_mwh=40.0,
        at_cap=False, mode_changed_at_s=0.0, reasons=(), fallback=False, serving_mw=0.002,
        cap_mw=20.0, price_zone="ERCOT",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("override", "plan", "expected"),
    [
        (SiteOverride(), site_plan(), None),
        (SiteOverride(force=ForceMode.SERVE), site_plan(price_usd_per_mwh=5000.0), None),
        (SiteOverride(force=ForceMode.CURTAIL), site_plan(), (0.0, ShedCause.OPS_CURTAIL)),
        (SiteOverride(force=ForceMode.MINE), site_plan(ai_mw=0.001), (0.001, ShedCause.OPS_MINE)),
        (
            SiteOverride(windows=(CurtailmentWindow(0.0, 100.0, 5.0),)),
            site_plan(ai_mw=0.0005),
            (0.0005, ShedCause.DR_WINDOW),
        ),
        # A window that has not started sheds nothing yet.
        (SiteOverride(windows=(CurtailmentWindow(60.0, 100.0),)), site_plan(), None),
        (SiteOverride(cap_mw=3.0), site_plan(ai_mw=0.001), (0.001, ShedCause.OPS_CAP)),
        (
            SiteOverride(),
            site_plan(serving_mw=0.0, ai_mw=0.0, price_usd_per_mwh=4000.0),
            (0.0, ShedCause.PRICE),
        ),
        (SiteOverride(), site_plan(cap_mw=0.0, serving_mw=0.0), (0.0, ShedCause.NO_POWER)),
        # The plan gives running work's power to mining (a whole block earns more).
        (SiteOverride(), site_plan(ai_mw=0.0, preempt_mw=0.0007), (0.0, ShedCause.PLAN)),
        # An unknown price falls back without shedding what runs.
        (SiteOverride(), site_plan(serving_mw=0.0, price_known=False), None),
    ],
)
def test_shed_orders(
    override: SiteOverride, plan: SitePowerPlan, expected: tuple[float, ShedCause] | None
) -> None:
    orders = shed_orders(PowerPlan(0.0, {"s1": plan}), {"s1": override}, 10.0, 1000.0)
    if expected is None:
        assert orders == []
    else:
        assert [(o.site, o.ai_target_mw, o.cause) for o in orders] == [
            ("s1", expected[0], expected[1].value)
        ]


def test_may_serve_is_closed_by_ops_and_where_the_plan_switched_no_gpu_on() -> None:
    assert may_serve(site_plan(), SiteOverride())
    assert not may_serve(site_plan(), SiteOverride(force=ForceMode.CURTAIL))
    assert not may_serve(site_plan(), SiteOverride(force=ForceMode.MINE))
    # No GPU switched on (a sliver would cost a whole block): closed, at any price.
    assert not may_serve(site_plan(serving_mw=0.0), SiteOverride())
    assert not may_serve(site_plan(serving_mw=0.0, price_usd_per_mwh=2000.0), SiteOverride())


def test_a_capped_or_windowed_site_whose_plan_runs_no_gpu_takes_no_work() -> None:
    # Otherwise work placed there is shed at the next tick and placed there again (ping-pong).
    window = SiteOverride(windows=(CurtailmentWindow(5.0, 50.0, 5.0),))
    assert not may_serve(site_plan(serving_mw=0.0), window)
    assert may_serve(site_plan(), window)  # the plan kept GPUs on
    assert not may_serve(site_plan(serving_mw=0.0), SiteOverride(cap_mw=5.0))
