"""The live power edge, tick by tick, against a fake agent link.

The control loop and the power controller are the live ones, on a `ManualClock`, with an
in-memory journal and the shipped market replayed; an agent is a session whose outbox the test
reads (the messages the api would put on its gRPC stream) and whose reports the test makes up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace

import pytest

from hashserve.v1 import agent_pb2, jobs_pb2
from scheduler.control.agent_events import AgentHello, JobOutcomeReport, JobStartedReport
from scheduler.control.loop import AgentSession, ControlLoop
from scheduler.control.power import PowerController
from scheduler.core.clock import ManualClock
from scheduler.core.fleet import Fleet
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.market import DEFAULT_MARKET_LIMITS
from scheduler.core.models import DEFAULT_CATALOGUE
from scheduler.core.planner import PlannerConfig
from scheduler.feeds.layered import LayeredFeed
from scheduler.feeds.replay import ReplayFeed
from scheduler.fleet import default_fleet_path, load_fleet
from scheduler.journal.sqlite import SqliteJournal
from tests.unit.scheduler.core.builders import make_node_info, make_record

SECONDS_PER_HOUR = 10.0
SPEEDUP = 3600.0 / SECONDS_PER_HOUR
T0_S = 1_000_000_000.0
START_S = 1691452800.0  # 2023-08-08T00:00:00Z
GEN = "smollm2-135m-instruct"
SITE = "de-leipzig"


class Edge:
    def __init__(self) -> None:
        self.clock = ManualClock(T0_S)
        self.fleet: Fleet = load_fleet(default_fleet_path()).subset([SITE])
        self.journal = SqliteJournal(":memory:")
        self.loop = ControlLoop(self.journal, DEFAULT_CATALOGUE, ["europe"], self.clock)
        limits = DEFAULT_MARKET_LIMITS.scaled(SPEEDUP)
        zones = sorted(self.fleet.price_zones)
        fx = dict(self.fleet.fx_usd_per_unit)
        self.replay = ReplayFeed(start=START_S, speedup=SPEEDUP, origin_s=T0_S, zones=zones,
                                 fx_usd_per_unit=fx, limits=limits)
        feed = LayeredFeed.standard(zones, None, None, self.replay, fx, limits)
        self.power = PowerController(
            self.loop, self.fleet, feed, self.clock, PlannerConfig(clock_speedup=SPEEDUP),
            replay=self.replay, window_lead_s=1.0,
        )
        self.loop.observers.append(self.power)

    def connect(self, node_id: str = "n1") -> AgentSession:
        info = make_node_info(node_id, SITE, "europe", models=(GEN,), memory_mb=16_384,
                              slots_total=2)
        return self.loop.open_session(AgentHello(info, ()))

    def at(self, seconds: float) -> float:
        self.clock.set(T0_S + seconds)
        return self.clock.now_s()


def generation(job_id: str, at_s: float, value_usd: float = 1e-4) -> JobRecord:
    """A queued generation as admission makes it: 20 prompt tokens, up to 80 more."""
    record = make_record(job_id, model=GEN, input_tokens=20, output_tokens_est=80,
                         submitted_s=at_s)
    blob = jobs_pb2.JobSpec(
        model=GEN, generate=jobs_pb2.GenerateInput(prompt="hello", max_tokens=80)
    ).SerializeToString()
    return record.evolve(spec=replace(record.spec, value_usd=value_usd), spec_blob=blob)


def sent(session: AgentSession) -> list[agent_pb2.SchedulerMessage]:
    out = []
    while not session.outbox.empty():
        msg = session.outbox.get_nowait()
        assert isinstance(msg, agent_pb2.SchedulerMessage)
        out.append(msg)
    return out


def kinds(messages: list[agent_pb2.SchedulerMessage]) -> list[str]:
    return [str(m.WhichOneof("msg")) for m in messages]


@pytest.fixture()
def edge() -> Iterator[Edge]:
    e = Edge()
    yield e
    e.journal.close()


def test_a_mode_goes_to_an_agent_once_and_again_only_on_a_change(edge: Edge) -> None:
    session = edge.connect()
    assert kinds(sent(session)) == ["welcome"]
    edge.power.tick(edge.at(0.0))
    first = [m for m in sent(session) if m.HasField("power_mode")]
    assert len(first) == 1 and first[0].power_mode.mining_mw > 0
    edge.power.tick(edge.at(2.0))  # the same hour, the same split
    assert kinds(sent(session)) == []
    # An ops force-curtail changes the split: the agent hears it at once.
    edge.power.set_override(SITE, "curtail", None)
    modes = [m.power_mode for m in sent(session) if m.HasField("power_mode")]
    assert len(modes) == 1 and modes[0].mining_mw == 0.0 and modes[0].curtailed_mw > 0


def test_each_tick_books_the_interval_before_it_in_market_time(edge: Edge) -> None:
    edge.connect()
    edge.power.tick(edge.at(0.0))
    assert edge.power.accounting.rows() == []  # nothing in force before the first plan
    edge.power.tick(edge.at(2.0))
    (row,) = edge.power.accounting.rows()
    assert row.hour_start_s == START_S
    assert row.covered_s == pytest.approx(2.0 * SPEEDUP)
    plan = edge.power.plan
    assert plan is not None
    assert row.mining_mwh == pytest.approx(plan.sites[SITE].mining_mw * 2.0 * SPEEDUP / 3600.0)
    # The journal has the same row (the accounting API reads it).
    (stored,) = edge.journal.accounting_rows()
    assert stored.mining_mwh == pytest.approx(row.mining_mwh)


def test_an_answered_job_earns_its_site_the_tokens_it_used(edge: Edge) -> None:
    session = edge.connect()
    edge.power.tick(edge.at(0.0))
    edge.loop.submit([generation("job-a", edge.at(0.5))])
    edge.loop.apply(edge.loop.core.schedule(edge.at(0.5)))
    (assignment,) = [m.assign for m in sent(session) if m.HasField("assign")]
    attempt = assignment.ref.attempt
    edge.loop.on_agent_message(session, JobStartedReport("job-a", attempt))
    edge.loop.on_agent_message(
        session, JobOutcomeReport("job-a", attempt, b"", "", 100.0, 0.0, tokens=50)
    )
    edge.power.tick(edge.at(2.0))
    total = edge.power.accounting.totals()
    assert total.ai_revenue_usd == pytest.approx(1e-4 * 50 / 100)


def test_a_window_that_starts_sheds_the_running_job_and_cancels_it_on_the_agent(
    edge: Edge,
) -> None:
    session = edge.connect()
    edge.power.tick(edge.at(0.0))
    edge.loop.submit([generation("job-b", edge.at(0.5))])
    edge.loop.apply(edge.loop.core.schedule(edge.at(0.5)))
    (assignment,) = [m.assign for m in sent(session) if m.HasField("assign")]
    edge.loop.on_agent_message(session, JobStartedReport("job-b", assignment.ref.attempt))
    edge.power.schedule_curtailment(SITE, edge.at(3.0), edge.at(30.0), "grid event", 0.0)
    assert edge.loop.core.jobs["job-b"].state is JobState.RUNNING  # not yet: it starts at 3 s
    sent(session)
    edge.power.tick(edge.at(3.0))
    messages = sent(session)
    cancels = [m.cancel for m in messages if m.HasField("cancel")]
    assert [c.ref.job_id for c in cancels] == ["job-b"]
    job = edge.loop.core.jobs["job-b"]
    assert job.state is JobState.QUEUED  # no other site here: it waits for one
    modes = [m.power_mode for m in messages if m.HasField("power_mode")]
    assert modes and modes[-1].mining_mw == 0.0 and modes[-1].ai_mw == 0.0


def test_past_the_end_of_history_a_looping_replay_still_prices_every_site() -> None:
    from prometheus_client import CollectorRegistry

    from scheduler.metrics.registry import SchedulerMetrics

    # The shipped prices end with 2024; start 30 market hours before that, loop, and tick a day
    # past the end: the plan has prices (no fallback), the ledger books 2025's hours, and the
    # metrics say the replay looped once.
    edge = Edge()
    start_s = dt.datetime(2024, 12, 30, 18, tzinfo=dt.UTC).timestamp()
    replay = ReplayFeed(start=start_s, speedup=SPEEDUP, origin_s=T0_S,
                        zones=sorted(edge.fleet.price_zones),
                        fx_usd_per_unit=dict(edge.fleet.fx_usd_per_unit),
                        limits=DEFAULT_MARKET_LIMITS.scaled(SPEEDUP), loop=True)
    feed = LayeredFeed.standard(sorted(edge.fleet.price_zones), None, None, replay,
                                dict(edge.fleet.fx_usd_per_unit),
                                DEFAULT_MARKET_LIMITS.scaled(SPEEDUP))
    power = PowerController(edge.loop, edge.fleet, feed, edge.clock,
                            PlannerConfig(clock_speedup=SPEEDUP), replay=replay)
    power.metrics = SchedulerMetrics(registry=CollectorRegistry())
    for hour in range(0, 60, 6):
        power.tick(edge.at(hour * SECONDS_PER_HOUR + 1.0))
        plan = power.plan
        assert plan is not None and not plan.sites[SITE].fallback, hour
    assert replay.loops(edge.clock.now_s()) == 1
    registry = power.metrics.registry
    assert registry.get_sample_value("hashserve_market_replay_looping") == 1.0
    assert registry.get_sample_value("hashserve_market_replay_loops") == 1.0
    booked = [row.hour_start_s for row in power.ticker.accounting.rows()]
    assert max(booked) >= dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC).timestamp()
    edge.journal.close()
