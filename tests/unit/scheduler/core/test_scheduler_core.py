"""SchedulerCore, stepped by hand: events and ticks in, changed records and intents out.

Each test builds a real core with an injected ManualClock, plays the agent's side by calling the
event methods directly (as the vLLM tests build the runner's output by hand), and asserts on the
returned Step. Policy in these tests: lease 15 s, disconnect grace 10 s, recovery grace 20 s,
3 attempts.
"""

from __future__ import annotations

import pytest

from scheduler.core.clock import ManualClock
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.placement import Placement
from scheduler.core.scheduler import (
    Assign,
    CancelOnNode,
    NodeInfo,
    SchedulerCore,
    SchedulerPolicy,
    Step,
)
from tests.unit.scheduler.core.builders import (
    GEN_MODEL,
    T0_S,
    make_node_info,
    make_record,
    make_site,
)

POLICY = SchedulerPolicy(
    lease_s=15.0, disconnect_grace_s=10.0, recovery_grace_s=20.0, max_attempts=3
)


class Harness:
    """A core, a clock, and shorthands that read the clock for every call."""

    def __init__(self, policy: SchedulerPolicy = POLICY) -> None:
        self.clock = ManualClock(T0_S)
        self.core = SchedulerCore(policy)

    @property
    def now_s(self) -> float:
        return self.clock.now_s()

    def connect(
        self, info: NodeInfo | None = None, running: tuple[tuple[str, int], ...] = ()
    ) -> Step:
        return self.core.connect_node(info or make_node_info(), running, self.now_s)

    def submit(self, *records: JobRecord) -> None:
        for rec in records:
            self.core.submit(rec)

    def tick(self, after_s: float = 0.0) -> Step:
        self.clock.advance(after_s)
        return self.core.tick(self.now_s)

    def job(self, job_id: str = "j1") -> JobRecord:
        return self.core.jobs[job_id]

    def start(self, node_id: str = "n1", job_id: str = "j1", attempt: int = 1) -> Step:
        return self.core.job_started(node_id, job_id, attempt, self.now_s)


def assigns(step: Step) -> list[tuple[str, str, int]]:
    return [(i.node_id, i.job_id, i.attempt) for i in step.intents if isinstance(i, Assign)]


def cancels(step: Step) -> list[tuple[str, str, int]]:
    return [(i.node_id, i.job_id, i.attempt) for i in step.intents if isinstance(i, CancelOnNode)]


def states(step: Step) -> list[tuple[str, JobState]]:
    return [(r.job_id, r.state) for r in step.changed]


# ----- the happy path --------------------------------------------------------------------------


def test_submit_then_tick_assigns_attempt_1_with_a_lease() -> None:
    h = Harness()
    h.connect()
    submitted = h.core.submit(make_record())
    assert states(submitted) == [("j1", JobState.QUEUED)] and submitted.intents == []
    step = h.tick(1.0)
    assert assigns(step) == [("n1", "j1", 1)]
    intent = step.intents[0]
    assert isinstance(intent, Assign)
    assert intent.lease_expires_s == T0_S + 1 + 15
    assert isinstance(intent.placement, Placement) and intent.placement.site == "s1"
    rec = h.job()
    assert (rec.state, rec.attempt, rec.node_id, rec.site, rec.region) == (
        JobState.ASSIGNED, 1, "n1", "s1", "r1"
    )
    assert (rec.assigned_s, rec.lease_expires_s, rec.history) == (T0_S + 1, T0_S + 16, ("n1#1",))
    assert step.changed[-1] == rec  # the edge journals exactly what the core now holds
    assert [type(d) for d in step.decisions] == [Placement]


def test_job_started_moves_to_running_and_renews_the_lease() -> None:
    h = Harness()
    h.connect()
    h.submit(make_record())
    h.tick()
    h.clock.advance(5.0)
    step = h.start()
    # Watchers hear of it; the journal need not (recovery re-leases assigned and running alike).
    assert step.changed == []
    assert [(r.job_id, r.state) for r in step.unjournaled] == [("j1", JobState.RUNNING)]
    assert (h.job().started_s, h.job().lease_expires_s) == (T0_S + 5, T0_S + 20)
    again = h.start()  # a repeated start changes nothing
    assert again.changed == [] and again.unjournaled == []


