"""The scheduler's pure core: jobs, nodes, leases and the queue, driven by events and ticks.

Every method takes `now_s` and returns a `Step`: the job records that changed (to journal) and the
intents for the edges to carry out (assignments and cancels to send). The edge journals the
changes first and only then acts, so a crash between the two repeats an action rather than losing
one; attempts and fencing make the repeat harmless.

What it decides: which queued job goes where (through `placement.place`), when a lease is lost,
when a result is accepted. What it leaves to others: validation of requests, authentication,
persistence, sending, the power plan (it is told which sites may serve).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from scheduler.core.capacity import (
    CapacityPlan,
    CapacityPolicy,
    LoadOnNode,
    ModelDemand,
    ModelTargets,
    NodeModels,
    UnloadOnNode,
    plan_capacity,
)
from scheduler.core.estimates import NodeEstimates
from scheduler.core.job_states import JobEvent, JobState, can, transition
from scheduler.core.jobs import JobRecord
from scheduler.core.models import DEFAULT_CATALOGUE, ModelSpec, Tier
from scheduler.core.placement import (
    DEFAULT_PROFILE,
    Decision,
    Deferral,
    Hold,
    NodeIndex,
    NodeView,
    Placement,
    ScoringProfile,
    SiteView,
    Unplaceable,
    place,
)
from scheduler.core.placement.filters import FitKey, fit_key
from scheduler.core.placement.rules import TIER_RANK, order_key
from scheduler.core.placement.scores import KW_PER_MW

AttemptKey = tuple[str, int]
# model -> the regions its jobs allow (empty: any) -> how many jobs
JobCounts = dict[str, dict[frozenset[str], int]]
_LEASED = (JobState.ASSIGNED, JobState.RUNNING)
_SHED_EPS_MW = 1e-9
# Unplaceable jobs are looked at again when a node changes; this often besides, in case
# something else made room (a safety net: nothing known needs it).
UNPLACED_RECHECK_S = 10.0


def _fit_key(rec: JobRecord) -> FitKey:
    """The job as the filters see it; a record's accelerator kinds are its model's (the
    catalogue's, filled in by `place`), so the empty set stands for them."""
    return fit_key(rec.spec.model, rec.spec.allowed_regions, rec.spec.memory_mb)


@dataclass(frozen=True)
class SchedulerPolicy:
    lease_s: float = 15.0  # an assignment not confirmed in this long is placed again
    disconnect_grace_s: float = 10.0  # a silent or gone agent keeps its jobs this long
    recovery_grace_s: float = 20.0  # after a scheduler restart, agents have this long to re-adopt
    max_attempts: int = 5
    max_placements_per_tick: int = 4096
    # Past jobs that cannot use the free slots, look this many rounds further down the queue,
    # twice as far each round (6: up to 127 jobs per free slot), then wait for the next tick.
    lookahead_rounds: int = 6
    # A connected agent not heard from for this long gets no new work (a link that stopped
    # forwarding but was not closed); None: never judged by silence (tests that step time in
    # hours). Its running work is re-placed when its leases run out.
    silence_s: float | None = None
    # A node gone this long with nothing running is forgotten (its learned rates with it): an
    # agent renamed or retired would otherwise stay in every node list and metric for good.
    forget_node_after_s: float = 24 * 3600.0
    # Which nodes keep which model loaded (scheduler/core/capacity.py).
    capacity: CapacityPolicy = field(default_factory=CapacityPolicy)


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    site: str
    region: str
    gpu_kind: str
    models: frozenset[str]
    memory_mb: int
    slots_total: int
    idle_power_kw: float = 0.3
    busy_power_kw: float = 0.7
    # Models whose backend here can continue a generation moved from another node.
    resumable_models: frozenset[str] = frozenset()
    # Models it can load on command (or for a job sent to it) but did not hold at hello.
    loadable_models: frozenset[str] = frozenset()

    @property
    def servable_models(self) -> frozenset[str]:
        return self.models | self.loadable_models


@dataclass(frozen=True)
class ModelsReport:
    """What a heartbeat says of the node's engines."""

    loaded: frozenset[str]
    loading: frozenset[str] = frozenset()
    failures: Mapping[str, str] = field(default_factory=dict)  # model -> why its load failed
    load_s: Mapping[str, float] = field(default_factory=dict)  # model -> its last load, s


@dataclass
class NodeState:
    """A node as the core tracks it. Changed only by SchedulerCore's methods, which tell the
    placement index which nodes changed (a change made from outside would not be seen by it)."""

    info: NodeInfo
    connected: bool = True
    draining: bool = False  # set by ops; survives reconnects
    agent_draining: bool = False  # the agent is shutting down; cleared when it says hello again
    silent: bool = False  # connected, but not heard from for longer than the policy's silence_s
    last_seen_s: float = 0.0
    disconnected_s: float = 0.0
    running: set[AttemptKey] = field(default_factory=set)
    power_draw_kw: float = 0.0
    gpu_utilization: float = 0.0
    estimates: NodeEstimates = field(default_factory=NodeEstimates)
    # Models placement counts as warm here: held by its engines, or sent jobs of.
    warm_models: set[str] = field(default_factory=set)
    loaded_models: frozenset[str] = frozenset()  # as its last hello or heartbeat said
    loading_models: frozenset[str] = frozenset()
    # Models whose load it refused or failed, until when they are not sent there (placement
    # and capacity both skip them); and the failures its last heartbeat reported.
    load_refused_until_s: dict[str, float] = field(default_factory=dict)
    load_failures: frozenset[str] = frozenset()
    load_s: dict[str, float] = field(default_factory=dict)  # measured cold starts, per model
    prefix_blocks: frozenset[int] = frozenset()  # what its engines hold of prompts
    prefill_tokens_per_s: float = 0.0  # as its agent measured it; 0: not known


@dataclass(frozen=True)
class Assign:
    node_id: str
    job_id: str
    attempt: int
    lease_expires_s: float
    placement: Placement


@dataclass(frozen=True)
class CancelOnNode:
    node_id: str
    job_id: str
    attempt: int
    reason: str


Intent = Assign | CancelOnNode | LoadOnNode | UnloadOnNode


class RetryReason(str, Enum):
    """Why a job left the node it was on and went back to the queue."""

    AGENT_LOST = "agent_lost"  # gone (or silent) for longer than the grace period
    LEASE_EXPIRED = "lease_expired"  # no word of it within its lease
    AGENT_RESTARTED = "agent_restarted"  # the agent came back without it
    AGENT_DROPPED = "agent_dropped"  # the agent stopped listing it
    AGENT_ERROR = "agent_error"  # the agent reported an error; another node may succeed
    PREEMPTED = "preempted"  # its site had to shed AI power (curtailment, ops, grid)


@dataclass(frozen=True)
class Moved:
    """A job taken off a node and queued again: the edges count it and tell its watchers."""

    job_id: str
    attempt: int  # the attempt taken away
    node_id: str
    site: str
    reason: RetryReason
    detail: str
    shed_cause: str = ""  # for a preemption: why its site shed (ShedOrder.cause)


@dataclass(frozen=True)
class ShedOrder:
    """A site must bring its running AI work down to `ai_target_mw` of busy GPU power."""

    site: str
    ai_target_mw: float
    cause: str  # why, for the counter and the log: "price", "ops_curtail", "dr_window", ...


@dataclass(frozen=True)
class RunningWork:
    """One running attempt as shedding sees it: what it draws and what it is worth."""

    job_id: str
    attempt: int
    node_id: str
    busy_mw: float
    value_usd: float
    tier_rank: int  # 0 interactive, 1 standard, 2 flex: at equal value flex goes first
    started_s: float


def _job_mw(node: NodeState) -> float:
    """One job's share of its node's busy power, in MW (what the planner counts for it)."""
    return node.info.busy_power_kw / max(node.info.slots_total, 1) / KW_PER_MW


def choose_preemptions(running: Sequence[RunningWork], target_mw: float) -> list[RunningWork]:
    """The least valuable work to stop so the rest draws at most `target_mw`: lowest value first,
    then the least urgent tier, then the most recently started (it has done the least); only as
    many as the target needs."""
    total_mw = sum(w.busy_mw for w in running)
    chosen: list[RunningWork] = []
    for work in sorted(running, key=lambda w: (w.value_usd, -w.tier_rank, -w.started_s)):
        if total_mw <= target_mw + _SHED_EPS_MW:
            break
        chosen.append(work)
        total_mw -= work.busy_mw
    return chosen


@dataclass
class Step:
    changed: list[JobRecord] = field(default_factory=list)
    intents: list[Intent] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    # Results accepted in this step, as (job id, node id, attempt): each job gets at most one.
    answers: list[tuple[str, str, int]] = field(default_factory=list)
    # Changes that recovery does not need (assigned -> running: both are re-leased after a
    # restart); watchers hear of them, the journal gets them with the job's next write.
    unjournaled: list[JobRecord] = field(default_factory=list)
    moves: list[Moved] = field(default_factory=list)
    # The tick's capacity plan (what each model's targets need, against what nodes hold), for
    # metrics; None in steps that did not plan.
    capacity: CapacityPlan | None = None

    def extend(self, other: Step) -> Step:
        self.changed.extend(other.changed)
        self.intents.extend(other.intents)
        self.decisions.extend(other.decisions)
        self.answers.extend(other.answers)
        self.unjournaled.extend(other.unjournaled)
        self.moves.extend(other.moves)
        if other.capacity is not None:
            self.capacity = other.capacity
        return self


@dataclass(frozen=True)
class OutcomeVerdict:
    accepted: bool
    reason: str
    step: Step


class SchedulerCore:
    def __init__(
        self,
        policy: SchedulerPolicy | None = None,
        profile: ScoringProfile = DEFAULT_PROFILE,
        catalogue: Mapping[str, ModelSpec] = DEFAULT_CATALOGUE,
    ) -> None:
        self.policy = policy or SchedulerPolicy()
        self.profile = profile
        # What placement reads of a model: its tiers' latency targets and the accelerator kinds
        # that may run it.
        self.catalogue = catalogue
        # Non-terminal jobs only; the journal keeps the rest. Written by `_store` and `_drop` only.
        self.jobs: dict[str, JobRecord] = {}
        self.nodes: dict[str, NodeState] = {}
        self.site_views: dict[str, SiteView] = {}
        self._serving_sites: set[str] | None = None  # None: every site may serve
        self._queue: list[tuple[tuple[int, float, float, str], str]] = []
        self._in_queue: set[str] = set()  # one heap entry per job at most
        # When jobs may time out, so a tick looks at those jobs only, not at every job: each job's
        # place in `jobs` (a tick handles them in that order), its deadline, and the lease of
        # assigned and running jobs. Entries go stale (a lease renewed, a job finished) and are
        # checked against the job when they come due.
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        self._deadlines: list[tuple[float, int, str]] = []
        self._leases: list[tuple[float, int, str]] = []
        # The nodes as placement reads them, kept up to date row by row: a tick costs what
        # changed since the last one, not the whole fleet (see placement/index.py).
        self._index = NodeIndex()
        self._changed_nodes: set[str] = set()
        self._nodes_at_site: dict[str, set[str]] = {}
        # Nodes `tick` forgot (gone past `forget_node_after_s`), for the edges to drop too.
        self.forgotten_nodes: list[str] = []
        # Jobs no node would take at the last look. They are looked at again when a node
        # changes (a slot frees, one joins, a site opens), which is what can change that
        # answer, and every `UNPLACED_RECHECK_S` besides; not at every submit or tick: a deep
        # queue of jobs waiting for a region with no room would otherwise be placed again, and
        # refused again, thousands at a time.
        self._parked: list[JobRecord] = []
        self._parked_checked_s = 0.0
        # Jobs waiting for the busy node that holds their prefix: back at the next node change
        # or tick, since how long they have waited bounds the wait.
        self._held: list[JobRecord] = []
        # Nodes ops drained, including ones not connected now: a node drained before a
        # scheduler restart is drained again when it says hello.
        self.drained: set[str] = set()
        # Models ops loaded on a node (node -> models), kept loaded until ops unload them; as
        # `drained`, they outlive the node's reconnects and a scheduler's restart.
        self.pinned: dict[str, set[str]] = {}
        # The busy AI power (MW) each site's plan switched on (`serving_mw`): placement at a
        # site stops before the next job would pass it. A site without an entry has no budget.
        self._site_budget_mw: dict[str, float] = {}
        self._full_sites: set[str] = set()  # sites whose budget the current placements used up
        # Why each queued job was last found unplaceable (the placer's reasons), until it is
        # placed or ends: a job that expires waiting says why no node would take it (a model
        # limited to accelerator kinds no serving node has, say). In memory only.
        self._unplaced_why: dict[str, tuple[str, ...]] = {}
        # Capacity planning's view of each model's demand, and its memory between ticks.
        self.demand: dict[str, ModelDemand] = {}
        # Queued, and assigned or running, jobs by model and allowed regions: kept by
        # `_store` and `_drop`, the only writers of `jobs`, so a tick reads them at the cost of
        # the models, not of walking every job.
        self._queued_jobs: JobCounts = {}
        self._leased_jobs: JobCounts = {}
        self._queued_by_tier: dict[Tier, int] = dict.fromkeys(Tier, 0)
        self._surplus_since_s: dict[str, float] = {}
        self.capacity_plan = CapacityPlan()  # the last tick's, for metrics and the admin API

    @property
    def serving_sites(self) -> frozenset[str] | None:
        """Sites whose plan lets AI run now (None: every site). Assign a new set to change it:
        the nodes of the sites that changed are marked for the placement index."""
        return None if self._serving_sites is None else frozenset(self._serving_sites)

    @serving_sites.setter
    def serving_sites(self, sites: Iterable[str] | None) -> None:
        new = None if sites is None else set(sites)
        old = self._serving_sites
        self._serving_sites = new
        for site, node_ids in self._nodes_at_site.items():
            if (old is None or site in old) != (new is None or site in new):
                self._changed_nodes.update(node_ids)

    @property
    def site_budget_mw(self) -> Mapping[str, float]:
        return self._site_budget_mw

    @site_budget_mw.setter
    def site_budget_mw(self, budgets: Mapping[str, float]) -> None:
        self._site_budget_mw = dict(budgets)
        for site in self._full_sites:
            self._changed_nodes.update(self._nodes_at_site.get(site, ()))
        self._full_sites.clear()

    def site_busy_mw(self, site: str) -> float:
        """Busy AI power running at a site, as the planner counts it (each job its share of its
        node's busy power)."""
        total = 0.0
        for node_id in self._nodes_at_site.get(site, ()):
            node = self.nodes.get(node_id)
            if node is not None and node.connected:
                total += _job_mw(node) * len(node.running)
        return total

    def _close_full_site(self, site: str) -> None:
        self._full_sites.add(site)
        self._changed_nodes.update(self._nodes_at_site.get(site, ()))

    # ----- jobs -----------------------------------------------------------------------------

    def restore(self, records: Iterable[JobRecord], now_s: float) -> None:
        """Load non-terminal jobs from the journal after a restart."""
        for rec in records:
            if rec.terminal:
                continue
            if rec.state in (JobState.ASSIGNED, JobState.RUNNING):
                # Its agent may still be running it: give it time to reconnect and re-adopt.
                rec = rec.evolve(lease_expires_s=now_s + self.policy.recovery_grace_s)
            self._store(rec)
            if rec.state is JobState.QUEUED:
                self._push(rec)

    def submit(self, record: JobRecord) -> Step:
        self.demand.setdefault(record.spec.model, ModelDemand()).arrive(
            record.submitted_s, self.policy.capacity.rate_window_s,
            regions=record.spec.allowed_regions)
        self._store(record)
        self._push(record)
        return Step(changed=[record])

    def cancel(self, job_id: str, now_s: float) -> Step:
        rec = self.jobs.get(job_id)
        if rec is None or not can(rec.state, JobEvent.CANCEL):
            return Step()
        step = Step()
        self._finish(rec, JobEvent.CANCEL, now_s, step, error="cancelled by the customer")
        return step

    def queued_count(self) -> int:
        return sum(sum(by_regions.values()) for by_regions in self._queued_jobs.values())

    @property
    def queued_jobs(self) -> Mapping[str, Mapping[frozenset[str], int]]:
        """Queued jobs: model -> allowed regions (empty: any) -> how many."""
        return self._queued_jobs

    @property
    def queued_by_tier(self) -> Mapping[Tier, int]:
        """Queued jobs by tier (every tier, zero included)."""
        return self._queued_by_tier

    @property
    def leased_jobs(self) -> Mapping[str, Mapping[frozenset[str], int]]:
        """Assigned and running jobs: model -> allowed regions (empty: any) -> how many."""
        return self._leased_jobs

    # ----- nodes ----------------------------------------------------------------------------

    def connect_node(
        self, info: NodeInfo, running: Iterable[AttemptKey], now_s: float
    ) -> Step:
        """An agent said hello. Re-adopt the attempts it still runs that are still its own."""
        old = self.nodes.get(info.node_id)
        node = NodeState(info=info, last_seen_s=now_s, draining=info.node_id in self.drained,
                         warm_models=set(info.models), loaded_models=info.models)
        if old is not None:
            node.estimates = old.estimates
            node.load_s = old.load_s
            self._nodes_at_site.get(old.info.site, set()).discard(info.node_id)
        self.nodes[info.node_id] = node
        self._nodes_at_site.setdefault(info.site, set()).add(info.node_id)
        self._changed_nodes.add(info.node_id)
        step = Step()
        reported = set(running)
        for job_id, attempt in reported:
            rec = self.jobs.get(job_id)
            if rec is not None and rec.node_id == info.node_id and rec.attempt == attempt:
                node.running.add((job_id, attempt))
                self._renew(rec.evolve(lease_expires_s=now_s + self.policy.lease_s))
            else:
                step.intents.append(
                    CancelOnNode(info.node_id, job_id, attempt, "no longer assigned to you")
                )
        for rec in list(self.jobs.values()):
            if rec.node_id == info.node_id and not rec.terminal and rec.state in (
                JobState.ASSIGNED, JobState.RUNNING
            ) and (rec.job_id, rec.attempt) not in reported:
                # The agent restarted or never got the assignment: place it again.
                self._retry(
                    rec, now_s, step, RetryReason.AGENT_RESTARTED, "agent reconnected without it"
                )
        return step

    def heartbeat(
        self,
        node_id: str,
        running: Iterable[AttemptKey],
        now_s: float,
        power_draw_kw: float = 0.0,
        gpu_utilization: float = 0.0,
        draining: bool = False,
        prefix_blocks: frozenset[int] | None = None,
        prefill_tokens_per_s: float = 0.0,
        models: ModelsReport | None = None,
    ) -> Step:
        node = self.nodes.get(node_id)
        step = Step()
        if node is None:
            return step
        node.last_seen_s = now_s
        if models is not None:
            self._models_report(node, models, running, now_s)
        if prefix_blocks is not None and prefix_blocks != node.prefix_blocks:
            node.prefix_blocks = prefix_blocks
            self._changed_nodes.add(node_id)
        if prefill_tokens_per_s and prefill_tokens_per_s != node.prefill_tokens_per_s:
            node.prefill_tokens_per_s = prefill_tokens_per_s
            self._changed_nodes.add(node_id)
        if node.silent:
            node.silent = False
            self._changed_nodes.add(node_id)
        node.power_draw_kw, node.gpu_utilization = power_draw_kw, gpu_utilization
        if node.agent_draining != draining:
            node.agent_draining = draining
            self._changed_nodes.add(node_id)
        listed = set(running)
        for key in listed & node.running:
            rec = self.jobs.get(key[0])
            if rec is not None:
                self._renew(rec.evolve(lease_expires_s=now_s + self.policy.lease_s))
        for key in list(node.running - listed):
            rec = self.jobs.get(key[0])
            # Messages on one stream arrive in order: a started job that is neither listed nor
            # reported finished is lost on the agent.
            if rec is not None and rec.state is JobState.RUNNING and rec.attempt == key[1]:
                self._retry(rec, now_s, step, RetryReason.AGENT_DROPPED, "agent no longer runs it")
        return step

    def _models_report(
        self, node: NodeState, report: ModelsReport, running: Iterable[AttemptKey], now_s: float,
    ) -> None:
        node.loaded_models, node.loading_models = report.loaded, report.loading
        if any(node.load_s.get(m) != s for m, s in report.load_s.items()):
            node.load_s.update(report.load_s)
            self._changed_nodes.add(node.info.node_id)  # placement prices its cold starts
        retry_s = self.policy.capacity.refused_retry_s
        # An agent reports a failure until a load succeeds: only a new one starts the wait, so
        # that the model is tried there again once it is over.
        for model in set(report.failures) - node.load_failures:
            node.load_refused_until_s[model] = now_s + retry_s
            self._changed_nodes.add(node.info.node_id)
        node.load_failures = frozenset(report.failures)
        for model in report.loaded & node.load_refused_until_s.keys():
            del node.load_refused_until_s[model]  # loaded after all (on command, or memory freed)
            self._changed_nodes.add(node.info.node_id)
        # Warm: what its engines hold, and the models of jobs sent to it (the first such job
        # paid the cold start; those behind it wait for its slot anyway).
        warm = set(report.loaded)
        for job_id, _ in running:
            rec = self.jobs.get(job_id)
            if rec is not None:
                warm.add(rec.spec.model)
        for job_id, _ in node.running:
            rec = self.jobs.get(job_id)
            if rec is not None:
                warm.add(rec.spec.model)
        if warm != node.warm_models:
            node.warm_models = warm
            self._changed_nodes.add(node.info.node_id)

    def disconnect_node(self, node_id: str, now_s: float) -> None:
        node = self.nodes.get(node_id)
        if node is not None and node.connected:
            node.connected = False
            node.disconnected_s = now_s
            self._changed_nodes.add(node_id)

    def set_draining(self, node_id: str, draining: bool) -> bool:
        node = self.nodes.get(node_id)
        if node is None:
            return False
        if draining:
            self.drained.add(node_id)
        else:
            self.drained.discard(node_id)
        node.draining = draining
        self._changed_nodes.add(node_id)
        return True

    def is_current(self, node_id: str, job_id: str, attempt: int) -> bool:
        rec = self.jobs.get(job_id)
        return (
            rec is not None and rec.node_id == node_id and rec.attempt == attempt
            and rec.state in (JobState.ASSIGNED, JobState.RUNNING)
        )

    def job_started(self, node_id: str, job_id: str, attempt: int, now_s: float) -> Step:
        step = Step()
        rec = self.jobs.get(job_id)
        if rec is None or not self.is_current(node_id, job_id, attempt):
            return step
        if rec.state is JobState.ASSIGNED:
            self._put(
                rec.evolve(
                    state=transition(rec.state, JobEvent.START),
                    started_s=now_s,
                    lease_expires_s=now_s + self.policy.lease_s,
                ),
                step,
                journal=False,
            )
        return step

    def job_outcome(
        self,
        node_id: str,
        job_id: str,
        attempt: int,
        now_s: float,
        *,
        result_blob: bytes = b"",
        error: str = "",
        run_ms: float = 0.0,
        energy_kwh: float = 0.0,
        tokens: int = 0,
        completion_tokens: int = 0,
        load_ms: float = 0.0,
    ) -> OutcomeVerdict:
        """Accept a result only from the node and attempt that currently hold the job (fencing)."""
        rec = self.jobs.get(job_id)
        node = self.nodes.get(node_id)
        if node is not None:
            node.running.discard((job_id, attempt))
            self._changed_nodes.add(node_id)
        if rec is None:
            return OutcomeVerdict(False, "job is already answered or unknown", Step())
        if rec.node_id != node_id or rec.attempt != attempt:
            return OutcomeVerdict(
                False, f"stale attempt {attempt}: the job is now attempt {rec.attempt}", Step()
            )
        if rec.state not in (JobState.ASSIGNED, JobState.RUNNING):
            return OutcomeVerdict(False, f"job is {rec.state.value}", Step())
        step = Step()
        if error:
            if rec.attempt >= self.policy.max_attempts:
                self._finish(
                    rec, JobEvent.FAIL, now_s, step,
                    error=f"failed after {rec.attempt} attempts: {error}",
                )
            else:
                self._retry(rec, now_s, step, RetryReason.AGENT_ERROR, f"agent error: {error}")
            return OutcomeVerdict(True, "error recorded", step)
        if node is not None:
            node.estimates.learn(rec.spec.model, tokens, run_ms / 1000.0, energy_kwh)
        self.demand.setdefault(rec.spec.model, ModelDemand()).served(
            run_ms / 1000.0, completion_tokens)
        self._finish(
            rec, JobEvent.SUCCEED, now_s, step,
            result_blob=result_blob, run_ms=run_ms, energy_kwh=energy_kwh, tokens_used=tokens,
            completion_tokens=completion_tokens, load_ms=load_ms,
        )
        step.answers.append((job_id, node_id, attempt))
        return OutcomeVerdict(True, "accepted", step)

    # ----- the control tick -----------------------------------------------------------------

    def tick(self, now_s: float) -> Step:
        self._unpark(self._held)
        if now_s - self._parked_checked_s >= UNPLACED_RECHECK_S:
            self._unpark(self._parked)
            self._parked_checked_s = now_s
        step = Step()
        silence_s = self.policy.silence_s
        for node in self.nodes.values():
            if silence_s is not None and node.connected and not node.silent and (
                now_s - node.last_seen_s > silence_s
            ):
                node.silent = True
                self._changed_nodes.add(node.info.node_id)
            if not node.connected and node.running and (
                now_s - node.disconnected_s >= self.policy.disconnect_grace_s
            ):
                for job_id, attempt in list(node.running):
                    rec = self.jobs.get(job_id)
                    if rec is not None and rec.attempt == attempt:
                        self._retry(
                            rec, now_s, step, RetryReason.AGENT_LOST,
                            f"agent {node.info.node_id} lost",
                        )
                node.running.clear()
                self._changed_nodes.add(node.info.node_id)
        self._forget_gone_nodes(now_s)
        for node in self.nodes.values():
            expired = [m for m, until_s in node.load_refused_until_s.items() if until_s <= now_s]
            for model in expired:
                del node.load_refused_until_s[model]
                self._changed_nodes.add(node.info.node_id)
        for rec in self._due(now_s):
            if now_s > rec.spec.deadline_s:
                error = "deadline passed before it finished"
                why = self._unplaced_why.get(rec.job_id)
                if why and rec.state is JobState.QUEUED:
                    error += f"; no node would take it: {'; '.join(why)}"
                self._finish(rec, JobEvent.EXPIRE, now_s, step, error=error)
            elif rec.state in (JobState.ASSIGNED, JobState.RUNNING) and (
                now_s > rec.lease_expires_s
            ):
                self._retry(rec, now_s, step, RetryReason.LEASE_EXPIRED, "lease expired")
        step.extend(self.schedule(now_s))
        # After placement: a job placed on a node that must load its model starts that load
        # there, and capacity counts it rather than loading a second copy elsewhere.
        return step.extend(self.plan_capacity(now_s))

    def plan_capacity(self, now_s: float) -> Step:
        """Loads and unloads that keep each model's replicas at what its targets need."""
        step = Step()
        policy = self.policy.capacity
        if not policy.enabled or not self.nodes:
            self.capacity_plan = CapacityPlan()
            return step
        queued = {model: sum(by_regions.values())
                  for model, by_regions in self._queued_jobs.items()}
        # Jobs waiting or running are demand now, however long ago they arrived: the model (and
        # each set of regions only it may serve) is not idle while they last.
        for counts in (self._queued_jobs, self._leased_jobs):
            for model, by_regions in counts.items():
                d = self.demand.setdefault(model, ModelDemand())
                d.last_demand_s = now_s
                for regions in by_regions:
                    if regions:
                        d.regions_last_demand_s[regions] = now_s
        views = [self._capacity_view(node, now_s) for node in self.nodes.values()]
        targets = {
            name: ModelTargets(spec.ttft_target_s, spec.per_token_target_s, spec.memory_mb)
            for name, spec in self.catalogue.items()
        }
        plan = plan_capacity(views, self.demand, queued, targets, self._surplus_since_s, now_s,
                             policy, queued_regions=self._queued_jobs)
        self.capacity_plan = step.capacity = plan
        for action in plan.actions:
            node = self.nodes[action.node_id]
            if isinstance(action, LoadOnNode):
                node.loading_models = node.loading_models | {action.model}
            else:
                node.loaded_models = node.loaded_models - {action.model}
                node.loading_models = node.loading_models - {action.model}
                node.warm_models.discard(action.model)
            self._changed_nodes.add(action.node_id)
            step.intents.append(action)
        return step

    def model_command_problem(self, node_id: str, model: str, load: bool) -> str | None:
        """Why ops' load or unload of a model on a node cannot be done (None: it can)."""
        node = self.nodes.get(node_id)
        if node is None:
            return f"no node {node_id[:80]!r}"
        info = node.info
        if model not in info.servable_models:
            served = ", ".join(sorted(info.servable_models)) or "nothing"
            return f"{node_id} cannot serve {model[:80]!r} (it serves {served})"
        if not node.connected:
            return f"{node_id} is not connected"
        if not load:
            running = [k for k in node.running
                       if (rec := self.jobs.get(k[0])) is not None and rec.spec.model == model]
            if running:
                return f"{len(running)} jobs of {model} run on {node_id}: drain it first"
        return None

    def pins_after(self, node_id: str, model: str, load: bool) -> frozenset[str]:
        """The models pinned on the node once ops' command is done (what the caller
        journals before `command_model`)."""
        pins = set(self.pinned.get(node_id, ()))
        if load:
            pins.add(model)
        else:
            pins.discard(model)
        return frozenset(pins)

    def command_model(self, node_id: str, model: str, load: bool, reason: str) -> Step | str:
        """Ops' load or unload of a model on a node: the step, or why it cannot be done. A
        loaded model is pinned there (capacity planning never unloads it) until ops unload it."""
        problem = self.model_command_problem(node_id, model, load)
        if problem is not None:
            return problem
        node = self.nodes[node_id]
        info = node.info
        step = Step()
        if load:
            node.loading_models = node.loading_models | {model}
            node.load_refused_until_s.pop(model, None)  # ops ask again: the agent decides
            step.intents.append(LoadOnNode(node_id, info.site, model, reason))
        else:
            node.loaded_models = node.loaded_models - {model}
            node.loading_models = node.loading_models - {model}
            node.warm_models.discard(model)
            step.intents.append(UnloadOnNode(node_id, info.site, model, reason))
        pins = self.pins_after(node_id, model, load)
        if pins:
            self.pinned[node_id] = set(pins)
        else:
            self.pinned.pop(node_id, None)
        self._changed_nodes.add(node_id)
        return step

    def _capacity_view(self, node: NodeState, now_s: float) -> NodeModels:
        info = node.info
        site_ok = self._serving_sites is None or info.site in self._serving_sites
        # Models of jobs sent to it load there whether or not a heartbeat says so yet.
        loading = node.loading_models | (frozenset(node.warm_models) - node.loaded_models)
        held = node.loaded_models | loading
        running: dict[str, int] = {}
        for job_id, _ in node.running:
            rec = self.jobs.get(job_id)
            if rec is not None:
                running[rec.spec.model] = running.get(rec.spec.model, 0) + 1
        return NodeModels(
            node_id=info.node_id,
            site=info.site,
            region=info.region,
            eligible=(node.connected and not node.silent and not node.draining
                      and not node.agent_draining and site_ok),
            slots=info.slots_total,
            memory_mb=info.memory_mb,
            loaded=node.loaded_models,
            loading=loading,
            loadable=info.servable_models - held,
            running=running,
            refused=frozenset(m for m, until_s in node.load_refused_until_s.items()
                              if until_s > now_s),
            pinned=frozenset(self.pinned.get(info.node_id, ())),
        )

    def shed(self, orders: Iterable[ShedOrder], now_s: float) -> Step:
        """Preempt running work at each ordered site until its busy AI power fits the order.

        A job's share of its node's busy power is what the planner counts for it
        (`busy_power_kw / slots_total`). The stopped jobs are queued again; the caller has
        already closed their site to new work (`serving_sites`), so they go elsewhere.
        """
        step = Step()
        for order in orders:
            running: list[RunningWork] = []
            for node_id in self._nodes_at_site.get(order.site, ()):
                node = self.nodes.get(node_id)
                if node is None or not node.connected:
                    continue
                per_job_mw = _job_mw(node)
                for job_id, attempt in node.running:
                    rec = self.jobs.get(job_id)
                    if rec is None or rec.attempt != attempt or rec.state not in _LEASED:
                        continue
                    running.append(
                        RunningWork(
                            job_id, attempt, node_id, per_job_mw, rec.spec.value_usd,
                            TIER_RANK[rec.spec.tier],
                            rec.started_s or rec.assigned_s,
                        )
                    )
            for work in choose_preemptions(running, order.ai_target_mw):
                rec = self.jobs[work.job_id]
                self._retry(
                    rec, now_s, step, RetryReason.PREEMPTED,
                    f"preempted: site {order.site} sheds AI power ({order.cause})",
                    shed_cause=order.cause,
                )
        return step

    def node_views(self) -> list[NodeView]:
        return [self._view(node) for node in self.nodes.values()]

    def _view(self, node: NodeState) -> NodeView:
        info = node.info
        site_ok = (
            self._serving_sites is None or info.site in self._serving_sites
        ) and info.site not in self._full_sites
        return NodeView(
            node_id=info.node_id,
            site=info.site,
            region=info.region,
            # A model it could not load lately is not sent there (its jobs would fail there).
            models=info.servable_models - node.load_refused_until_s.keys(),
            memory_mb=info.memory_mb,
            gpu_kind=info.gpu_kind,
            slots_free=max(info.slots_total - len(node.running), 0),
            slots_total=info.slots_total,
            serving=(
                node.connected and not node.draining and not node.agent_draining and site_ok
            ),
            healthy=node.connected and not node.silent,
            idle_power_kw=info.idle_power_kw,
            busy_power_kw=info.busy_power_kw,
            tokens_per_s=dict(node.estimates.tokens_per_s),
            warm_models=frozenset(node.warm_models),
            prefix_blocks=node.prefix_blocks,
            prefill_tokens_per_s=node.prefill_tokens_per_s,
            cold_start_s=dict(node.load_s),
            # Work already on the node, spread over its slots, delays a new job.
            backlog_s=(
                len(node.running) * node.estimates.run_s_mean / max(info.slots_total, 1)
            ),
        )

    def _forget_gone_nodes(self, now_s: float) -> None:
        after_s = self.policy.forget_node_after_s
        gone = [
            node_id for node_id, node in self.nodes.items()
            if not node.connected and not node.running and now_s - node.disconnected_s > after_s
        ]
        for node_id in gone:
            node = self.nodes.pop(node_id)
            self._nodes_at_site.get(node.info.site, set()).discard(node_id)
            self._changed_nodes.add(node_id)
            self.forgotten_nodes.append(node_id)

    def placement_index(self) -> NodeIndex:
        """The placement index with every node change since the last call written into it."""
        index = self._index
        for node_id in self._changed_nodes:
            node = self.nodes.get(node_id)
            if node is None:
                index.remove(node_id)
            else:
                index.upsert(self._view(node))
        self._changed_nodes.clear()
        if len(index) != len(self.nodes):
            # `nodes` was changed from outside the core's methods: start afresh.
            self._index = index = NodeIndex(self._view(n) for n in self.nodes.values())
        return index.refresh()

    def schedule(self, now_s: float) -> Step:
        if self._changed_nodes:
            self._unpark(self._held)
            self._unpark(self._parked)
            self._parked_checked_s = now_s
        step = Step()
        budget = self.policy.max_placements_per_tick  # jobs looked at in one tick
        unplaced: list[JobRecord] = []
        # Classes of job (what the filters read of a job) that no node took in this call. Jobs
        # that can never fit must not hide, behind the lookahead's limit, one that can.
        dead: dict[FitKey, Unplaceable] = {}
        busy_mw: dict[str, float] | None = None  # at budgeted sites, counted once per call
        rounds = 0
        while budget > 0 and rounds <= self.policy.lookahead_rounds:
            nodes = self.placement_index()
            free = nodes.free_slots()
            if free == 0 or not self._queue:
                break
            # One job per free slot first. Jobs that could not use the free slots (another
            # model or region, deferred) must not hold back those behind them, so while slots
            # stay free look further down the queue, twice as far each round.
            batch, skipped = self._pop_ready(now_s, min(free << rounds, budget), dead, budget)
            budget -= len(batch) + len(skipped)
            for rec in skipped:
                # Its class found no node earlier in this call, and nodes only fill up within
                # one: the same answer without asking the placer again.
                refusal = dead[_fit_key(rec)]
                step.decisions.append(Unplaceable(rec.job_id, refusal.code, refusal.reasons))
                self._unplaced_why[rec.job_id] = refusal.reasons
                unplaced.append(rec)
            if not batch:
                if skipped:
                    continue
                break
            rounds += 1
            decisions = place(
                [r.as_request() for r in batch], nodes, self.site_views, now_s, self.profile,
                catalogue=self.catalogue,
            )
            if busy_mw is None and self._site_budget_mw:
                busy_mw = {site: self.site_busy_mw(site) for site in self._site_budget_mw}
            for decision in decisions:
                rec = self.jobs[decision.job_id]
                if isinstance(decision, Placement):
                    if busy_mw is not None and decision.site in self._site_budget_mw:
                        job_mw = _job_mw(self.nodes[decision.node_id])
                        if (
                            busy_mw[decision.site] + job_mw
                            > self._site_budget_mw[decision.site] + _SHED_EPS_MW
                        ):
                            # The site's plan has no power for it: back in the queue, and the
                            # site takes no more in this schedule (the next round goes elsewhere).
                            self._close_full_site(decision.site)
                            self._push(rec)
                            continue
                        busy_mw[decision.site] += job_mw
                    step.decisions.append(decision)
                    self._assign(rec, decision, now_s, step)
                    continue
                step.decisions.append(decision)
                if isinstance(decision, Hold):
                    # Waits for the busy node holding its prefix: back on the heap when a
                    # node changes (that one's slot frees) or at the tick.
                    self._held.append(rec)
                elif isinstance(decision, Deferral):
                    self._put(rec.evolve(not_before_s=decision.until_s), step)
                    self._push(self.jobs[rec.job_id])
                else:
                    self._unplaced_why[rec.job_id] = decision.reasons
                    unplaced.append(rec)
                    dead.setdefault(_fit_key(rec), decision)
        # Unplaceable now. Even "unresolvable" may change when a node joins, so the job waits,
        # parked, and its deadline bounds the wait.
        self._parked.extend(unplaced)
        return step

    def _unpark(self, jobs: list[JobRecord]) -> None:
        """Put `jobs` (the parked or the held) back on the heap, and empty the list."""
        parked = jobs.copy()
        jobs.clear()
        for rec in parked:
            current = self.jobs.get(rec.job_id)
            if current is not None and current.state is JobState.QUEUED:
                self._push(current)

    # ----- internals ------------------------------------------------------------------------

    def _assign(self, rec: JobRecord, placement: Placement, now_s: float, step: Step) -> None:
        attempt = rec.attempt + 1
        lease = now_s + self.policy.lease_s
        self._unplaced_why.pop(rec.job_id, None)
        node = self.nodes[placement.node_id]
        node.running.add((rec.job_id, attempt))
        node.warm_models.add(rec.spec.model)
        if rec.spec.prefix_blocks:
            # Its engine will hold this prompt once the job starts: the next turn of the
            # conversation finds it there before the agent's next heartbeat says so.
            node.prefix_blocks = node.prefix_blocks | frozenset(rec.spec.prefix_blocks)
        self._changed_nodes.add(placement.node_id)
        self._put(
            rec.evolve(
                state=transition(rec.state, JobEvent.ASSIGN),
                attempt=attempt,
                node_id=placement.node_id,
                site=placement.site,
                region=placement.region,
                assigned_s=now_s,
                lease_expires_s=lease,
                history=(*rec.history, f"{placement.node_id}#{attempt}"),
            ),
            step,
        )
        step.intents.append(Assign(placement.node_id, rec.job_id, attempt, lease, placement))

    def _retry(
        self,
        rec: JobRecord,
        now_s: float,
        step: Step,
        reason: RetryReason,
        detail: str,
        shed_cause: str = "",
    ) -> None:
        # A preempted job did nothing wrong: shedding does not use up its attempts (its deadline
        # still bounds how often it can be moved).
        if rec.attempt >= self.policy.max_attempts and reason is not RetryReason.PREEMPTED:
            # _finish frees the slot and cancels on the node (once).
            self._finish(rec, JobEvent.FAIL, now_s, step, error=f"gave up: {detail}")
            return
        node = self.nodes.get(rec.node_id)
        if node is not None:
            node.running.discard((rec.job_id, rec.attempt))
            self._changed_nodes.add(rec.node_id)
            if node.connected:
                step.intents.append(CancelOnNode(rec.node_id, rec.job_id, rec.attempt, detail))
        step.moves.append(
            Moved(rec.job_id, rec.attempt, rec.node_id, rec.site, reason, detail, shed_cause)
        )
        new = rec.evolve(
            state=transition(rec.state, JobEvent.RETRY), node_id="", site="", region="",
            lease_expires_s=0.0, error="",
        )
        self._put(new, step)
        self._push(new)

    def _finish(
        self, rec: JobRecord, event: JobEvent, now_s: float, step: Step, **fields: object
    ) -> None:
        node = self.nodes.get(rec.node_id)
        if node is not None:
            node.running.discard((rec.job_id, rec.attempt))
            self._changed_nodes.add(rec.node_id)
            if event is not JobEvent.SUCCEED and node.connected and rec.state in (
                JobState.ASSIGNED, JobState.RUNNING
            ):
                step.intents.append(
                    CancelOnNode(rec.node_id, rec.job_id, rec.attempt, str(fields.get("error")))
                )
        done = rec.evolve(state=transition(rec.state, event), finished_s=now_s, **fields)
        step.changed.append(done)
        self._drop(rec.job_id)
        self._seq.pop(rec.job_id, None)
        self._unplaced_why.pop(rec.job_id, None)

    def _put(self, rec: JobRecord, step: Step, journal: bool = True) -> None:
        self._store(rec)
        (step.changed if journal else step.unjournaled).append(rec)

    def _renew(self, rec: JobRecord) -> None:
        """A lease renewal: kept in memory only. Recovery gives every assigned or running job a
        fresh lease anyway, so writing each heartbeat's renewals would buy nothing."""
        self._store(rec)

    def _store(self, rec: JobRecord) -> None:
        """Put `rec` in `jobs`, as a new job or in place of its record. With `_drop`, the only
        writers of `jobs`: what is kept beside it (timeouts, the counts by state) is kept here,
        so it cannot drift from the records."""
        old = self.jobs.get(rec.job_id)
        self._track(rec, old)
        # Renewals, the most frequent change, keep state and spec: no count moves.
        if old is None or old.state is not rec.state or old.spec is not rec.spec:
            if old is not None:
                self._count(old, -1)
            self._count(rec, 1)
        self.jobs[rec.job_id] = rec

    def _drop(self, job_id: str) -> None:
        """Take a job out of `jobs` (it ended)."""
        old = self.jobs.pop(job_id, None)
        if old is not None:
            self._count(old, -1)

    def _count(self, rec: JobRecord, delta: int) -> None:
        if rec.state is JobState.QUEUED:
            counts = self._queued_jobs
            self._queued_by_tier[rec.spec.tier] += delta
        elif rec.state in _LEASED:
            counts = self._leased_jobs
        else:
            return
        by_regions = counts.setdefault(rec.spec.model, {})
        regions = rec.spec.allowed_regions
        left = by_regions.get(regions, 0) + delta
        if left:
            by_regions[regions] = left
            return
        # Emptied keys go, so a tick's cost follows the models with jobs, not every model seen.
        del by_regions[regions]
        if not by_regions:
            del counts[rec.spec.model]

    def _track(self, rec: JobRecord, old: JobRecord | None) -> None:
        """Note when `rec` may time out; `old` is the record it replaces in `jobs`, if any."""
        seq = self._seq.get(rec.job_id)
        if old is None or seq is None:
            seq = self._seq[rec.job_id] = self._next_seq
            self._next_seq += 1
        if old is None or rec.spec.deadline_s != old.spec.deadline_s:
            heapq.heappush(self._deadlines, (rec.spec.deadline_s, seq, rec.job_id))
        if rec.state in _LEASED and (
            old is None or old.state not in _LEASED
            or rec.lease_expires_s < old.lease_expires_s
        ):
            # A renewal (a later lease) needs no entry: the earlier one is moved when it is due.
            heapq.heappush(self._leases, (rec.lease_expires_s, seq, rec.job_id))

    def _due(self, now_s: float) -> list[JobRecord]:
        """Jobs whose deadline or lease has passed by `now_s`, in the order of `jobs`."""
        due: set[str] = set()
        while self._deadlines and self._deadlines[0][0] < now_s:
            _, seq, job_id = heapq.heappop(self._deadlines)
            if self._seq.get(job_id) == seq:
                due.add(job_id)
        renewed: list[tuple[float, int, str]] = []
        while self._leases and self._leases[0][0] < now_s:
            _, seq, job_id = heapq.heappop(self._leases)
            rec = self.jobs.get(job_id)
            if rec is None or self._seq.get(job_id) != seq or rec.state not in _LEASED:
                continue
            if now_s > rec.lease_expires_s:
                due.add(job_id)
            else:
                renewed.append((rec.lease_expires_s, seq, job_id))
        for entry in renewed:
            heapq.heappush(self._leases, entry)
        return [self.jobs[job_id] for job_id in sorted(due, key=self._seq.__getitem__)]

    def _push(self, rec: JobRecord) -> None:
        if rec.job_id in self._in_queue:
            return
        self._in_queue.add(rec.job_id)
        spec = rec.spec
        key = order_key(spec.tier, spec.deadline_s, rec.submitted_s, rec.job_id)
        heapq.heappush(self._queue, (key, rec.job_id))

    def _pop_ready(
        self, now_s: float, limit: int, dead: Mapping[FitKey, object],
        max_looked_at: int,
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        """Up to `limit` queued jobs in queue order, and the jobs of `dead` classes passed on
        the way (all of them together at most `max_looked_at`); deferred jobs go back on the
        heap."""
        ready: list[JobRecord] = []
        skipped: list[JobRecord] = []
        waiting: list[JobRecord] = []
        while self._queue and len(ready) < limit and len(ready) + len(skipped) < max_looked_at:
            _, job_id = heapq.heappop(self._queue)
            self._in_queue.discard(job_id)
            rec = self.jobs.get(job_id)
            if rec is None or rec.state is not JobState.QUEUED:
                continue
            if rec.not_before_s > now_s:
                waiting.append(rec)
            elif dead and _fit_key(rec) in dead:
                skipped.append(rec)
            else:
                ready.append(rec)
        for rec in waiting:
            self._push(rec)
        return ready, skipped

    def site_load(self) -> Mapping[str, int]:
        load: dict[str, int] = {}
        for node in self.nodes.values():
            load[node.info.site] = load.get(node.info.site, 0) + len(node.running)
        return load
