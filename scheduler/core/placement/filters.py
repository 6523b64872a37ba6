"""Filter plugins: may this job run on this node at all?

Each filter answers None (passes) or a `FilterVerdict` saying why not and whether that can change
(UNSCHEDULABLE: wait; UNRESOLVABLE: it never will, as the fleet stands).
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.core.placement.types import FilterVerdict, JobRequest, NodeView, StatusCode

FilterFn = Callable[[JobRequest, NodeView], FilterVerdict | None]

# What the default filters read of a job: its model, allowed regions, memory and accelerator
# kinds. Jobs alike in these are refused by the same nodes, so one verdict serves them all.
FitKey = tuple[str, frozenset[str], int, frozenset[str]]


def fit_key(model: str, allowed_regions: frozenset[str], memory_mb: int,
            accelerators: frozenset[str] = frozenset()) -> FitKey:
    return (model, allowed_regions, memory_mb, accelerators)


def model_served(job: JobRequest, node: NodeView) -> FilterVerdict | None:
    if job.model in node.models:
        return None
    return FilterVerdict("model_served", StatusCode.UNRESOLVABLE, f"no node serves {job.model}")


def region_allowed(job: JobRequest, node: NodeView) -> FilterVerdict | None:
    if not job.allowed_regions or node.region in job.allowed_regions:
        return None
    allowed = ",".join(sorted(job.allowed_regions))
    return FilterVerdict(
        "region_allowed", StatusCode.UNRESOLVABLE, f"no node serves it in regions {allowed}"
    )


def accelerator_allowed(job: JobRequest, node: NodeView) -> FilterVerdict | None:
    if not job.accelerators or node.gpu_kind in job.accelerators:
        return None
    kinds = ",".join(sorted(job.accelerators))
    return FilterVerdict(
        "accelerator_allowed", StatusCode.UNRESOLVABLE,
        f"{job.model} runs only on accelerator kinds {kinds}",
    )


def memory_fits(job: JobRequest, node: NodeView) -> FilterVerdict | None:
    if job.memory_mb <= node.memory_mb:
        return None
    return FilterVerdict(
        "memory_fits", StatusCode.UNRESOLVABLE, f"needs {job.memory_mb} MB of accelerator memory"
    )


def node_healthy(job: JobRequest, node: NodeView) -> FilterVerdict | None:
    if node.healthy:
        return None
    return FilterVerdict("node_healthy", StatusCode.UNSCHEDULABLE, "nodes unhealthy")


def node_serving(job: JobRequest, node: NodeView) -> FilterVerdict | None:
    if node.serving:
        return None
    return FilterVerdict(
        "node_serving", StatusCode.UNSCHEDULABLE, "nodes draining, disconnected or curtailed"
    )


def has_capacity(job: JobRequest, node: NodeView) -> FilterVerdict | None:
    if node.slots_free > 0:
        return None
    return FilterVerdict("has_capacity", StatusCode.UNSCHEDULABLE, "all slots busy")


# Order matters only for the reason reported: the most permanent reasons first.
DEFAULT_FILTERS: tuple[FilterFn, ...] = (
    model_served,
    region_allowed,
    accelerator_allowed,
    memory_fits,
    node_healthy,
    node_serving,
    has_capacity,
)
