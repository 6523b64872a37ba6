"""Placement by scan: every node through every filter, every survivor scored, for each job.

The straightforward way, and the definition the node-index path (`indexed.py`) must agree with
decision for decision. `place()` uses it for small fleets (where it is the faster of the two), for
custom filter lists, and whenever a value is not a finite number (where vector arithmetic and
Python comparisons could disagree about NaN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from scheduler.core.models import DEFAULT_CATALOGUE, ModelSpec, Tier
from scheduler.core.placement.filters import DEFAULT_FILTERS, FilterFn
from scheduler.core.placement.rules import (
    best_window,
    deferral,
    hold_for_prefix,
    latency_target_s,
    queue_order,
    unplaceable,
    with_accelerators,
)
from scheduler.core.placement.scores import (
    DEFAULT_PROFILE,
    ScoringProfile,
    estimated_run_s,
    score,
)
from scheduler.core.placement.types import (
    Decision,
    FilterVerdict,
    JobRequest,
    NodeView,
    Placement,
    ScoreBreakdown,
    SiteView,
)


def place_by_scan(
    jobs: Sequence[JobRequest],
    nodes: Sequence[NodeView],
    sites: Mapping[str, SiteView],
    now_s: float,
    profile: ScoringProfile = DEFAULT_PROFILE,
    filters: Sequence[FilterFn] = DEFAULT_FILTERS,
    catalogue: Mapping[str, ModelSpec] = DEFAULT_CATALOGUE,
) -> list[Decision]:
    """Same contract as `place()`."""
    working = {n.node_id: n for n in sorted(nodes, key=lambda n: n.node_id)}
    decisions: list[Decision] = []
    for job in sorted(with_accelerators(jobs, catalogue), key=queue_order):
        decision = _place_one(job, working, sites, now_s, profile, filters, catalogue)
        decisions.append(decision)
        if isinstance(decision, Placement):
            node = working[decision.node_id]
            run_s = estimated_run_s(job, node, profile)
            working[node.node_id] = replace(
                node,
                slots_free=node.slots_free - 1,
                backlog_s=node.backlog_s + run_s / max(node.slots_total, 1),
                warm_models=node.warm_models | {job.model},
            )
    return decisions


def _place_one(
    job: JobRequest,
    nodes: Mapping[str, NodeView],
    sites: Mapping[str, SiteView],
    now_s: float,
    profile: ScoringProfile,
    filters: Sequence[FilterFn],
    catalogue: Mapping[str, ModelSpec],
) -> Decision:
    target_s = latency_target_s(job, catalogue)
    best: tuple[float, str] | None = None
    best_score: ScoreBreakdown | None = None
    candidates = 0
    verdicts: dict[str, FilterVerdict] = {}
    busy_holders: list[NodeView] = []  # full, but holding the start of its prompt
    for node in nodes.values():
        verdict = _first_failure(job, node, filters)
        if verdict is not None:
            verdicts.setdefault(verdict.plugin, verdict)
            if verdict.plugin == "has_capacity" and node.prefix_blocks and job.prefix_blocks:
                busy_holders.append(node)
            continue
        site = sites.get(node.site) or SiteView(node.site, node.region)
        breakdown = score(job, node, site, target_s, now_s, profile)
        candidates += 1
        key = (breakdown.total_usd, node.node_id)
        if best is None or key < best:
            best, best_score = key, breakdown
    hold = hold_for_prefix(job, busy_holders, nodes[best[1]] if best else None, now_s, profile)
    if hold is not None:
        return hold
    if best is None or best_score is None:
        return unplaceable(job, verdicts.values())
    node = nodes[best[1]]
    if job.tier is Tier.FLEX and job.deferrable:
        wait = deferral(job, best_score, best_window(job, node, sites, now_s, profile), profile)
        if wait is not None:
            return wait
    return Placement(job.job_id, node.node_id, node.site, node.region, best_score, candidates)


def _first_failure(
    job: JobRequest, node: NodeView, filters: Sequence[FilterFn]
) -> FilterVerdict | None:
    for check in filters:
        verdict = check(job, node)
        if verdict is not None:
            return verdict
    return None
