"""Placement over the node index: the scan's decisions, found with array operations.

For each job (in queue order) the default filters become one boolean mask over the index, the
score terms are computed for the surviving nodes only, with the same floating-point operations in
the same order as `scores.score` (so every total is bit-identical to the scan's), and `argmin`
takes the first of the cheapest in node-id order: the scan's tie-break. Reservations within the call
(a slot taken, backlog added, the model now warm) go to copies of the columns they change, so the
index itself is never changed by placing. A job whose prompt starts with a prefix some engines hold
(the index keeps which nodes hold each block) gets the saving added at those nodes only, last,
as `ScoreBreakdown.total_usd` adds it, and may wait for a busy one by the scan's rule
(`rules.hold_for_prefix`).

When a job is unplaceable, the verdicts are rebuilt from the masks: each filter's verdict comes
from the first node, in id order, for which it was the first to fail, and the verdicts are ordered
by that node, exactly as the scan collects them. A queue holds many jobs alike to the filters
(same model, regions and memory): that such a job fits nowhere, and its verdicts, are worked out
once per call (the verdicts again after each reservation, which can reorder them).

Returns None (and the caller scans) when a total comes out NaN, or a job, the profile, a site
price or an outlook window holds a number that is not finite: the cases where vector arithmetic
and Python's comparisons could disagree (Python's `min` keeps a NaN it met first; a NaN window
start is not skipped by the scan's test). Non-finite node values need no check of their own:
they either compare the same way in both (memory, slots, rates) or make a total NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from scheduler.core.models import ModelSpec, Tier
from scheduler.core.placement.filters import DEFAULT_FILTERS, FitKey, fit_key
from scheduler.core.placement.index import ModelColumns, NodeIndex
from scheduler.core.placement.rules import (
    deferral,
    hold_for_prefix,
    latency_target_s,
    queue_order,
    unplaceable,
    with_accelerators,
)
from scheduler.core.placement.scores import (
    KW_PER_MW,
    MIN_RATE_TOKENS_PER_S,
    S_PER_H,
    ScoringProfile,
    estimated_run_s,
    prefix_usd,
)
from scheduler.core.placement.site_table import NotFinite, SiteTable
from scheduler.core.placement.types import (
    Decision,
    FilterVerdict,
    JobRequest,
    NodeView,
    Placement,
    ScoreBreakdown,
    SiteView,
)

_NO_ROWS = np.zeros(0, dtype=np.int64)


class _Working:
    """The call's own copy of what placing changes: free slots, backlog, warm models; and what it
    learnt about jobs that fit nowhere (a queue holds many alike, so each is worked out once)."""

    def __init__(self, index: NodeIndex) -> None:
        self.index = index
        self.slots_free = index.slots_free.copy()
        self.backlog_s = index.backlog_s.copy()
        self._warm: dict[str, np.ndarray] = {}
        # Alike jobs that fit no node: within a call slots only get taken, so it stays so.
        self.fits_nowhere: set[FitKey] = set()
        # Their verdicts, until the next reservation (which may reorder them).
        self.verdicts: dict[FitKey, tuple[FilterVerdict, ...]] = {}
        # Nodes of the allowed accelerator kinds, by kinds: placing changes no node's kind.
        self._kinds: dict[frozenset[str], np.ndarray] = {}
        # Alike jobs' nodes by every filter but free slots (the only one placing changes), as
        # ids in node order: a queue's jobs fall in few classes, so the full-length masks are
        # built once per class, and each job scans only its class's nodes for a free slot.
        self._eligible: dict[FitKey, np.ndarray] = {}
        # Rows holding each first prefix block asked for (placing does not change them).
        self._holders: dict[int, np.ndarray] = {}

    def holders(self, job: JobRequest, profile: ScoringProfile) -> np.ndarray:
        """Rows of the nodes holding the start of the job's prompt (none where the profile
        ignores prefixes)."""
        if not (job.prefix_blocks and profile.prefix_cache_weight):
            return _NO_ROWS
        first = job.prefix_blocks[0]
        rows = self._holders.get(first)
        if rows is None:
            rows = self._holders[first] = self.index.holding(first)
        return rows

    def view(self, i: int) -> NodeView:
        """Row `i`'s node as this call has changed it (slots taken, backlog added)."""
        view = self.index.views[i]
        if self.slots_free[i] == view.slots_free and self.backlog_s[i] == view.backlog_s:
            return view
        return replace(view, slots_free=int(self.slots_free[i]),
                       backlog_s=float(self.backlog_s[i]))

    def eligible(self, key: FitKey, job: JobRequest, cols: ModelColumns) -> np.ndarray:
        ids = self._eligible.get(key)
        if ids is None:
            index = self.index
            fits = cols.serves & index.healthy & index.serving
            fits &= index.memory_mb >= job.memory_mb
            region_ok = _region_mask(job, index)
            if region_ok is not None:
                fits &= region_ok
            if job.accelerators:
                fits &= self.kind_mask(job.accelerators)
            ids = self._eligible[key] = np.flatnonzero(fits)
        return ids

    def kind_mask(self, kinds: frozenset[str]) -> np.ndarray:
        """Nodes whose accelerator kind is one of `kinds` (a job that names some)."""
        mask = self._kinds.get(kinds)
        if mask is None:
            index = self.index
            mask = np.zeros(len(index.ids), dtype=bool)
            for kind in kinds:
                code = index.kind_code.get(kind)
                if code is not None:
                    mask |= index.gpu_kind == code
            self._kinds[kinds] = mask
        return mask

    def warm(self, model: str, cols: ModelColumns) -> np.ndarray:
        return self._warm.get(model, cols.warm)

    def reserve(self, i: int, job: JobRequest, run_s: float) -> None:
        view = self.index.views[i]
        self.slots_free[i] -= 1
        self.backlog_s[i] = float(self.backlog_s[i]) + run_s / max(view.slots_total, 1)
        cols = self.index.models[job.model]
        if job.model not in self._warm:
            self._warm[job.model] = cols.warm.copy()
        self._warm[job.model][i] = True
        self.verdicts.clear()