def test_an_outcome_is_accepted_once() -> None:
    h = Harness()
    h.connect()
    h.submit(make_record())
    h.tick()
    h.start()
    h.clock.advance(2.0)
    verdict = h.core.job_outcome(
        "n1", "j1", 1, h.now_s, result_blob=b"vec", run_ms=1000.0, energy_kwh=1e-4, tokens=200
    )
    assert verdict.accepted and verdict.reason == "accepted"
    (done,) = verdict.step.changed
    assert (done.state, done.result_blob, done.finished_s, done.run_ms, done.energy_kwh) == (
        JobState.SUCCEEDED, b"vec", T0_S + 2, 1000.0, 1e-4
    )
    assert verdict.step.answers == [("j1", "n1", 1)]
    assert verdict.step.intents == []  # nothing to cancel on success
    assert "j1" not in h.core.jobs  # terminal jobs live only in the journal
    assert h.core.nodes["n1"].running == set()  # the slot is free again
    # 200 tokens in 1 s: the node has now shown 200 tokens/s for MiniLM.
    assert h.core.nodes["n1"].estimates.tokens_per_s == {"all-minilm-l6-v2": 200.0}
    again = h.core.job_outcome("n1", "j1", 1, h.now_s, result_blob=b"other")
    assert not again.accepted and again.step == Step()


def test_an_outcome_from_another_node_is_refused() -> None:
    h = Harness()
    h.connect(make_node_info("n1"))
    h.connect(make_node_info("n2", slots_total=0))
    h.submit(make_record())
    h.tick()
    verdict = h.core.job_outcome("n2", "j1", 1, h.now_s, result_blob=b"forged")
    assert not verdict.accepted and verdict.step == Step()
    assert h.job().state is JobState.ASSIGNED and h.core.nodes["n1"].running == {("j1", 1)}
    assert h.core.job_started("n2", "j1", 1, h.now_s).changed == []


# ----- fencing ---------------------------------------------------------------------------------


def test_lease_expiry_replaces_the_job_and_fences_the_old_attempt() -> None:
    h = Harness()
    h.connect()
    h.submit(make_record())
    h.tick()  # attempt 1, lease until T0 + 15
    assert h.tick(15.0).changed == []  # at the lease's end it still holds (strictly after)
    step = h.tick(1.0)  # T0 + 16: the agent never confirmed
    # Back to the queue, the old attempt cancelled on its node, and at once placed again.
    assert states(step) == [("j1", JobState.QUEUED), ("j1", JobState.ASSIGNED)]
    assert cancels(step) == [("n1", "j1", 1)]
    assert assigns(step) == [("n1", "j1", 2)]
    assert h.job().history == ("n1#1", "n1#2")
    # The old attempt wakes up: its start and its result are refused, though the node is the same.
    assert h.start(attempt=1).changed == []
    stale = h.core.job_outcome("n1", "j1", 1, h.now_s, result_blob=b"late")
    assert not stale.accepted and "stale attempt 1" in stale.reason
    assert h.job().state is JobState.ASSIGNED and h.job().attempt == 2
    current = h.core.job_outcome("n1", "j1", 2, h.now_s, result_blob=b"ok")
    assert current.accepted and current.step.answers == [("j1", "n1", 2)]


def test_agent_errors_retry_then_fail_after_max_attempts() -> None:
    h = Harness()
    h.connect()
    h.submit(make_record())
    for attempt in (1, 2):
        h.tick()
        verdict = h.core.job_outcome("n1", "j1", attempt, h.now_s, error="out of memory")
        assert verdict.accepted and verdict.reason == "error recorded"
        assert states(verdict.step) == [("j1", JobState.QUEUED)]
        assert verdict.step.answers == []
    assigned = h.tick()
    assert assigns(assigned) == [("n1", "j1", 3)]
    verdict = h.core.job_outcome("n1", "j1", 3, h.now_s, error="out of memory")
    (failed,) = verdict.step.changed
    assert failed.state is JobState.FAILED
    assert failed.error == "failed after 3 attempts: out of memory"
    assert "j1" not in h.core.jobs
    assert h.tick().intents == []  # never placed a fourth time


def test_lost_leases_also_stop_at_max_attempts() -> None:
    h = Harness()
    h.connect()
    h.submit(make_record())
    h.tick()
    for _ in range(2):
        assert [a[2] for a in assigns(h.tick(16.0))] in ([2], [3])
    step = h.tick(16.0)
    assert states(step) == [("j1", JobState.FAILED)]
    assert step.changed[0].error == "gave up: lease expired"
    assert cancels(step) == [("n1", "j1", 3)]


