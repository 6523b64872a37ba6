"""Capacity by SLO: the replica count from queueing, and which nodes load and unload.

The pure planner is tested with the numbers worked by hand; the core's use of it (demand from
submits and outcomes, loads as intents, a cold node placed with its cold start counted, scale to
zero, jobs limited to regions) through a real SchedulerCore on a manual clock. The core's counts
of queued and leased jobs, which the planner reads instead of walking every job, are checked
against a recount after each step of a mixed run.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from scheduler.core.capacity import (
    CapacityPolicy,
    LoadOnNode,
    ModelDemand,
    ModelTargets,
    NodeModels,
    UnloadOnNode,
    erlang_c_wait_s,
    plan_capacity,
    region_claims,
    replicas_needed,
    servers_for_wait,
    usable_slots,
)
from scheduler.core.clock import ManualClock
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.placement import Placement
from scheduler.core.scheduler import Assign, ModelsReport, SchedulerCore, SchedulerPolicy
from tests.unit.scheduler.core.builders import (
    EMBED_MODEL,
    GEN_MODEL,
    T0_S,
    make_node_info,
    make_record,
)

TARGETS = {EMBED_MODEL: ModelTargets(ttft_target_s=0.5, memory_mb=128),
           GEN_MODEL: ModelTargets(ttft_target_s=2.0, per_token_target_s=0.1, memory_mb=512)}
POLICY = CapacityPolicy()


def node(node_id: str = "n1", site: str = "s1", loaded: tuple[str, ...] = (),
         loadable: tuple[str, ...] = (EMBED_MODEL,), slots: int = 2, memory_mb: int = 8192,
         running: dict[str, int] | None = None, eligible: bool = True,
         region: str = "") -> NodeModels:
    return NodeModels(node_id=node_id, site=site, eligible=eligible, slots=slots,
                      memory_mb=memory_mb, loaded=frozenset(loaded), loading=frozenset(),
                      loadable=frozenset(loadable) - frozenset(loaded), running=running or {},
                      region=region)


def demand(rate_per_s: float, service_s: float, at_s: float = 0.0) -> ModelDemand:
    return ModelDemand(rate_per_s=rate_per_s, rate_at_s=at_s, service_s=service_s,
                       last_demand_s=at_s)


# ----- queueing ---------------------------------------------------------------------------------

def test_erlang_c_matches_the_single_server_queue() -> None:
    # M/M/1: Wq = rho / (mu - lambda) = 0.5 / (1 - 0.5) = 1 s at lambda 0.5/s, S 1 s.
    assert erlang_c_wait_s(1, 0.5, 1.0) == pytest.approx(1.0)
    # M/M/2 at a = 1: C = 1/3, Wq = C * S / (c - a) = 1/3 s.
    assert erlang_c_wait_s(2, 1.0, 1.0) == pytest.approx(1 / 3)
    assert erlang_c_wait_s(1, 1.0, 1.0) == math.inf  # cannot keep up


def test_servers_for_wait_is_the_fewest_that_fit() -> None:
    n = servers_for_wait(10.0, 1.0, 0.1)
    assert erlang_c_wait_s(n, 10.0, 1.0) <= 0.1 < erlang_c_wait_s(n - 1, 10.0, 1.0)
    assert servers_for_wait(0.0, 1.0, 0.1) == 0


def test_a_node_missing_the_per_token_target_counts_fewer_slots() -> None:
    assert usable_slots(4, per_token_s=0.05, per_token_target_s=0.1) == 4
    assert usable_slots(4, per_token_s=0.2, per_token_target_s=0.1) == 2
    assert usable_slots(4, per_token_s=1.0, per_token_target_s=0.1) == 1
    assert usable_slots(4, per_token_s=1.0, per_token_target_s=0.0) == 4


def test_replicas_follow_the_arrival_rate_and_the_queue() -> None:
    quiet, _ = replicas_needed(demand(0.0, 0.2), TARGETS[EMBED_MODEL], 0, 2, 0.0, POLICY)
    busy, why = replicas_needed(demand(20.0, 0.2), TARGETS[EMBED_MODEL], 0, 2, 0.0, POLICY)
    queued, _ = replicas_needed(demand(0.0, 0.2), TARGETS[EMBED_MODEL], 40, 2, 0.0, POLICY)
    assert quiet == 0
    assert busy >= 3  # 20/s x 0.2 s = 4 slots busy on average: 2 nodes would never catch up
    assert "20.00/s" in why
    assert queued == 8  # 40 x 0.2 s of work to do within 0.5 s on 2-slot nodes


def test_the_arrival_rate_decays_while_nothing_arrives() -> None:
    d = ModelDemand()
    for i in range(30):
        d.arrive(float(i), window_s=30.0)
    assert d.rate_at(29.0, 30.0) == pytest.approx(0.63, abs=0.1)
    assert d.rate_at(29.0 + 300.0, 30.0) < 1e-4


# ----- which nodes --------------------------------------------------------------------------

def test_a_queued_model_held_nowhere_is_loaded_on_one_node() -> None:
    plan = plan_capacity([node("n1"), node("n2")], {}, {EMBED_MODEL: 1}, TARGETS, {}, 0.0, POLICY)
    assert plan.actions == (LoadOnNode("n1", "s1", EMBED_MODEL, plan.actions[0].reason),)
    assert plan.replicas == {("s1", EMBED_MODEL): 1}


def test_loads_spread_over_sites_and_skip_nodes_that_cannot_hold_the_model() -> None:
    nodes = [node("a1", "a"), node("a2", "a"), node("b1", "b"),
             node("c1", "c", memory_mb=100), node("d1", "d", eligible=False)]
    plan = plan_capacity(nodes, {EMBED_MODEL: demand(20.0, 0.2)}, {}, TARGETS, {}, 0.0, POLICY)
    loaded_at = [a.node_id for a in plan.actions if isinstance(a, LoadOnNode)]
    assert loaded_at[:2] == ["a1", "b1"]  # one per site before a second at any
    assert "c1" not in loaded_at and "d1" not in loaded_at


def test_a_node_that_refused_the_load_is_not_asked_again() -> None:
    refused = replace(node("n1"), refused=frozenset({EMBED_MODEL}))
    plan = plan_capacity([refused, node("n2")], {}, {EMBED_MODEL: 1}, TARGETS, {}, 0.0, POLICY)
    assert [a.node_id for a in plan.actions] == ["n2"]


def test_loads_per_tick_are_bounded() -> None:
    nodes = [node(f"n{i}", f"s{i}") for i in range(10)]
    policy = replace(POLICY, max_loads_per_tick=3)
    plan = plan_capacity(nodes, {EMBED_MODEL: demand(200.0, 0.2)}, {}, TARGETS, {}, 0.0, policy)
    assert len(plan.actions) == 3


def test_without_scale_down_loaded_models_stay() -> None:
    nodes = [node("n1", loaded=(EMBED_MODEL,)), node("n2", loaded=(EMBED_MODEL,))]
    surplus: dict[str, float] = {}
    for now_s in (0.0, 1000.0, 100_000.0):
        plan = plan_capacity(nodes, {}, {}, TARGETS, surplus, now_s, POLICY)
        assert plan.actions == ()


def test_a_surplus_is_unloaded_once_it_has_lasted() -> None:
    policy = replace(POLICY, scale_down_after_s=60.0)
    nodes = [node("n1", loaded=(EMBED_MODEL,)), node("n2", loaded=(EMBED_MODEL,))]
    surplus: dict[str, float] = {}
    d = {EMBED_MODEL: demand(0.0, 0.2, at_s=0.0)}
    assert plan_capacity(nodes, d, {}, TARGETS, surplus, 10.0, policy).actions == ()
    plan = plan_capacity(nodes, d, {}, TARGETS, surplus, 71.0, policy)
    # One stays (no scale to zero): the other goes.
    assert [type(a) for a in plan.actions] == [UnloadOnNode]
    assert plan.replicas == {("s1", EMBED_MODEL): 1}


def test_scale_to_zero_waits_for_idleness_and_spares_running_work() -> None:
    policy = replace(POLICY, scale_to_zero_after_s=30.0)
    busy = node("n1", loaded=(EMBED_MODEL,), running={EMBED_MODEL: 1})
    idle = node("n2", loaded=(EMBED_MODEL,))
    d = {EMBED_MODEL: demand(0.0, 0.2, at_s=0.0)}
    assert plan_capacity([idle], d, {}, TARGETS, {}, 10.0, policy).actions == ()
    plan = plan_capacity([idle], d, {}, TARGETS, {}, 31.0, policy)
    assert [(type(a), a.node_id) for a in plan.actions] == [(UnloadOnNode, "n2")]
    assert "scale to zero" in plan.actions[0].reason
    assert plan_capacity([busy], d, {}, TARGETS, {}, 31.0, policy).actions == ()


# ----- regions ------------------------------------------------------------------------------

EUROPE = frozenset({"europe"})


def test_an_arrival_limited_to_regions_counts_a_share_in_each() -> None:
    d = ModelDemand()
    d.arrive(0.0, window_s=30.0)
    d.arrive(0.0, window_s=30.0, regions=frozenset({"europe", "africa"}))
    d.arrive(0.0, window_s=30.0, regions=EUROPE)
    assert d.rate_per_s == pytest.approx(3 / 30)
    assert d.region_rates_at(0.0, 30.0) == pytest.approx({"europe": 1.5 / 30, "africa": 0.5 / 30})
    # The regions' rates decay with the model's: their shares of it stay.
    later = d.region_rates_at(60.0, 30.0)
    assert later["europe"] / d.rate_at(60.0, 30.0) == pytest.approx(0.5)
    # With one queued job for europe: 1.5 + 1 of 3 + 1 jobs, of 2 replicas.
    claims = region_claims(d, {EUROPE: 1}, 2, 0.0, 30.0)
    assert claims == pytest.approx({"europe": 2 * 2.5 / 4, "africa": 2 * 0.5 / 4})
    assert region_claims(ModelDemand(), {frozenset(): 3}, 2, 0.0, 30.0) == {}


def _some_demand(europe_share: float) -> ModelDemand:
    """Ten arrivals at 0 s, `europe_share` of them limited to europe; a 0.2 s service."""
    d = ModelDemand(service_s=0.2)
    europe = round(10 * europe_share)
    for i in range(10):
        d.arrive(0.0, window_s=POLICY.rate_window_s, regions=EUROPE if i < europe else frozenset())
    return d


def test_a_load_goes_first_to_a_region_whose_restricted_demand_has_no_replica() -> None:
    # (a) Same memory, no copies: today's rules would pick the first id, in asia.
    nodes = [node("a-asia", "s-asia", region="asia"), node("e-eu", "s-eu", region="europe")]
    anywhere = plan_capacity(nodes, {EMBED_MODEL: _some_demand(0.0)}, {}, TARGETS, {}, 0.0,
                             POLICY)
    assert [a.node_id for a in anywhere.actions] == ["a-asia"]
    some_europe = plan_capacity(nodes, {EMBED_MODEL: _some_demand(0.2)}, {}, TARGETS, {}, 0.0,
                                POLICY)
    assert [a.node_id for a in some_europe.actions] == ["e-eu"]


def test_once_its_share_is_covered_a_region_is_spread_over_like_the_rest() -> None:
    # (a) Three copies wanted, a fifth of the demand only europe may serve: europe's claim is
    # 0.6 copies, so one copy there covers it; the next copies spread by site.
    nodes = [node("e1", "s-eu1", region="europe"), node("e2", "s-eu2", region="europe"),
             node("a1", "s-asia", region="asia"), node("b1", "s-am", region="america")]
    d = ModelDemand(rate_per_s=20.0, service_s=0.2, last_demand_s=0.0,
                    region_rate_per_s={"europe": 4.0})
    plan = plan_capacity(nodes, {EMBED_MODEL: d}, {}, TARGETS, {}, 0.0, POLICY)
    assert plan.models[0].wanted == 3
    assert [a.node_id for a in plan.actions] == ["e1", "a1", "b1"]


def test_a_queue_only_its_region_may_run_gets_a_load_there_though_the_count_is_met() -> None:
    # (b) One copy wanted (one job queued), one held, in asia: the europe job cannot use it.
    nodes = [node("a1", "s-asia", loaded=(EMBED_MODEL,), region="asia"),
             node("e1", "s-eu", region="europe")]
    plan = plan_capacity(nodes, {}, {EMBED_MODEL: 1}, TARGETS, {}, 0.0, POLICY,
                         queued_regions={EMBED_MODEL: {EUROPE: 1}})
    assert [(type(a), a.node_id) for a in plan.actions] == [(LoadOnNode, "e1")]
    assert "queued for europe" in plan.actions[0].reason
    # The count is the queue's one; the region adds a copy, and the plan says so.
    assert (plan.models[0].wanted, plan.models[0].held) == (2, 1)
    assert "+1 for regions with none" in plan.models[0].why
    # A job that may run anywhere, or in a set of regions one of which holds a copy, uses it.
    for regions in (frozenset(), frozenset({"europe", "asia"})):
        plan = plan_capacity(nodes, {}, {EMBED_MODEL: 1}, TARGETS, {}, 0.0, POLICY,
                             queued_regions={EMBED_MODEL: {regions: 1}})
        assert plan.actions == ()
    # Two sets with no copy, one node that serves both: one load covers them.
    nodes.append(node("f1", "s-af", region="africa"))
    quick = {EMBED_MODEL: ModelDemand(service_s=0.1)}  # three queued fit one copy's target
    plan = plan_capacity(nodes, quick, {EMBED_MODEL: 3}, TARGETS, {}, 0.0, POLICY,
                         queued_regions={
                             EMBED_MODEL: {frozenset({"europe", "africa"}): 2, EUROPE: 1}})
    assert [a.node_id for a in plan.actions] == ["e1"]


def test_scale_down_keeps_the_last_replica_of_a_region_with_restricted_demand() -> None:
    # (c) Today's rule would unload the first id ("a-eu"); europe's jobs, seen 21 s ago, need it.
    policy = replace(POLICY, scale_down_after_s=60.0)
    eu = node("a-eu", "s-eu", loaded=(EMBED_MODEL,), region="europe")
    asia = node("b-asia", "s-asia", loaded=(EMBED_MODEL,), region="asia")
    d = {EMBED_MODEL: ModelDemand(service_s=0.2)}
    d[EMBED_MODEL].arrive(50.0, window_s=POLICY.rate_window_s, regions=EUROPE)
    surplus: dict[str, float] = {}
    assert plan_capacity([eu, asia], d, {}, TARGETS, surplus, 10.0, policy).actions == ()
    plan = plan_capacity([eu, asia], d, {}, TARGETS, surplus, 71.0, policy)
    assert [(type(a), a.node_id) for a in plan.actions] == [(UnloadOnNode, "b-asia")]
    # With asia's busy, europe's is the only one that could go: not while its demand is recent;
    # once that is older than a surplus must last, it is a surplus like any other.
    busy_asia = replace(asia, running={EMBED_MODEL: 1})
    since = {EMBED_MODEL: 0.0}
    assert plan_capacity([eu, busy_asia], d, {}, TARGETS, since, 71.0, policy).actions == ()
    plan = plan_capacity([eu, busy_asia], d, {}, TARGETS, since, 111.0, policy)
    assert [(type(a), a.node_id) for a in plan.actions] == [(UnloadOnNode, "a-eu")]
    # Two in europe, one in asia, one needed: two go, and the last in europe stays.
    eu2 = node("c-eu", "s-eu2", loaded=(EMBED_MODEL,), region="europe")
    plan = plan_capacity([eu, asia, eu2], d, {}, TARGETS, {EMBED_MODEL: 0.0}, 71.0, policy)
    assert sorted(a.node_id for a in plan.actions) == ["a-eu", "b-asia"]
    # Queued jobs for europe protect it whatever the arrival times say.
    plan = plan_capacity([eu, asia], {}, {EMBED_MODEL: 1}, TARGETS, {EMBED_MODEL: 0.0}, 500.0,
                         policy, queued_regions={EMBED_MODEL: {EUROPE: 1}})
    assert [a.node_id for a in plan.actions] == ["b-asia"]


def test_scale_to_zero_takes_every_region_s_last_replica() -> None:
    policy = replace(POLICY, scale_down_after_s=60.0, scale_to_zero_after_s=30.0)
    d = ModelDemand(service_s=0.2)
    d.arrive(0.0, window_s=POLICY.rate_window_s, regions=EUROPE)
    nodes = [node("e1", "s-eu", loaded=(EMBED_MODEL,), region="europe")]
    plan = plan_capacity(nodes, {EMBED_MODEL: d}, {}, TARGETS, {}, 31.0, policy)
    assert [(type(a), a.node_id) for a in plan.actions] == [(UnloadOnNode, "e1")]


def test_a_disabled_policy_plans_nothing() -> None:
    plan = plan_capacity([node()], {}, {EMBED_MODEL: 5}, TARGETS, {}, 0.0,
                         replace(POLICY, enabled=False))
    assert plan.actions == ()


# ----- in the core --------------------------------------------------------------------------

def _core(capacity: CapacityPolicy = POLICY) -> tuple[SchedulerCore, ManualClock]:
    return SchedulerCore(SchedulerPolicy(capacity=capacity)), ManualClock(T0_S)


def test_a_job_for_a_model_no_node_holds_goes_to_a_node_that_can_load_it() -> None:
    core, clock = _core()
    info = replace(make_node_info("n1", models=()), loadable_models=frozenset({EMBED_MODEL}))
    core.connect_node(info, (), clock.now_s())
    core.submit(make_record("j1"))
    step = core.tick(clock.now_s())
    assigns = [i for i in step.intents if isinstance(i, Assign)]
    assert [(a.node_id, a.job_id) for a in assigns] == [("n1", "j1")]
    placed = next(d for d in step.decisions if isinstance(d, Placement))
    assert placed.score.warmth_usd > 0  # the cold start is counted


def test_placement_prefers_a_node_holding_the_model_over_one_that_must_load_it() -> None:
    core, clock = _core()
    cold = replace(make_node_info("a-cold", models=()), loadable_models=frozenset({EMBED_MODEL}))
    warm = make_node_info("b-warm", models=(EMBED_MODEL,))
    core.connect_node(cold, (), clock.now_s())
    core.connect_node(warm, (), clock.now_s())
    core.submit(make_record("j1", tier="interactive"))
    step = core.tick(clock.now_s())
    assert [i.node_id for i in step.intents if isinstance(i, Assign)] == ["b-warm"]


def test_the_core_loads_more_replicas_when_arrivals_need_them() -> None:
    core, clock = _core()
    for i in range(4):
        info = replace(make_node_info(f"n{i}", site=f"s{i}", models=(), slots_total=1),
                       loadable_models=frozenset({EMBED_MODEL}))
        core.connect_node(info, (), clock.now_s())
    core.demand[EMBED_MODEL] = demand(10.0, 0.2, at_s=clock.now_s())
    step = core.plan_capacity(clock.now_s())
    loads = [i for i in step.intents if isinstance(i, LoadOnNode)]
    assert len(loads) >= 3  # 10/s x 0.2 s = 2 slots busy; a 0.25 s wait needs more than 2
    # Marked loading at once: the next tick does not ask again.
    assert not [i for i in core.plan_capacity(clock.now_s()).intents if isinstance(i, LoadOnNode)]
    assert step.capacity is not None and step.capacity.models[0].wanted == len(loads)


def test_scale_to_zero_and_back_in_the_core() -> None:
    core, clock = _core(replace(POLICY, scale_to_zero_after_s=60.0))
    core.connect_node(make_node_info("n1"), (), clock.now_s())
    core.submit(make_record("j1"))
    step = core.tick(clock.now_s())
    core.job_started("n1", "j1", 1, clock.now_s())
    core.job_outcome("n1", "j1", 1, clock.now_s(), result_blob=b"x", run_ms=50.0, tokens=10)
    clock.advance(30.0)
    assert not [i for i in core.tick(clock.now_s()).intents if isinstance(i, UnloadOnNode)]
    clock.advance(31.0)
    step = core.tick(clock.now_s())
    assert [(type(i), i.node_id) for i in step.intents] == [(UnloadOnNode, "n1")]
    core.heartbeat("n1", (), clock.now_s(), models=ModelsReport(loaded=frozenset()))
    # Scaled to zero, a new job still finds the node (it loads the model for it) ...
    core.submit(make_record("j2", submitted_s=clock.now_s()))
    step = core.tick(clock.now_s())
    assert [(i.node_id, i.job_id) for i in step.intents if isinstance(i, Assign)] == [("n1", "j2")]
    # ... and the model counts as warm there while its job runs, so it is not unloaded again.
    clock.advance(61.0)
    assert not [i for i in core.tick(clock.now_s()).intents if isinstance(i, UnloadOnNode)]


def test_a_refused_load_is_remembered_from_the_heartbeat() -> None:
    core, clock = _core()
    info = replace(make_node_info("n1", models=()), loadable_models=frozenset({EMBED_MODEL}))
    core.connect_node(info, (), clock.now_s())
    core.heartbeat("n1", (), clock.now_s(), models=ModelsReport(
        loaded=frozenset(), failures={EMBED_MODEL: "not enough memory"}))
    core.submit(make_record("j1"))
    loads = [i for i in core.plan_capacity(clock.now_s()).intents if isinstance(i, LoadOnNode)]
    assert loads == []


def test_jobs_avoid_a_node_that_could_not_load_their_model_until_the_wait_is_over() -> None:
    core, clock = _core()
    for node_id in ("a", "b"):
        info = replace(make_node_info(node_id, models=()), loadable_models=frozenset({EMBED_MODEL}))
        core.connect_node(info, (), clock.now_s())
    core.heartbeat("a", (), clock.now_s(), models=ModelsReport(
        loaded=frozenset(), failures={EMBED_MODEL: "not enough memory"}))
    core.submit(make_record("j1"))
    step = core.tick(clock.now_s())
    assert [i.node_id for i in step.intents if isinstance(i, Assign)] == ["b"]
    # The agent keeps reporting the failure; that does not extend the wait.
    clock.advance(POLICY.refused_retry_s + 1.0)
    core.heartbeat("a", (), clock.now_s(), models=ModelsReport(
        loaded=frozenset(), failures={EMBED_MODEL: "not enough memory"}))
    core.tick(clock.now_s())
    assert EMBED_MODEL in next(v for v in core.node_views() if v.node_id == "a").models


def test_ops_load_and_unload_a_model_with_clear_refusals() -> None:
    core, clock = _core()
    info = replace(make_node_info("n1", models=()), loadable_models=frozenset({EMBED_MODEL}))
    core.connect_node(info, (), clock.now_s())
    assert core.command_model("nx", EMBED_MODEL, True, "ops") == "no node 'nx'"
    refused = core.command_model("n1", GEN_MODEL, True, "ops")
    assert isinstance(refused, str) and "cannot serve" in refused
    step = core.command_model("n1", EMBED_MODEL, True, "ops")
    assert not isinstance(step, str)
    assert [type(i) for i in step.intents] == [LoadOnNode]
    core.heartbeat("n1", (), clock.now_s(), models=ModelsReport(loaded=frozenset({EMBED_MODEL})))
    core.submit(make_record("j1"))
    core.tick(clock.now_s())
    busy = core.command_model("n1", EMBED_MODEL, False, "ops")
    assert isinstance(busy, str) and "drain it first" in busy
    core.job_started("n1", "j1", 1, clock.now_s())
    core.job_outcome("n1", "j1", 1, clock.now_s(), result_blob=b"x", run_ms=5.0, tokens=3)
    step = core.command_model("n1", EMBED_MODEL, False, "ops")
    assert not isinstance(step, str) and [type(i) for i in step.intents] == [UnloadOnNode]


def test_a_model_ops_loaded_stays_through_scale_to_zero_until_ops_unload_it() -> None:
    core, clock = _core(replace(POLICY, scale_to_zero_after_s=4.0))
    for name in ("n1", "n2"):
        info = replace(make_node_info(name, models=()), loadable_models=frozenset({EMBED_MODEL}))
        core.connect_node(info, (), clock.now_s())
    assert not isinstance(core.command_model("n1", EMBED_MODEL, True, "ops"), str)
    core.heartbeat("n1", (), clock.now_s(), models=ModelsReport(loaded=frozenset({EMBED_MODEL})))
    # A copy capacity loaded itself, on n2, beside the pinned one.
    core.heartbeat("n2", (), clock.now_s(), models=ModelsReport(loaded=frozenset({EMBED_MODEL})))
    for _ in range(6):  # long past scale_to_zero_after_s with no demand at all
        clock.advance(2.0)
        step = core.tick(clock.now_s())
        gone = {i.node_id for i in step.intents if isinstance(i, UnloadOnNode)}
        assert "n1" not in gone
        if gone:
            core.heartbeat("n2", (), clock.now_s(), models=ModelsReport(loaded=frozenset()))
    assert EMBED_MODEL not in core.nodes["n2"].loaded_models  # the unpinned copy went
    unload = core.command_model("n1", EMBED_MODEL, False, "ops")
    assert not isinstance(unload, str) and [type(i) for i in unload.intents] == [UnloadOnNode]
    assert "n1" not in core.pinned


def test_a_job_only_europe_may_run_does_not_wait_behind_a_replica_in_asia() -> None:
    core, clock = _core()
    # Four slots in asia: the one queued job fits the fleet-wide count of one copy.
    asia = make_node_info("asia-1", site="s-asia", region="asia", slots_total=4)
    core.connect_node(asia, (), clock.now_s())
    eu = replace(make_node_info("eu-1", site="s-eu", region="europe", models=(GEN_MODEL,)),
                 loadable_models=frozenset({EMBED_MODEL}))
    core.connect_node(eu, (), clock.now_s())
    # Europe's only slot is busy with another model's job.
    core.submit(make_record("g1", model=GEN_MODEL))
    step = core.tick(clock.now_s())
    assert [(i.node_id, i.job_id) for i in step.intents if isinstance(i, Assign)] == [
        ("eu-1", "g1")]
    core.job_started("eu-1", "g1", 1, clock.now_s())
    clock.advance(1.0)
    core.submit(make_record("e1", submitted_s=clock.now_s(), allowed_regions=("europe",)))
    step = core.tick(clock.now_s())
    assert not [i for i in step.intents if isinstance(i, Assign)]
    # One copy held (in asia) is all the fleet-wide count asks; the job needs one in europe, and
    # it loads while the slot is busy rather than after.
    loads = [(i.node_id, i.model) for i in step.intents if isinstance(i, LoadOnNode)]
    assert loads == [("eu-1", EMBED_MODEL)]
    assert not [i for i in step.intents if isinstance(i, UnloadOnNode)]
    assert set(core.demand[EMBED_MODEL].region_rate_per_s) == {"europe"}
    assert not [i for i in core.tick(clock.now_s()).intents if isinstance(i, LoadOnNode)]
    clock.advance(1.0)
    core.job_outcome("eu-1", "g1", 1, clock.now_s(), result_blob=b"x", run_ms=900.0, tokens=9)
    core.heartbeat("eu-1", (), clock.now_s(), models=ModelsReport(
        loaded=frozenset({GEN_MODEL, EMBED_MODEL})))
    step = core.tick(clock.now_s())
    assert [(i.node_id, i.job_id) for i in step.intents if isinstance(i, Assign)] == [
        ("eu-1", "e1")]


# ----- the core's counts of jobs ------------------------------------------------------------

def _recount(core: SchedulerCore, states: set[JobState]) -> dict[str, dict[frozenset[str], int]]:
    counts: dict[str, dict[frozenset[str], int]] = {}
    for rec in core.jobs.values():
        if rec.state in states:
            by_regions = counts.setdefault(rec.spec.model, {})
            by_regions[rec.spec.allowed_regions] = by_regions.get(rec.spec.allowed_regions, 0) + 1
    return counts


def _assert_counts(core: SchedulerCore) -> None:
    assert core.queued_jobs == _recount(core, {JobState.QUEUED})
    assert core.leased_jobs == _recount(core, {JobState.ASSIGNED, JobState.RUNNING})
    assert core.queued_count() == sum(1 for r in core.jobs.values() if r.state is JobState.QUEUED)
    by_tier = {t: 0 for t in core.queued_by_tier}
    for rec in core.jobs.values():
        if rec.state is JobState.QUEUED:
            by_tier[rec.spec.tier] += 1
    assert core.queued_by_tier == by_tier


def test_the_job_counts_follow_every_change_of_state() -> None:
    core, clock = _core()
    rng = random.Random(7)
    for i, region in enumerate(("r1", "r2")):
        info = make_node_info(f"n{i}", site=f"s{i}", region=region, slots_total=2,
                              models=(EMBED_MODEL, GEN_MODEL))
        core.connect_node(info, (), clock.now_s())
    # r9: no node, so some jobs stay queued and expire
    regions: tuple[frozenset[str], ...] = (
        frozenset(), frozenset({"r1"}), frozenset({"r2"}), frozenset({"r1", "r2"}),
        frozenset({"r9"}))
    journal: dict[str, JobRecord] = {}

    def journaled(*records: JobRecord) -> None:
        for rec in records:
            journal[rec.job_id] = rec

    seen = 0
    ever_queued = ever_leased = False
    for _ in range(400):
        clock.advance(rng.choice((0.0, 0.5, 3.0)))
        now_s = clock.now_s()
        leased = [r for r in core.jobs.values() if r.state in (JobState.ASSIGNED,
                                                                JobState.RUNNING)]
        action = rng.choice(("submit", "submit", "tick", "start", "finish", "fail", "cancel",
                             "heartbeat", "restore"))
        if action == "submit":
            seen += 1
            rec = make_record(f"j{seen}", model=rng.choice((EMBED_MODEL, GEN_MODEL)),
                              submitted_s=now_s, deadline_s=now_s + rng.choice((5.0, 600.0)),
                              allowed_regions=rng.choice(regions))
            journaled(*core.submit(rec).changed)
        elif action == "tick":
            journaled(*core.tick(now_s).changed)
        elif action == "start" and leased:
            rec = rng.choice(leased)
            core.job_started(rec.node_id, rec.job_id, rec.attempt, now_s)
        elif action in ("finish", "fail") and leased:
            rec = rng.choice(leased)
            verdict = core.job_outcome(rec.node_id, rec.job_id, rec.attempt, now_s,
                                       result_blob=b"x", run_ms=100.0, tokens=5,
                                       error="boom" if action == "fail" else "")
            journaled(*verdict.step.changed)  # failed: retried, or given up
        elif action == "cancel" and core.jobs:
            journaled(*core.cancel(rng.choice(sorted(core.jobs)), now_s).changed)
        elif action == "heartbeat":
            # n0 says it runs nothing: its started jobs are retried (dropped by the agent).
            journaled(*core.heartbeat("n0", (), now_s).changed)
        elif action == "restore":
            # Over the same core (the journal's records replace what it holds) ...
            core.restore(journal.values(), now_s)
            _assert_counts(core)
            # ... and into a new one, as after a restart.
            fresh = SchedulerCore(SchedulerPolicy(capacity=POLICY))
            fresh.restore(journal.values(), now_s)
            _assert_counts(fresh)
            assert fresh.queued_jobs == core.queued_jobs
        _assert_counts(core)
        ever_queued = ever_queued or bool(core.queued_jobs)
        ever_leased = ever_leased or bool(core.leased_jobs)
    assert ever_queued and ever_leased


def test_a_pin_outlives_the_nodes_reconnect_and_is_journalled_by_what_it_becomes() -> None:
    core, clock = _core(replace(POLICY, scale_to_zero_after_s=4.0))
    info = replace(make_node_info("n1", models=()), loadable_models=frozenset({EMBED_MODEL}))
    core.connect_node(info, (), clock.now_s())
    assert core.pins_after("n1", EMBED_MODEL, True) == {EMBED_MODEL}
    assert core.pins_after("n1", EMBED_MODEL, False) == frozenset()
    assert not isinstance(core.command_model("n1", EMBED_MODEL, True, "ops"), str)
    assert core.pinned == {"n1": {EMBED_MODEL}}
    # The agent's stream drops and it says hello again, with the model loaded.
    core.disconnect_node("n1", clock.now_s())
    core.connect_node(replace(info, models=frozenset({EMBED_MODEL})), (), clock.now_s())
    assert core.pinned == {"n1": {EMBED_MODEL}}
    for _ in range(4):  # past scale_to_zero_after_s with no demand: the pin holds
        clock.advance(2.0)
        step = core.tick(clock.now_s())
        assert not [i for i in step.intents if isinstance(i, UnloadOnNode)]
    assert core.model_command_problem("n1", GEN_MODEL, True) is not None
    assert not isinstance(core.command_model("n1", EMBED_MODEL, False, "ops"), str)
    assert core.pinned == {}


def test_scale_down_keeps_one_replica_per_region_set_not_one_per_region_of_it() -> None:
    # Jobs that europe or africa may run: one replica in either serves them.
    policy = replace(POLICY, scale_down_after_s=60.0)
    either = frozenset({"europe", "africa"})
    eu = node("a-eu", "s-eu", loaded=(EMBED_MODEL,), region="europe")
    af = node("b-af", "s-af", loaded=(EMBED_MODEL,), region="africa")
    asia = node("c-asia", "s-asia", loaded=(EMBED_MODEL,), region="asia")
    d = {EMBED_MODEL: ModelDemand(service_s=0.2)}
    d[EMBED_MODEL].arrive(50.0, window_s=POLICY.rate_window_s, regions=either)
    assert d[EMBED_MODEL].regions_last_demand_s == {either: 50.0}
    plan = plan_capacity([eu, af, asia], d, {}, TARGETS, {EMBED_MODEL: 0.0}, 71.0, policy)
    gone = sorted(a.node_id for a in plan.actions)
    # One copy is needed: asia's goes, and one of europe's and africa's, never both.
    assert len(gone) == 2 and "c-asia" in gone
    assert {"a-eu", "b-af"} - set(gone)
    # The same for jobs of the set still queued, whatever the arrival times say.
    plan = plan_capacity([eu, af], {}, {EMBED_MODEL: 1}, TARGETS, {EMBED_MODEL: 0.0}, 500.0,
                         policy, queued_regions={EMBED_MODEL: {either: 1}})
    assert len(plan.actions) == 1
