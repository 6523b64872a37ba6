"""The closed sets of label values the scheduler's metrics accept.

Prometheus stores one time series per distinct label set, so every label here takes its values from
a short fixed list; a value outside the list is a programming error and raises `ValueError` at the
call, where a test catches it, instead of growing the series count in production. Names of things
that grow with the fleet (site, node, model) are bounded by the fleet file and the catalogue, not
here.
"""

from __future__ import annotations

from enum import Enum

from scheduler.core.scheduler import RetryReason
from scheduler.core.serving import ShedCause

TIERS: tuple[str, ...] = ("interactive", "standard", "flex")
# Terminal job states (DESIGN.md "Jobs").
JOB_OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "cancelled", "expired")
# What a site's power is doing; the four add up to what the site draws or could draw.
POWER_USES: tuple[str, ...] = ("mining", "ai", "idle", "curtailed")
REVENUE_SOURCES: tuple[str, ...] = ("mining", "ai")
PLACEMENT_OUTCOMES: tuple[str, ...] = ("placed", "deferred", "held", "unplaceable")
# Why a job's assignment was taken back and the job queued again.
REASSIGN_REASONS: tuple[str, ...] = tuple(r.value for r in RetryReason)
# Why a site shed AI work (preempted it).
SHED_CAUSES: tuple[str, ...] = tuple(c.value for c in ShedCause)
# Label value for a model that is not in the catalogue the metrics were built with.
OTHER_MODEL = "other"


def label_value(value: str | Enum, allowed: tuple[str, ...], what: str) -> str:
    """`value` (a plain string or a str-valued enum such as `Tier.FLEX`) as a checked label."""
    text = value.value if isinstance(value, Enum) else value
    if text not in allowed:
        raise ValueError(f"{what} {text!r} is not one of {', '.join(allowed)}")
    return str(text)