# ----- lost agents -----------------------------------------------------------------------------


def _two_nodes_job_on_n1(h: Harness) -> None:
    # n1's site is cheaper, so the job goes there first.
    h.core.site_views = {
        "s1": make_site("s1", opportunity_usd_per_mwh=10.0),
        "s2": make_site("s2", opportunity_usd_per_mwh=90.0),
    }
    h.connect(make_node_info("n1", site="s1"))
    h.connect(make_node_info("n2", site="s2"))
    h.submit(make_record())
    assert assigns(h.tick()) == [("n1", "j1", 1)]


def test_disconnect_replaces_after_grace_and_refuses_the_old_result() -> None:
    h = Harness()
    _two_nodes_job_on_n1(h)
    h.start()
    h.clock.advance(1.0)
    h.core.disconnect_node("n1", h.now_s)
    assert h.tick(9.0).changed == []  # 9 s after the disconnect: still within the 10 s grace
    step = h.tick(1.0)
    assert states(step) == [("j1", JobState.QUEUED), ("j1", JobState.ASSIGNED)]
    assert cancels(step) == []  # no one to tell on a lost node
    assert assigns(step) == [("n2", "j1", 2)]
    # n1 comes back with its result for attempt 1: refused, and told to drop it.
    hello = h.connect(make_node_info("n1", site="s1"), running=(("j1", 1),))
    assert cancels(hello) == [("n1", "j1", 1)]
    late = h.core.job_outcome("n1", "j1", 1, h.now_s, result_blob=b"late")
    assert not late.accepted
    assert h.job().node_id == "n2" and h.job().attempt == 2


def test_a_reconnect_within_grace_keeps_the_job() -> None:
    h = Harness()
    _two_nodes_job_on_n1(h)
    h.start()
    h.core.disconnect_node("n1", h.now_s)
    h.clock.advance(5.0)
    hello = h.connect(make_node_info("n1", site="s1"), running=(("j1", 1),))
    assert hello.intents == [] and h.job().lease_expires_s == T0_S + 5 + 15
    assert h.tick(10.0).changed == []
    assert h.job().state is JobState.RUNNING and h.job().attempt == 1


def test_heartbeat_renews_the_lease() -> None:
    h = Harness()
    h.connect()
    h.submit(make_record())
    h.tick()
    h.start()  # lease until T0 + 15
    h.clock.advance(10.0)
    beat = h.core.heartbeat("n1", [("j1", 1)], h.now_s)
    # Renewed in memory only: recovery re-leases every assigned or running job anyway.
    assert beat.changed == [] and h.job().lease_expires_s == T0_S + 25
    assert h.tick(10.0).changed == []  # T0 + 20 < T0 + 25
    step = h.tick(6.0)  # T0 + 26, no further heartbeat: lost
    assert ("j1", JobState.QUEUED) in states(step)


def test_a_running_job_missing_from_a_heartbeat_is_retried() -> None:
    h = Harness()
    h.connect(make_node_info(slots_total=2))
    h.submit(make_record("j1"), make_record("j2"))
    h.tick()
    h.start(job_id="j1")  # j1 running; j2 assigned, not yet started
    step = h.core.heartbeat("n1", [], h.now_s)
    # j1 started and is not listed: lost on the agent. j2 may simply not have arrived yet.
    assert states(step) == [("j1", JobState.QUEUED)]
    assert cancels(step) == [("n1", "j1", 1)]
    assert h.job("j2").state is JobState.ASSIGNED


def test_heartbeat_from_an_unknown_node_is_ignored() -> None:
    h = Harness()
    assert h.core.heartbeat("ghost", [("j1", 1)], h.now_s) == Step()


# ----- cancel and deadlines --------------------------------------------------------------------


def test_cancel_a_queued_job() -> None:
    h = Harness()
    h.submit(make_record())
    step = h.core.cancel("j1", h.now_s)
    assert states(step) == [("j1", JobState.CANCELLED)] and step.intents == []
    assert step.changed[0].error == "cancelled by the customer"
    h.connect()
    assert h.tick().intents == []  # the cancelled job is not placed
    assert h.core.cancel("j1", h.now_s) == Step()  # a second cancel is a no-op
    assert h.core.cancel("nope", h.now_s) == Step()


