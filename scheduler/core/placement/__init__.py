"""Where a job is placed: filter the nodes, score the survivors in USD, pick the cheapest.

Entry point: `place(jobs, nodes, sites, now_s) -> list[Decision]` (a Placement, Deferral, Hold
or Unplaceable per job), where
`nodes` is a list of `NodeView`s or a `NodeIndex` its owner keeps up to date.
"""

from scheduler.core.placement.index import NodeIndex
from scheduler.core.placement.placer import place, place_by_scan, queue_order
from scheduler.core.placement.scores import DEFAULT_PROFILE, ScoringProfile
from scheduler.core.placement.types import (
    Decision,
    Deferral,
    Hold,
    JobRequest,
    NodeView,
    Placement,
    PriceOutlook,
    ScoreBreakdown,
    SiteView,
    StatusCode,
    Unplaceable,
)

__all__ = [
    "DEFAULT_PROFILE",
    "Decision",
    "Deferral",
    "Hold",
    "JobRequest",
    "NodeIndex",
    "NodeView",
    "Placement",
    "PriceOutlook",
    "ScoreBreakdown",
    "ScoringProfile",
    "SiteView",
    "StatusCode",
    "Unplaceable",
    "place",
    "place_by_scan",
    "queue_order",
]
