"""Placement: for each queued job, filter the nodes, score the survivors, pick the cheapest.

`place()` is pure: it reads snapshots and returns decisions. It reserves slots only in its own
working copy so that two jobs in one call do not both take a node's last slot; the caller commits
the decisions (journal, then send) and may drop any of them. Ties go to the lower node id so that
a backtest replays exactly.

Flex jobs may be deferred: if a cheaper window is expected before their deadline (with margin) and
the saving beats the profile's threshold, the decision is a `Deferral`. Interactive and standard
jobs never wait for price.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from scheduler.core.models import DEFAULT_CATALOGUE, ModelSpec, Tier
from scheduler.core.placement.filters import DEFAULT_FILTERS, FilterFn
from scheduler.core.placement.scores import (
    DEFAULT_PROFILE,
    ScoringProfile,
    energy_usd,
    estimated_run_s,
    score,
)
from scheduler.core.placement.types import (
    Decision,
    Deferral,
    FilterVerdict,
    JobRequest,
    NodeView,
    Placement,
    ScoreBreakdown,
    SiteView,
    StatusCode,
    Unplaceable,
)

TIER_RANK = {Tier.INTERACTIVE: 0, Tier.STANDARD: 1, Tier.FLEX: 2}


def queue_order(job: JobRequest) -> tuple[int, float, float, str]:
    """Interactive first, then earliest deadline, then first come."""
    return (TIER_RANK[job.tier], job.deadline_s, job.submitted_s, job.job_id)


def latency_target_s(job: JobRequest, catalogue: Mapping[str, ModelSpec]) -> float:
    spec = catalogue.get(job.model)
    if spec is None or job.tier not in spec.tiers:
        return job.deadline_s - job.submitted_s
    return spec.tiers[job.tier].latency_target_s


def place(
    jobs: Sequence[JobRequest],
    nodes: Sequence[NodeView],
    sites: Mapping[str, SiteView],
    now_s: float,
    profile: ScoringProfile = DEFAULT_PROFILE,
    filters: Sequence[FilterFn] = DEFAULT_FILTERS,
    catalogue: Mapping[str, ModelSpec] = DEFAULT_CATALOGUE,
) -> list[Decision]:
    working = {n.node_id: n for n in sorted(nodes, key=lambda n: n.node_id)}
    decisions: list[Decision] = []
    for job in sorted(jobs, key=queue_order):
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
    for node in nodes.values():
        verdict = _first_failure(job, node, filters)
        if verdict is not None:
            verdicts.setdefault(verdict.plugin, verdict)
            continue
        site = sites.get(node.site) or SiteView(node.site, node.region)
        breakdown = score(job, node, site, target_s, now_s, profile)
        candidates += 1
        key = (breakdown.total_usd, node.node_id)
        if best is None or key < best:
            best, best_score = key, breakdown
    if best is None or best_score is None:
        return _unplaceable(job, verdicts)
    node = nodes[best[1]]
    if job.tier is Tier.FLEX:
        deferral = _maybe_defer(job, node, sites, best_score, now_s, profile)
        if deferral is not None:
            return deferral
    return Placement(job.job_id, node.node_id, node.site, node.region, best_score, candidates)


def _first_failure(
    job: JobRequest, node: NodeView, filters: Sequence[FilterFn]
) -> FilterVerdict | None:
    for check in filters:
        verdict = check(job, node)
        if verdict is not None:
            return verdict
    return None


def _unplaceable(job: JobRequest, verdicts: Mapping[str, FilterVerdict]) -> Unplaceable:
    if not verdicts:
        return Unplaceable(job.job_id, StatusCode.UNRESOLVABLE, ("no nodes",))
    # Resolvable if any node failed only for a reason that can pass later.
    code = (
        StatusCode.UNSCHEDULABLE
        if any(v.code is StatusCode.UNSCHEDULABLE for v in verdicts.values())
        else StatusCode.UNRESOLVABLE
    )
    reasons = tuple(f"{v.plugin}: {v.reason}" for v in verdicts.values())
    return Unplaceable(job.job_id, code, reasons)


def _maybe_defer(
    job: JobRequest,
    node: NodeView,
    sites: Mapping[str, SiteView],
    now_score: ScoreBreakdown,
    now_s: float,
    profile: ScoringProfile,
) -> Deferral | None:
    """Wait for a cheaper window if the saving is worth it and the deadline stays safe.

    The later cost is priced on the chosen node's hardware at the cheapest outlook among the
    sites of the job's allowed regions; the chosen node is a fair proxy because later the job is
    placed afresh anyway.
    """
    run_s = estimated_run_s(job, node, profile)
    latest_start_s = job.deadline_s - run_s - profile.defer_deadline_margin_s
    best_window: tuple[float, float] | None = None  # (energy usd, start_s)
    for site in sites.values():
        if job.allowed_regions and site.region not in job.allowed_regions:
            continue
        for window in site.outlook:
            if window.start_s <= now_s or window.start_s > latest_start_s:
                continue
            cost = energy_usd(job, node, site, profile, window.opportunity_price_usd_per_mwh)
            if best_window is None or (cost, window.start_s) < best_window:
                best_window = (cost, window.start_s)
    if best_window is None:
        return None
    saving_usd = now_score.energy_usd - best_window[0]
    if saving_usd <= 0 or saving_usd < profile.defer_min_saving_ratio * abs(now_score.energy_usd):
        return None
    return Deferral(
        job.job_id,
        until_s=best_window[1],
        expected_saving_usd=saving_usd,
        reason=f"cheaper power expected at t={best_window[1]:.0f}",
    )