def test_cancel_a_running_job_tells_its_node() -> None:
    h = Harness()
    h.connect()
    h.submit(make_record())
    h.tick()
    h.start()
    step = h.core.cancel("j1", h.now_s)
    assert states(step) == [("j1", JobState.CANCELLED)]
    assert cancels(step) == [("n1", "j1", 1)]
    assert h.core.nodes["n1"].running == set()
    assert not h.core.job_outcome("n1", "j1", 1, h.now_s, result_blob=b"x").accepted


def test_deadline_expiry_of_queued_and_running_jobs() -> None:
    h = Harness()
    h.connect()
    h.submit(
        make_record("run", deadline_s=T0_S + 60),
        make_record("wait", deadline_s=T0_S + 90, model=GEN_MODEL),  # no node serves it
    )
    h.tick()
    h.start(job_id="run")
    for _ in range(4):  # keep the lease alive, so only the deadline can end it
        h.clock.advance(14.0)
        h.core.heartbeat("n1", [("run", 1)], h.now_s)
    assert h.tick(4.0).changed == []  # T0 + 60: not past the deadline yet
    step = h.tick(1.0)
    assert states(step) == [("run", JobState.EXPIRED)]
    assert cancels(step) == [("n1", "run", 1)]
    assert step.changed[0].error == "deadline passed before it finished"
    assert states(h.tick(30.0)) == [("wait", JobState.EXPIRED)]
    assert h.core.jobs == {}


# ----- restart ---------------------------------------------------------------------------------


def _journal_after_crash() -> list[JobRecord]:
    """What the journal held when the scheduler died at T0 + 5."""
    base = make_record("assigned")
    return [
        make_record("queued"),
        base.evolve(
            state=JobState.ASSIGNED, attempt=1, node_id="n1", site="s1", region="r1",
            lease_expires_s=T0_S + 3,
        ),
        make_record("running").evolve(
            state=JobState.RUNNING, attempt=2, node_id="n1", site="s1", region="r1",
            lease_expires_s=T0_S + 3,
        ),
        make_record("done").evolve(state=JobState.SUCCEEDED),
    ]


def test_restore_gives_assigned_and_running_jobs_a_recovery_lease() -> None:
    h = Harness()
    h.clock.set(T0_S + 100)
    h.core.restore(_journal_after_crash(), h.now_s)
    assert sorted(h.core.jobs) == ["assigned", "queued", "running"]  # terminal jobs stay out
    for job_id in ("assigned", "running"):
        assert h.job(job_id).lease_expires_s == T0_S + 100 + 20
    assert h.job("queued").lease_expires_s == 0.0
    # No agent ever comes back: after the recovery grace the jobs are placed again.
    assert h.tick(20.0).changed == []
    step = h.tick(1.0)
    assert sorted(states(step)) == [("assigned", JobState.QUEUED), ("running", JobState.QUEUED)]


def test_reconnect_with_the_job_running_readopts_it() -> None:
    h = Harness()
    h.clock.set(T0_S + 100)
    h.core.restore(_journal_after_crash(), h.now_s)
    hello = h.connect(
        make_node_info(slots_total=2), running=(("assigned", 1), ("running", 2))
    )
    assert hello.intents == [] and hello.changed == []
    readopted = [h.job("assigned"), h.job("running")]
    assert [r.state for r in readopted] == [JobState.ASSIGNED, JobState.RUNNING]
    assert all(r.lease_expires_s == T0_S + 100 + 15 for r in readopted)
    assert h.core.nodes["n1"].running == {("assigned", 1), ("running", 2)}
    # Both slots are taken by re-adopted work, so the queued job waits; nothing is retried.
    step = h.tick(1.0)
    assert step.changed == [] and step.intents == []
    assert h.core.job_outcome("n1", "running", 2, h.now_s, result_blob=b"r").accepted


def test_reconnect_without_the_job_retries_it() -> None:
    h = Harness()
    h.clock.set(T0_S + 100)
    h.core.restore(_journal_after_crash(), h.now_s)
    hello = h.connect(make_node_info(slots_total=3), running=(("running", 2),))
    # "assigned" was never received (or the agent restarted): back to the queue. The cancel
    # covers an assignment still in flight to the agent.
    assert states(hello) == [("assigned", JobState.QUEUED)]
    assert h.job("running").state is JobState.RUNNING
    assert cancels(hello) == [("n1", "assigned", 1)]
    step = h.tick()
    assert sorted(assigns(step)) == [("n1", "assigned", 2), ("n1", "queued", 1)]


