"""Metrics at the edge: the control loop reports what happened, this turns it into series.

The core returns data and never counts anything itself; this observer reads that data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from scheduler.core.capacity import CapacityPlan, LoadOnNode, UnloadOnNode
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.metering import MeteredJob
from scheduler.core.models import ModelSpec, Tier
from scheduler.core.placement import Deferral, Hold, Placement
from scheduler.core.scheduler import NodeState, Step
from scheduler.metrics.registry import SchedulerMetrics


class LoopObserver(Protocol):
    def on_submitted(self, records: Sequence[JobRecord]) -> None: ...

    def on_commit(self, submits: int, seconds: float) -> None:
        """A group commit wrote `submits` submit calls in `seconds`."""

    def on_step(self, step: Step, now_s: float, decide_s: float) -> None: ...

    def on_node(self, node: NodeState, now_s: float) -> None: ...

    def on_node_forgotten(self, node_id: str) -> None: ...

    def on_queue(self, jobs: Mapping[str, JobRecord],
                 queued_by_tier: Mapping[Tier, int]) -> None: ...


class MetricsObserver:
    def __init__(self, metrics: SchedulerMetrics, catalogue: Mapping[str, ModelSpec]) -> None:
        self.metrics = metrics
        self.catalogue = catalogue

    def on_submitted(self, records: Sequence[JobRecord]) -> None:
        for rec in records:
            self.metrics.job_submitted(rec.spec.tier.value, rec.spec.model)

    def on_commit(self, submits: int, seconds: float) -> None:
        self.metrics.observe_commit(submits, seconds)

    def on_step(self, step: Step, now_s: float, decide_s: float) -> None:
        if step.capacity is not None:
            self._on_capacity(step.capacity)
        for intent in step.intents:
            if isinstance(intent, LoadOnNode | UnloadOnNode):
                self.metrics.model_capacity_action(
                    intent.site, intent.model,
                    "load" if isinstance(intent, LoadOnNode) else "unload")
        for move in step.moves:
            self.metrics.job_reassigned(move.reason)
            if move.shed_cause:
                self.metrics.job_preempted(move.shed_cause)
        decided = [d for d in step.decisions if isinstance(d, Placement | Deferral)]
        if step.decisions:
            per_job_s = decide_s / len(step.decisions)
            for _ in step.decisions:
                self.metrics.observe_placement_s(per_job_s)
            placed = sum(1 for d in decided if isinstance(d, Placement))
            deferred = len(decided) - placed
            if placed:
                self.metrics.placement_outcome("placed", placed)
            if deferred:
                self.metrics.placement_outcome("deferred", deferred)
            held = sum(1 for d in step.decisions if isinstance(d, Hold))
            if held:
                self.metrics.placement_outcome("held", held)
            if len(step.decisions) - len(decided) - held:
                self.metrics.placement_outcome(
                    "unplaceable", len(step.decisions) - len(decided) - held)
        for rec in step.changed:
            if not rec.terminal:
                continue
            spec = self.catalogue.get(rec.spec.model)
            target = (
                spec.tiers[rec.spec.tier].latency_target_s
                if spec is not None and rec.spec.tier in spec.tiers
                else None
            )
            queue_s = rec.assigned_s - rec.submitted_s if rec.assigned_s else None
            run_s = rec.run_ms / 1000.0 if rec.state is JobState.SUCCEEDED else None
            metered = MeteredJob.of(rec)
            if metered is not None:
                self.metrics.job_metered(rec.tenant, rec.spec.tier.value, rec.spec.model,
                                         metered.prompt_tokens, metered.completion_tokens,
                                         metered.charged_usd)
            self.metrics.site_model_job_finished(
                rec.site, rec.spec.model, rec.state.value,
                cold_start_s=rec.load_ms / 1000.0 if rec.load_ms > 0 else None)
            self.metrics.job_finished(
                rec.spec.tier.value,
                rec.spec.model,
                rec.state.value,
                queue_s=queue_s,
                run_s=run_s,
                latency_s=rec.finished_s - rec.submitted_s,
                latency_target_s=target,
            )

    def _on_capacity(self, plan: CapacityPlan) -> None:
        for m in plan.models:
            self.metrics.set_model_capacity(
                m.model, wanted=m.wanted, arrivals_per_s=m.arrivals_per_s, queued=m.queued)
        self.metrics.set_model_replicas(plan.replicas)

    def on_node_forgotten(self, node_id: str) -> None:
        self.metrics.forget_node(node_id)

    def on_node(self, node: NodeState, now_s: float) -> None:
        info = node.info
        self.metrics.set_node(
            info.node_id,
            info.site,
            connected=node.connected,
            gpu_utilization=node.gpu_utilization,
            power_draw_kw=node.power_draw_kw,
            jobs_running=len(node.running),
            draining=node.draining or node.agent_draining,
        )
        if node.connected:
            self.metrics.site_heartbeat(info.site, info.region, now_s)

    def on_queue(self, jobs: Mapping[str, JobRecord],
                 queued_by_tier: Mapping[Tier, int]) -> None:
        for tier, n in queued_by_tier.items():
            self.metrics.set_queue_depth(tier.value, n)
