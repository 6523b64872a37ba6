"""What the placer reads (job requests, node and site views) and what it decides.

All frozen: a decision can be journalled, replayed and explained ("why did job X go to site Y")
without reference to the objects it was computed from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from scheduler.core.models import Tier


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    model: str
    tier: Tier
    input_tokens: int
    output_tokens_est: int
    submitted_s: float
    deadline_s: float
    allowed_regions: frozenset[str] = frozenset()
    memory_mb: int = 0
    # What the customer pays for it; bounds what the job may spend on energy and waiting.
    value_usd: float = 0.0
    # A flex job waits for cheaper power once: when its window comes it runs. Deferring again
    # and again on a rolling forecast would chain waits up to the deadline.
    deferrable: bool = True
    # The accelerator kinds its model may run on (the catalogue's); empty: any. A job that
    # leaves it empty is given its model's by `place()` (`rules.with_accelerators`).
    accelerators: frozenset[str] = frozenset()
    # Its prompt's prefix as a chain of block hashes (scheduler/core/prefix.py).
    prefix_blocks: tuple[int, ...] = ()


@dataclass(frozen=True)
class NodeView:
    node_id: str
    site: str
    region: str
    models: frozenset[str]
    memory_mb: int
    slots_free: int
    slots_total: int
    serving: bool  # connected, not draining, and its site's plan lets AI run
    healthy: bool
    idle_power_kw: float = 0.3
    busy_power_kw: float = 0.7
    # Learned per model from the jobs this node ran; absent: the model's reference rate.
    tokens_per_s: Mapping[str, float] = field(default_factory=dict)
    warm_models: frozenset[str] = frozenset()
    # Seconds of already-assigned work ahead of a new job on one slot (learned estimate).
    backlog_s: float = 0.0
    # The accelerator kind its agent reported in its hello ("cpu" for a CPU node, as the
    # agent's own default), matched against a job's `accelerators`.
    gpu_kind: str = "cpu"
    # The prefix block hashes its engines hold (its last heartbeat's).
    prefix_blocks: frozenset[int] = frozenset()
    # How fast its engines evaluate prompts (tokens/s; 0: not known, the profile's rate).
    prefill_tokens_per_s: float = 0.0
    # Seconds each model took to load here, the last time (absent: the profile's cold start).
    cold_start_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PriceOutlook:
    """The expected opportunity price in a later window (never perfect foresight in live use)."""

    start_s: float
    opportunity_price_usd_per_mwh: float


@dataclass(frozen=True)
class SiteView:
    site: str
    region: str
    price_usd_per_mwh: float = 0.0
    opportunity_price_usd_per_mwh: float = 0.0
    # Expected opportunity prices ahead, cheapest first or in time order; used to defer flex work.
    outlook: tuple[PriceOutlook, ...] = ()


class StatusCode(str, Enum):
    # May fit later (a node frees a slot, a site stops curtailing): keep the job queued.
    UNSCHEDULABLE = "unschedulable"
    # Can never fit as the fleet stands (model not served in any allowed region): tell the customer.
    UNRESOLVABLE = "unresolvable"


@dataclass(frozen=True)
class FilterVerdict:
    plugin: str
    code: StatusCode
    reason: str


@dataclass(frozen=True)
class ScoreBreakdown:
    """The expected cost of running the job on a node, in USD, term by term (lower is better)."""

    energy_usd: float
    delay_usd: float
    warmth_usd: float
    prefix_usd: float = 0.0  # the waiting a held prompt prefix saves (<= 0)

    @property
    def total_usd(self) -> float:
        total = self.energy_usd + self.delay_usd + self.warmth_usd
        # Added only when there is one: the index's totals stay bit-identical to the scan's.
        return total + self.prefix_usd if self.prefix_usd else total


@dataclass(frozen=True)
class Placement:
    job_id: str
    node_id: str
    site: str
    region: str
    score: ScoreBreakdown
    candidates: int  # nodes that passed every filter


@dataclass(frozen=True)
class Deferral:
    job_id: str
    until_s: float
    expected_saving_usd: float
    reason: str


@dataclass(frozen=True)
class Unplaceable:
    job_id: str
    code: StatusCode
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Hold:
    """Wait for a busy node whose engine holds the start of the job's prompt: its slot is
    expected to free sooner than the prefill the held prefix saves (a free node would redo it).
    The job stays queued, unjournaled, and is placed again when a node changes or at the tick."""

    job_id: str
    node_id: str
    expected_wait_s: float
    saved_s: float


Decision = Placement | Deferral | Unplaceable | Hold