def test_reconnect_reporting_a_stale_attempt_is_told_to_cancel_it() -> None:
    h = Harness()
    h.connect()
    h.submit(make_record())
    h.tick()
    hello = h.connect(running=(("j1", 7), ("unknown", 1)))
    # Attempt 7 and "unknown" are not this node's: cancel them. Attempt 1, which it should run, is
    # missing: place it again (and cancel it, in case the assignment is still in flight).
    assert sorted(cancels(hello)) == [("n1", "j1", 1), ("n1", "j1", 7), ("n1", "unknown", 1)]
    assert states(hello) == [("j1", JobState.QUEUED)]


# ----- who gets work ---------------------------------------------------------------------------


def test_a_drained_node_gets_no_work_until_undrained_even_across_reconnects() -> None:
    h = Harness()
    h.connect()
    assert h.core.set_draining("n1", True)
    assert not h.core.set_draining("ghost", True)
    h.submit(make_record())
    assert h.tick().intents == []
    h.connect()  # a reconnect does not undo an operator's drain
    assert h.tick().intents == []
    h.core.set_draining("n1", False)
    assert assigns(h.tick()) == [("n1", "j1", 1)]


def test_agent_draining_flag_stops_work_and_is_cleared_on_reconnect() -> None:
    h = Harness()
    h.connect()
    h.core.heartbeat("n1", [], h.now_s, draining=True)
    h.submit(make_record())
    assert h.tick().intents == []
    h.connect()  # the agent restarted and said hello
    assert not h.core.nodes["n1"].agent_draining
    assert assigns(h.tick()) == [("n1", "j1", 1)]


def test_nodes_of_sites_not_serving_get_no_work() -> None:
    h = Harness()
    h.connect(make_node_info("n1", site="mining"))
    h.core.serving_sites = {"serving"}
    h.submit(make_record())
    assert h.tick().intents == []  # the only node's site mines
    h.connect(make_node_info("n2", site="serving"))
    assert assigns(h.tick()) == [("n2", "j1", 1)]


def test_a_huge_queue_places_only_as_many_jobs_as_free_slots_per_tick() -> None:
    h = Harness()
    for i in range(3):
        h.connect(make_node_info(f"n{i}", slots_total=2))
    h.submit(*(make_record(f"j{i:05d}") for i in range(10_000)))
    first = h.tick()
    assert len(assigns(first)) == 6  # 3 nodes * 2 slots
    # Equal tier and deadline: first come, then by id.
    assert sorted(a[1] for a in assigns(first)) == [f"j{i:05d}" for i in range(6)]
    assert h.tick().intents == []
    assert h.core.queued_count() == 10_000 - 6
    node_id, job_id, attempt = assigns(first)[0]
    assert h.core.job_outcome(node_id, job_id, attempt, h.now_s, result_blob=b"x").accepted
    assert len(assigns(h.tick())) == 1


def test_max_placements_per_tick_caps_a_tick() -> None:
    h = Harness(SchedulerPolicy(max_placements_per_tick=2))
    h.connect(make_node_info(slots_total=5))
    h.submit(*(make_record(f"j{i}") for i in range(5)))
    assert len(assigns(h.tick())) == 2
    assert len(assigns(h.tick())) == 2


def test_an_unplaceable_head_of_the_queue_does_not_block_others() -> None:
    # One free slot. The interactive job wants a model no node serves; the standard job behind
    # it fits. Waiting for the first must not starve the second.
    h = Harness()
    h.connect()
    h.submit(make_record("stuck", tier="interactive", model=GEN_MODEL), make_record("fits"))
    assert assigns(h.tick()) == [("n1", "fits", 1)]
    assert h.job("stuck").state is JobState.QUEUED


