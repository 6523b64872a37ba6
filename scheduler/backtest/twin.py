"""The live scheduler's twin: the same core, on a virtual clock, with modelled agents.

The live scheduler runs `SchedulerCore` (job states, placement, deferral, preemption) and the
core's `PowerTick` (ledger, plan, may-serve, shedding) from its control loop, on the wall clock,
with agents over gRPC. `run_twin` runs exactly those two, with the same settings, from an event
loop on a `ManualClock`: nothing here decides anything. What the agents would do is modelled:
- an agent takes an assignment at once and runs its jobs one at a time (a llama.cpp context holds
  one sequence), each for `tokens_used / tokens_per_s` seconds;
- it reports the tokens the job used (the workload's figure), and heartbeats every
  `heartbeat_s` with the jobs it holds;
- a cancel (a preemption, a customer's cancel) stops the job; its report never comes.

The market is the same replay of the shipped files on the same compressed clock, the ops state
the same overrides and demand-response windows. So the ledger it books is the one the live
scheduler books for the same workload (`bench/twin.py` runs both and compares them).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Protocol, cast

from scheduler.core.accounting import HOUR_S, Accounting
from scheduler.core.clock import ManualClock
from scheduler.core.fleet import Fleet
from scheduler.core.jobs import JobRecord, JobSpecData
from scheduler.core.market import MarketSnapshot
from scheduler.core.placement import ScoringProfile
from scheduler.core.planner import PlannerConfig, SiteOverride
from scheduler.core.power_step import PRICE_HISTORY_HOURS, PriceHistory
from scheduler.core.power_tick import PowerTick
from scheduler.core.scheduler import (
    Assign,
    CancelOnNode,
    NodeInfo,
    SchedulerCore,
    SchedulerPolicy,
    Step,
)
from scheduler.settings import SchedulerSettings


@dataclass(frozen=True)
class TwinNode:
    info: NodeInfo
    tokens_per_s: float  # prompt and completion tokens per second of scheduler time


@dataclass(frozen=True)
class TwinJob:
    """One request: when it arrives (seconds after the run's start), what admission made of it,
    and the tokens it will use when it runs."""

    job_id: str
    submit_after_s: float
    spec: JobSpecData  # its deadline_s counted from the submission (admission's default)
    tokens_used: int
    tenant: str = "twin"


@dataclass(frozen=True)
class TwinSettings:
    """What the live scheduler decides with, from its own `SchedulerSettings` (`from_settings`),
    so that the twin cannot drift from it; and how often the modelled agents heartbeat."""

    plan_interval_s: float
    tick_s: float
    ai_value_floor_usd_per_mwh: float
    dr_window_lead_s: float
    policy: SchedulerPolicy
    profile: ScoringProfile
    planner: PlannerConfig
    heartbeat_s: float = 1.0  # the agents' (node_agent's) heartbeat

    @classmethod
    def from_settings(cls, settings: SchedulerSettings, heartbeat_s: float = 1.0) -> TwinSettings:
        return cls(
            plan_interval_s=settings.plan_interval_s,
            tick_s=settings.tick_s,
            ai_value_floor_usd_per_mwh=settings.ai_value_floor_usd_per_mwh,
            dr_window_lead_s=settings.dr_window_lead_s,
            policy=settings.scheduler_policy(),
            profile=settings.scoring_profile(),
            planner=settings.planner_config(),
            heartbeat_s=heartbeat_s,
        )


class MarketFeed(Protocol):
    """The live scheduler's market feed (`scheduler.feeds`), on the twin's clock."""

    def snapshot(self, now_s: float) -> MarketSnapshot: ...


class MarketReplay(Protocol):
    """The replay behind it: scheduler time <-> market time, and the price history."""

    def history_time(self, now_s: float) -> float: ...

    def scheduler_time(self, history_s: float) -> float: ...

    def price_history(
        self, now_s: float, zones: Iterable[str], fx_usd_per_unit: Mapping[str, float],
        past_hours: int,
    ) -> dict[str, PriceHistory]: ...


@dataclass
class TwinResult:
    accounting: Accounting
    jobs: dict[str, JobRecord]  # every job's last record
    preempted: int  # attempts taken off a node by a curtailment
    preempted_by_cause: dict[str, int]  # the same, by ShedOrder.cause
    power_ticks: int
    end_s: float


class _Event(IntEnum):
    # At one instant: reports first (as a live agent's messages are read before the next tick),
    # then arrivals, then ticks.
    FINISH = 0
    HEARTBEAT = 1
    ARRIVE = 2
    POWER = 3
    TICK = 4


@dataclass
class _NodeModel:
    node: TwinNode
    queue: list[tuple[str, int]] = field(default_factory=list)  # held attempts, in order
    running: tuple[str, int] | None = None


def run_twin(
    fleet: Fleet,
    feed: MarketFeed,
    replay: MarketReplay,
    nodes: Sequence[TwinNode],
    jobs: Sequence[TwinJob],
    start_s: float,
    duration_s: float,
    settings: TwinSettings | None = None,
    overrides: Mapping[str, SiteOverride] | None = None,
) -> TwinResult:
    """Run the core from `start_s` (scheduler time) for `duration_s`; the ledger and the jobs.
    Without `settings`, those of a default `SchedulerSettings`."""
    if settings is None:
        settings = TwinSettings.from_settings(SchedulerSettings.model_validate({}))
    clock = ManualClock(start_s)
    core = SchedulerCore(settings.policy, settings.profile)
    ticker = PowerTick(
        fleet, settings.planner, settings.ai_value_floor_usd_per_mwh, settings.dr_window_lead_s
    )
    ops = dict(overrides or {})
    zones = {s.price_zone for s in fleet.sites if s.price_zone}

    def history(now_s: float) -> Mapping[str, PriceHistory]:
        return replay.price_history(now_s, zones, fleet.fx_usd_per_unit, PRICE_HISTORY_HOURS)

    end_s = start_s + duration_s
    models = {n.info.node_id: _NodeModel(n) for n in nodes}
    tokens = {j.job_id: j.tokens_used for j in jobs}
    finished: dict[str, JobRecord] = {}
    preempted = 0
    by_cause: dict[str, int] = {}
    power_ticks = 0
    heap: list[tuple[float, int, int, object]] = []
    seq = itertools.count()

    def push(t_s: float, kind: _Event, payload: object = None) -> None:
        heapq.heappush(heap, (t_s, int(kind), next(seq), payload))

    def apply(step: Step, now_s: float) -> None:
        nonlocal preempted
        ticker.observe(step.changed)
        for rec in step.changed:
            if rec.terminal:
                finished[rec.job_id] = rec
        for m in step.moves:
            if m.shed_cause:
                preempted += 1
                by_cause[m.shed_cause] = by_cause.get(m.shed_cause, 0) + 1
        for intent in step.intents:
            model = models.get(intent.node_id)
            if model is None:
                continue
            if isinstance(intent, Assign):
                key = (intent.job_id, intent.attempt)
                model.queue.append(key)
                apply(core.job_started(intent.node_id, intent.job_id, intent.attempt, now_s), now_s)
            elif isinstance(intent, CancelOnNode):
                key = (intent.job_id, intent.attempt)
                if key in model.queue:
                    model.queue.remove(key)
                if model.running == key:
                    model.running = None  # its FINISH event finds it gone
            start_next(model, now_s)

    def start_next(model: _NodeModel, now_s: float) -> None:
        if model.running is not None or not model.queue:
            return
        key = model.queue.pop(0)
        model.running = key
        run_s = tokens.get(key[0], 0) / max(model.node.tokens_per_s, 1e-9)
        push(now_s + run_s, _Event.FINISH, (model.node.info.node_id, key, run_s))

    for n in nodes:
        core.connect_node(n.info, (), start_s)
        push(start_s + settings.heartbeat_s, _Event.HEARTBEAT, n.info.node_id)
    for job in jobs:
        push(start_s + job.submit_after_s, _Event.ARRIVE, job)
    push(start_s, _Event.POWER)
    push(start_s + settings.tick_s, _Event.TICK)

    while heap:
        t_s, kind, _, payload = heapq.heappop(heap)
        if t_s > end_s:
            break
        clock.set(t_s)
        if kind == _Event.FINISH:
            node_id, key, run_s = cast(tuple[str, tuple[str, int], float], payload)
            model = models[node_id]
            if model.running != key:
                continue  # cancelled while it ran
            model.running = None
            verdict = core.job_outcome(
                node_id, key[0], key[1], t_s, run_ms=run_s * 1000.0, tokens=tokens[key[0]]
            )
            apply(verdict.step, t_s)
            start_next(model, t_s)
            apply(core.schedule(t_s), t_s)
        elif kind == _Event.HEARTBEAT:
            model = models[cast(str, payload)]
            held = list(model.queue) + ([model.running] if model.running else [])
            apply(core.heartbeat(model.node.info.node_id, held, t_s), t_s)
            push(t_s + settings.heartbeat_s, _Event.HEARTBEAT, payload)
        elif kind == _Event.ARRIVE:
            arriving = cast(TwinJob, payload)
            spec = replace(arriving.spec, deadline_s=t_s + arriving.spec.deadline_s)
            record = JobRecord(
                job_id=arriving.job_id, tenant=arriving.tenant, spec=spec, spec_blob=b"",
                submitted_s=t_s,
            )
            apply(core.submit(record), t_s)
            apply(core.schedule(t_s), t_s)
        elif kind == _Event.POWER:
            result = ticker.run(
                core, feed.snapshot(t_s), ops, t_s, replay.history_time(t_s), history(t_s)
            )
            power_ticks += 1
            apply(result.shed, t_s)
            apply(core.schedule(t_s), t_s)
            push(_next_power_s(replay, t_s, settings.plan_interval_s), _Event.POWER)
        elif kind == _Event.TICK:
            apply(core.tick(t_s), t_s)
            push(t_s + settings.tick_s, _Event.TICK)
    # The last interval, booked as the live scheduler books it at its next tick.
    clock.set(end_s)
    ticker.run(core, feed.snapshot(end_s), ops, end_s, replay.history_time(end_s), history(end_s))
    for rec in core.jobs.values():
        finished.setdefault(rec.job_id, rec)
    return TwinResult(ticker.accounting, finished, preempted, by_cause, power_ticks + 1, end_s)


def _next_power_s(replay: MarketReplay, now_s: float, interval_s: float) -> float:
    """The next plan interval, or the next market hour if it comes first (as the live edge)."""
    history_s = replay.history_time(now_s)
    next_hour_s = replay.scheduler_time((history_s // HOUR_S + 1) * HOUR_S)
    return min(now_s + interval_s, next_hour_s + 1e-6)


__all__ = ["TwinJob", "TwinNode", "TwinResult", "TwinSettings", "run_twin"]