def place_indexed(
    jobs: Sequence[JobRequest],
    index: NodeIndex,
    sites: Mapping[str, SiteView],
    now_s: float,
    profile: ScoringProfile,
    catalogue: Mapping[str, ModelSpec],
) -> list[Decision] | None:
    """`place()` with the default filters over an index; None when a number is not finite."""
    index.refresh()
    if not (math.isfinite(now_s) and _finite_profile(profile)):
        return None
    if not all(_finite_job(j) for j in jobs):
        return None
    table = SiteTable.for_index(index, sites)
    if not table.finite:
        return None
    price = table.price_by_site[index.site]  # each node's opportunity price, USD/MWh
    working = _Working(index)
    decisions: list[Decision] = []
    for job in sorted(with_accelerators(jobs, catalogue), key=queue_order):
        try:
            decision = _place_one(job, index, working, price, table, now_s, profile, catalogue)
        except NotFinite:
            return None
        if decision is None:
            return None
        decisions.append(decision)
    return decisions


def _place_one(
    job: JobRequest,
    index: NodeIndex,
    working: _Working,
    price: np.ndarray,
    table: SiteTable,
    now_s: float,
    profile: ScoringProfile,
    catalogue: Mapping[str, ModelSpec],
) -> Decision | None:
    key = fit_key(job.model, job.allowed_regions, job.memory_mb, job.accelerators)
    cols = index.models.get(job.model)
    if cols is None or not index.ids:
        return _unplaceable(job, key, index, working, cols)
    holders = working.holders(job, profile)
    if key in working.fits_nowhere and not holders.size:
        return _unplaceable(job, key, index, working, cols)
    eligible = working.eligible(key, job, cols)
    free = working.slots_free[eligible] > 0
    cand = eligible[free]
    # Nodes that pass every filter but free slots and hold the start of the prompt: the job
    # may wait for one (rules.hold_for_prefix), as the scan decides.
    busy: list[NodeView] = []
    if holders.size:
        rows = np.intersect1d(eligible[~free], holders, assume_unique=True)
        busy = [working.view(int(i)) for i in rows]
    if cand.size == 0:
        working.fits_nowhere.add(key)
        hold = hold_for_prefix(job, busy, None, now_s, profile)
        if hold is not None:
            return hold
        return _unplaceable(job, key, index, working, cols)

    # scores.score, term by term, with the same operations in the same order.
    wait_usd_per_s = profile.wait_usd_per_s[job.tier]
    rate = np.where(cols.learned[cand], cols.rate[cand], profile.default_tokens_per_s)
    run_s = (job.input_tokens + job.output_tokens_est) / np.maximum(rate, MIN_RATE_TOKENS_PER_S)
    mwh = index.marginal_kw[cand] * run_s  # a new array: divided in place below
    mwh /= S_PER_H
    mwh /= KW_PER_MW
    energy = profile.energy_weight * (mwh * price[cand])
    finish_s = (now_s - job.submitted_s) + working.backlog_s[cand]
    finish_s += run_s
    late_s = np.maximum(finish_s - latency_target_s(job, catalogue), 0.0)
    delay = profile.delay_weight * (wait_usd_per_s * finish_s + profile.late_usd_per_s * late_s)
    cold_s = cols.cold_s[cand]
    cold_usd = np.where(np.isnan(cold_s), profile.cold_start_s, cold_s) * wait_usd_per_s
    warmth = profile.warmth_weight * np.where(working.warm(job.model, cols)[cand], 0.0, cold_usd)
    total = energy + delay
    total += warmth
    # The held prefix, only at the free nodes holding it: added last, and only where there is
    # one, as ScoreBreakdown.total_usd adds it.
    held_usd: dict[int, float] = {}
    if holders.size:
        rows = np.intersect1d(cand, holders, assume_unique=True)
        for k_row, i_row in zip(np.searchsorted(cand, rows).tolist(), rows.tolist(), strict=True):
            saved_usd = prefix_usd(job, index.views[i_row], profile)
            if saved_usd:
                total[k_row] += saved_usd
                held_usd[k_row] = saved_usd
    k = int(np.argmin(total))  # the first of the cheapest: the lowest node id among equals
    if math.isnan(total[k]):
        return None
    i = int(cand[k])
    node = index.views[i]
    hold = hold_for_prefix(job, busy, node, now_s, profile)
    if hold is not None:
        return hold
    breakdown = ScoreBreakdown(float(energy[k]), float(delay[k]), float(warmth[k]),
                               held_usd.get(k, 0.0))
    if job.tier is Tier.FLEX and job.deferrable:
        wait = deferral(job, breakdown, table.best_window(job, node, now_s, profile), profile)
        if wait is not None:
            return wait
    working.reserve(i, job, estimated_run_s(job, node, profile))
    return Placement(job.job_id, node.node_id, node.site, node.region, breakdown, int(cand.size))


