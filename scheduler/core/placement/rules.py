"""The placement rules both ways of placing apply: queue order, latency target, why a job cannot be
placed, when a flex job waits for cheaper power, and when a job waits for the busy node that holds
its prompt's prefix.

`place_by_scan` (every node through every filter) and the node-index path (`indexed.py`) differ
only in how they find the cheapest node; what a decision says is decided here, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from scheduler.core.models import ModelSpec, Tier
from scheduler.core.placement.scores import (
    ScoringProfile,
    energy_usd,
    estimated_run_s,
    prefix_saved_s,
)
from scheduler.core.placement.types import (
    Deferral,
    FilterVerdict,
    Hold,
    JobRequest,
    NodeView,
    ScoreBreakdown,
    SiteView,
    StatusCode,
    Unplaceable,
)

TIER_RANK = {Tier.INTERACTIVE: 0, Tier.STANDARD: 1, Tier.FLEX: 2}


def queue_order(job: JobRequest) -> tuple[int, float, float, str]:
    """Interactive first, then earliest deadline, then first come."""
    return order_key(job.tier, job.deadline_s, job.submitted_s, job.job_id)


def order_key(
    tier: Tier, deadline_s: float, submitted_s: float, job_id: str
) -> tuple[int, float, float, str]:
    """`queue_order` from the fields themselves (the core orders records without a request)."""
    return (TIER_RANK[tier], deadline_s, submitted_s, job_id)


def latency_target_s(job: JobRequest, catalogue: Mapping[str, ModelSpec]) -> float:
    spec = catalogue.get(job.model)
    if spec is None or job.tier not in spec.tiers:
        return job.deadline_s - job.submitted_s
    return spec.tiers[job.tier].latency_target_s


def with_accelerators(
    jobs: Sequence[JobRequest], catalogue: Mapping[str, ModelSpec]
) -> Sequence[JobRequest]:
    """The jobs, each limited to the accelerator kinds of its model in the catalogue.

    A job's request is built from what admission journalled, which names no accelerators; the
    catalogue the placer is given does, so the kinds are those of the catalogue in force (a
    scheduler restarted on a new catalogue applies it to the jobs already queued). A job that
    names kinds of its own keeps them. The same list comes back when no job changes: with a
    catalogue that limits no model (the default) this costs a lookup per job.
    """
    out: list[JobRequest] | None = None
    for i, job in enumerate(jobs):
        if job.accelerators:
            continue
        spec = catalogue.get(job.model)
        if spec is None or not spec.accelerators:
            continue
        if out is None:
            out = list(jobs)
        out[i] = replace(job, accelerators=spec.accelerators)
    return jobs if out is None else out


def unplaceable(job: JobRequest, verdicts: Iterable[FilterVerdict]) -> Unplaceable:
    """The decision for a job no node passed; `verdicts` is one per failing filter, in the order
    the filters first failed over the nodes in id order."""
    found = list(verdicts)
    if not found:
        return Unplaceable(job.job_id, StatusCode.UNRESOLVABLE, ("no nodes",))
    # Resolvable if any node failed only for a reason that can pass later.
    code = (
        StatusCode.UNSCHEDULABLE
        if any(v.code is StatusCode.UNSCHEDULABLE for v in found)
        else StatusCode.UNRESOLVABLE
    )
    reasons = tuple(f"{v.plugin}: {v.reason}" for v in found)
    return Unplaceable(job.job_id, code, reasons)


def latest_start_s(job: JobRequest, node: NodeView, profile: ScoringProfile) -> float:
    """The latest a flex job may start on this node's hardware and still keep its margin."""
    run_s = estimated_run_s(job, node, profile)
    return job.deadline_s - run_s - profile.defer_deadline_margin_s


def best_window(
    job: JobRequest,
    node: NodeView,
    sites: Mapping[str, SiteView],
    now_s: float,
    profile: ScoringProfile,
) -> tuple[float, float] | None:
    """(energy USD, start) of the cheapest later window in the job's allowed regions, or None.

    The later cost is priced on the chosen node's hardware at the cheapest outlook among the
    sites of the job's allowed regions; the chosen node is a fair proxy because later the job is
    placed afresh anyway.
    """
    latest_s = latest_start_s(job, node, profile)
    best: tuple[float, float] | None = None  # (energy usd, start_s)
    for site in sites.values():
        if job.allowed_regions and site.region not in job.allowed_regions:
            continue
        for window in site.outlook:
            if window.start_s <= now_s or window.start_s > latest_s:
                continue
            cost = energy_usd(job, node, site, profile, window.opportunity_price_usd_per_mwh)
            if best is None or (cost, window.start_s) < best:
                best = (cost, window.start_s)
    return best


def deferral(
    job: JobRequest,
    now_score: ScoreBreakdown,
    window: tuple[float, float] | None,
    profile: ScoringProfile,
) -> Deferral | None:
    """Wait for the window if the saving is worth it (the deadline is already kept safe)."""
    if window is None:
        return None
    saving_usd = now_score.energy_usd - window[0]
    if saving_usd <= 0 or saving_usd < profile.defer_min_saving_ratio * abs(now_score.energy_usd):
        return None
    return Deferral(
        job.job_id,
        until_s=window[1],
        expected_saving_usd=saving_usd,
        reason=f"cheaper power expected at t={window[1]:.0f}",
    )


def hold_for_prefix(
    job: JobRequest, busy: Sequence[NodeView], free: NodeView | None, now_s: float,
    profile: ScoringProfile,
) -> Hold | None:
    """Wait for the busy node that saves most prefill, where its slot frees sooner than the
    prefill it saves over the best free node, and the job has not already waited that long.
    Its backlog (work ahead per slot) is the expected wait."""
    if not busy or not profile.prefix_cache_weight or job.tier is Tier.FLEX:
        return None
    free_saved_s = prefix_saved_s(job, free, profile) if free is not None else 0.0
    best: Hold | None = None
    for node in busy:
        gain_s = prefix_saved_s(job, node, profile) - free_saved_s
        if gain_s <= 0 or node.backlog_s >= gain_s:
            continue
        if now_s - job.submitted_s >= gain_s:
            continue  # it has waited what the prefix could save: it goes where it can now
        if best is None or gain_s - node.backlog_s > best.saved_s - best.expected_wait_s:
            best = Hold(job.job_id, node.node_id, node.backlog_s, gain_s)
    return best
