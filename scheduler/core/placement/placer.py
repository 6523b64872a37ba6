"""Placement: for each queued job, filter the nodes, score the survivors, pick the cheapest.

`place()` is pure: it reads snapshots and returns decisions. It reserves slots only in its own
working copy so that two jobs in one call do not both take a node's last slot; the caller commits
the decisions (journal, then send) and may drop any of them. Ties go to the lower node id so that
a backtest replays exactly.

Flex jobs may be deferred: if a cheaper window is expected before their deadline (with margin) and
the saving beats the profile's threshold, the decision is a `Deferral`. Interactive and standard
jobs never wait for price.

Two ways reach the same decisions: the scan (`scan.py`, every node through every filter in
Python) and the node index (`indexed.py`, the same arithmetic on arrays). `place()` takes either
a list of node views or a `NodeIndex` kept up to date by its owner (`SchedulerCore` keeps one, so
a tick costs what changed, not the fleet); it scans small lists, single jobs given with a list,
custom filter lists, and anything with a number that is not finite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scheduler.core.models import DEFAULT_CATALOGUE, ModelSpec
from scheduler.core.placement.filters import DEFAULT_FILTERS, FilterFn
from scheduler.core.placement.index import NodeIndex
from scheduler.core.placement.indexed import place_indexed
from scheduler.core.placement.rules import TIER_RANK, latency_target_s, queue_order
from scheduler.core.placement.scan import place_by_scan
from scheduler.core.placement.scores import DEFAULT_PROFILE, ScoringProfile
from scheduler.core.placement.types import Decision, JobRequest, NodeView, SiteView

__all__ = ["TIER_RANK", "latency_target_s", "place", "place_by_scan", "queue_order"]

# A list is scanned when it is small or holds one job: building the index costs about what one
# scan costs (bench/placement.py measures both), so it pays from the second job of a call on.
SCAN_BELOW_NODES = 32


def place(
    jobs: Sequence[JobRequest],
    nodes: Sequence[NodeView] | NodeIndex,
    sites: Mapping[str, SiteView],
    now_s: float,
    profile: ScoringProfile = DEFAULT_PROFILE,
    filters: Sequence[FilterFn] = DEFAULT_FILTERS,
    catalogue: Mapping[str, ModelSpec] = DEFAULT_CATALOGUE,
) -> list[Decision]:
    """Decisions for `jobs` in queue order; `nodes` is a list of views or a kept index."""
    default_filters = tuple(filters) == DEFAULT_FILTERS
    if isinstance(nodes, NodeIndex):
        index = nodes
    elif default_filters and len(nodes) >= SCAN_BELOW_NODES and len(jobs) > 1:
        index = NodeIndex(nodes)
    else:
        return place_by_scan(jobs, nodes, sites, now_s, profile, filters, catalogue)
    if default_filters:
        decided = place_indexed(jobs, index, sites, now_s, profile, catalogue)
        if decided is not None:
            return decided
    return place_by_scan(jobs, index.sorted_views(), sites, now_s, profile, filters, catalogue)