@pytest.mark.parametrize(("stuck", "placed"), [(6, True), (7, False)])
def test_the_lookahead_past_unplaceable_jobs_is_bounded(stuck: int, placed: bool) -> None:
    # One free slot, two lookahead rounds: the tick looks at 1 + 2 + 4 = 7 jobs. Behind 6 stuck
    # jobs the fitting one is the 7th and is placed; behind 7 it waits for a later tick. (Each
    # stuck job is of its own class: jobs of one class that found no node are passed over.)
    h = Harness(SchedulerPolicy(lookahead_rounds=2))
    h.connect()
    h.submit(*(make_record(f"stuck{i}", tier="interactive", model=GEN_MODEL, memory_mb=200 + i)
               for i in range(stuck)))
    h.submit(make_record("fits"))
    step = h.tick()
    assert assigns(step) == ([("n1", "fits", 1)] if placed else [])
    assert len(step.decisions) == 7
    assert h.core.queued_count() == stuck + (0 if placed else 1)


def test_a_deferred_flex_job_waits_until_its_window() -> None:
    # Power at 50 $/MWh now, 10 $/MWh from T0 + 3600 (see test_placement for the arithmetic).
    h = Harness()
    h.core.site_views = {
        "s1": make_site(opportunity_usd_per_mwh=50.0, outlook=[(T0_S + 3600, 10.0)])
    }
    h.connect()
    h.submit(make_record(tier="flex", deadline_s=T0_S + 6 * 3600))
    step = h.tick()
    assert step.intents == [] and h.job().not_before_s == T0_S + 3600
    assert h.tick(3599.0).intents == []
    # The window has begun (a window that already began is never waited for): place it.
    assert assigns(h.tick(1.0)) == [("n1", "j1", 1)]


def test_a_deferred_flex_job_is_deferred_only_once() -> None:
    # When its window comes, the rolling forecast shows yet another cheaper hour: the job runs
    # anyway, because chaining waits on a rolling forecast would push it to its deadline.
    h = Harness()
    h.core.site_views = {
        "s1": make_site(opportunity_usd_per_mwh=50.0, outlook=[(T0_S + 3600, 10.0)])
    }
    h.connect()
    h.submit(make_record(tier="flex", deadline_s=T0_S + 6 * 3600))
    h.tick()
    assert h.job().not_before_s == T0_S + 3600
    h.core.site_views = {
        "s1": make_site(opportunity_usd_per_mwh=50.0, outlook=[(T0_S + 7200, 5.0)])
    }
    assert assigns(h.tick(3600.0)) == [("n1", "j1", 1)]


@pytest.mark.parametrize("slots", [0, 1])
def test_queued_count(slots: int) -> None:
    h = Harness()
    h.connect(make_node_info(slots_total=slots))
    h.submit(make_record("a"), make_record("b"))
    h.tick()
    assert h.core.queued_count() == 2 - slots


def test_a_silent_agent_gets_no_new_work_until_it_is_heard_again() -> None:
    # Connected at T0, silent past silence_s = 5 s: the link may have stopped forwarding.
    h = Harness(SchedulerPolicy(silence_s=5.0))
    h.connect()
    h.tick(6.0)
    h.submit(make_record())
    assert assigns(h.tick()) == []
    h.core.heartbeat("n1", [], h.now_s)
    assert assigns(h.tick()) == [("n1", "j1", 1)]


def test_a_node_gone_past_the_policys_time_with_nothing_running_is_forgotten() -> None:
    from dataclasses import replace

    h = Harness(replace(POLICY, forget_node_after_s=3600.0))
    h.connect(make_node_info("n1", site="s1"))
    h.connect(make_node_info("n2", site="s1"))
    h.submit(make_record("j1"))
    (node_id, _, _), = assigns(h.tick())
    other = "n2" if node_id == "n1" else "n1"
    h.core.disconnect_node(node_id, h.now_s)  # gone with a job: kept until it is re-placed
    h.core.disconnect_node(other, h.now_s)  # gone with nothing
    h.tick(1800.0)
    assert set(h.core.nodes) == {"n1", "n2"}
    h.tick(1801.0)
    # Both gone over an hour; the busy one's job was re-placed after its grace, so both go.
    assert set(h.core.nodes) == set()
    assert sorted(h.core.forgotten_nodes) == ["n1", "n2"]
    assert len(h.core.placement_index()) == 0
    # A forgotten node that comes back is a new node, with nothing remembered against it.
    h.connect(make_node_info(other, site="s1"))
    assert other in h.core.nodes