def _region_mask(job: JobRequest, index: NodeIndex) -> np.ndarray | None:
    if not job.allowed_regions:
        return None
    mask = np.zeros(len(index.ids), dtype=bool)
    for region in job.allowed_regions:
        code = index.region_code.get(region)
        if code is not None:
            mask |= index.region == code
    return mask


def _unplaceable(
    job: JobRequest, key: FitKey, index: NodeIndex, working: _Working, cols: ModelColumns | None
) -> Decision | None:
    known = working.verdicts.get(key)
    if known is None:
        found = _verdicts(job, index, working, cols)
        if found is None:
            return None
        known = working.verdicts[key] = found
    return unplaceable(job, known)


def _verdicts(
    job: JobRequest, index: NodeIndex, working: _Working, cols: ModelColumns | None
) -> tuple[FilterVerdict, ...] | None:
    """One verdict per failing filter, ordered as the scan finds them (None: ask the scan)."""
    n = len(index.ids)
    region_ok = _region_mask(job, index)
    # Where each default filter fails, in DEFAULT_FILTERS order.
    fails = (
        ~cols.serves if cols is not None else np.ones(n, dtype=bool),
        ~region_ok if region_ok is not None else np.zeros(n, dtype=bool),
        ~working.kind_mask(job.accelerators) if job.accelerators else np.zeros(n, dtype=bool),
        index.memory_mb < job.memory_mb,
        ~index.healthy,
        ~index.serving,
        ~(working.slots_free > 0),
    )
    still = np.ones(n, dtype=bool)  # nodes that passed every filter so far
    firsts: list[tuple[int, int]] = []  # (first node where it was the first to fail, filter)
    for k, failed in enumerate(fails):
        hit = still & failed
        if hit.any():
            firsts.append((int(np.argmax(hit)), k))
            still &= ~failed
    verdicts: list[FilterVerdict] = []
    for i, k in sorted(firsts):
        view = index.views[i]
        if working.slots_free[i] != view.slots_free:
            view = replace(view, slots_free=int(working.slots_free[i]))
        verdict = DEFAULT_FILTERS[k](job, view)
        if verdict is None:  # the masks and the filter disagree: let the scan decide
            return None
        verdicts.append(verdict)
    return tuple(verdicts)


def _finite_job(job: JobRequest) -> bool:
    # A sum is finite only if every term is (or it overflowed: then the scan decides, safely).
    return math.isfinite(
        job.input_tokens + job.output_tokens_est + job.submitted_s + job.deadline_s
        + job.memory_mb
    )


def _finite_profile(p: ScoringProfile) -> bool:
    numbers = (
        p.energy_weight, p.delay_weight, p.warmth_weight, p.late_usd_per_s, p.cold_start_s,
        p.default_tokens_per_s, p.defer_min_saving_ratio, p.defer_deadline_margin_s,
        p.prefix_cache_weight, p.prefill_tokens_per_s,
        *p.wait_usd_per_s.values(),
    )
    return math.isfinite(sum(numbers))