def test_a_job_that_fits_is_found_behind_any_number_that_cannot() -> None:
    """The lookahead looks at most 127 jobs per free slot; jobs of a class no node takes are
    passed over without counting, so 500 of them do not hide the one that fits."""
    h = Harness()
    h.connect(make_node_info("n1", site="s1", region="north_america"))
    h.submit(*[make_record(f"far{i}", allowed_regions=("europe",)) for i in range(500)])
    h.submit(make_record("near", allowed_regions=("north_america",)))
    step = h.core.schedule(h.now_s)
    assert assigns(step) == [("n1", "near", 1)]
    # Every job passed over is still told why, as if it had been placed.
    unplaced = [d for d in step.decisions if not isinstance(d, Placement)]
    assert len(unplaced) == 500 and len({d.reasons for d in unplaced}) == 1  # type: ignore[union-attr]


def test_jobs_no_node_takes_are_not_placed_again_at_every_submit() -> None:
    h = Harness()
    h.connect(make_node_info("n1", site="s1", region="north_america"))
    h.submit(*[make_record(f"far{i}", allowed_regions=("europe",)) for i in range(50)])
    first = h.core.schedule(h.now_s)
    assert len(first.decisions) == 50 and not assigns(first)  # all looked at: none fits
    h.submit(make_record("near"))
    second = h.core.schedule(h.now_s)
    # Only the new job is looked at: the 50 wait for a node change.
    assert [d.job_id for d in second.decisions] == ["near"]
    assert assigns(second) == [("n1", "near", 1)]
    h.connect(make_node_info("n2", site="s2", region="europe"))  # a node that fits joins
    third = h.core.schedule(h.now_s)
    assert len(assigns(third)) >= 1 and all(a[0] == "n2" for a in assigns(third))
    waiting = {f"far{i}" for i in range(50)} - {a[1] for a in assigns(third)}
    assert waiting


def test_a_tick_looks_again_at_unplaceable_jobs_only_now_and_then() -> None:
    """A tick with no node changed leaves jobs no node took parked (nothing that decides it
    changed); every UNPLACED_RECHECK_S it looks at them all the same, and so does any node
    change."""
    from scheduler.core.scheduler import UNPLACED_RECHECK_S

    h = Harness()
    h.connect(make_node_info("n1", site="s1", region="north_america"))
    h.submit(*[make_record(f"far{i}", allowed_regions=("europe",)) for i in range(20)])
    assert len(h.tick(0.5).decisions) == 20
    far = {f"far{i}" for i in range(20)}
    assert not [d for d in h.tick(0.5).decisions if d.job_id in far]
    assert not [d for d in h.tick(UNPLACED_RECHECK_S / 2).decisions if d.job_id in far]
    again = h.tick(UNPLACED_RECHECK_S / 2)
    assert {d.job_id for d in again.decisions} == far and not assigns(again)
    h.connect(make_node_info("n3", site="s3", region="north_america"))  # a node changes
    assert {d.job_id for d in h.core.schedule(h.now_s).decisions} == far


def test_an_assignment_counts_its_prompt_as_held_until_a_heartbeat_says_otherwise() -> None:
    """The node an assignment goes to holds the job's prefix once the job starts: the core
    counts it at once, so the conversation's next turn finds it there before the agent's next
    heartbeat; a heartbeat then says what the engine really holds."""
    from dataclasses import replace

    from scheduler.core.prefix import BLOCK_CHARS, prefix_blocks

    h = Harness()
    h.connect(make_node_info("n1", models=(GEN_MODEL,), slots_total=2))
    chain = prefix_blocks("c" * BLOCK_CHARS * 6)
    rec = make_record("t1", tier="interactive", model=GEN_MODEL, input_tokens=500)
    h.submit(rec.evolve(spec=replace(rec.spec, prefix_blocks=chain)))
    assert assigns(h.core.schedule(h.now_s)) == [("n1", "t1", 1)]
    assert h.core.nodes["n1"].prefix_blocks == frozenset(chain)
    assert h.core.placement_index().sorted_views()[0].prefix_blocks == frozenset(chain)
    held = frozenset(chain[:2])
    h.core.heartbeat("n1", [("t1", 1)], h.now_s, prefix_blocks=held, prefill_tokens_per_s=150.0)
    view = h.core.placement_index().sorted_views()[0]
    assert (view.prefix_blocks, view.prefill_tokens_per_s) == (held, 150.0)
