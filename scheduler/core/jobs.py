"""Jobs as the core sees them: the spec it decides on and the record it keeps.

The customer's full request (texts, prompt) travels as `spec_blob`, bytes the core never opens:
the edges serialise it for the journal and the agent. The core reads only what it decides on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from scheduler.core.job_states import TERMINAL_STATES, JobState
from scheduler.core.models import ModelKind, Tier
from scheduler.core.placement.types import JobRequest


def charge_usd(value_usd: float, estimated_tokens: int, tokens_used: int) -> float:
    """What a job priced at `value_usd` for `estimated_tokens` earns for the tokens it used: the
    same price per token (what metering and accounting both charge)."""
    if estimated_tokens <= 0 or tokens_used <= 0:
        return 0.0
    return value_usd * tokens_used / estimated_tokens


@dataclass(frozen=True)
class JobSpecData:
    model: str
    kind: ModelKind
    tier: Tier
    input_tokens: int
    output_tokens_est: int
    deadline_s: float
    allowed_regions: frozenset[str] = frozenset()
    memory_mb: int = 0
    value_usd: float = 0.0
    # A generation's prompt as a chain of block hashes (scheduler/core/prefix.py).
    prefix_blocks: tuple[int, ...] = ()


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    tenant: str
    spec: JobSpecData
    spec_blob: bytes
    submitted_s: float
    state: JobState = JobState.QUEUED
    attempt: int = 0
    node_id: str = ""
    site: str = ""
    region: str = ""
    idempotency_key: str = ""
    spec_hash: str = ""
    assigned_s: float = 0.0
    started_s: float = 0.0
    finished_s: float = 0.0
    lease_expires_s: float = 0.0
    not_before_s: float = 0.0  # a flex job deferred for cheaper power waits until then
    error: str = ""
    result_blob: bytes = b""
    run_ms: float = 0.0
    energy_kwh: float = 0.0
    tokens_used: int = 0  # prompt and completion tokens of the answer (what is charged)
    completion_tokens: int = 0  # of `tokens_used`, those generated
    # Its last attempt waited this long for its model to load on the node (a cold start).
    load_ms: float = 0.0
    # Every (node, attempt) this job was given, so a late result can be named in the refusal.
    history: tuple[str, ...] = field(default=())

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def evolve(self, **changes: object) -> JobRecord:
        """A copy with `changes`. `dataclasses.replace` builds the copy through `__init__`,
        about ten times slower, and the core evolves a record at every change of state; the
        record has no `__post_init__`, so copying its fields is the same thing."""
        unknown = changes.keys() - _RECORD_FIELDS
        if unknown:
            raise TypeError(f"JobRecord has no field {sorted(unknown)[0]!r}")
        new = object.__new__(JobRecord)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def charged_usd(self, tokens_used: int) -> float:
        """What the job earns for the tokens it actually used (prompt and completion).

        `value_usd` was priced at admission on the estimate (its input plus `max_tokens`), at the
        tier's price per token; the same price applies to what was really produced, which is
        usually less (a generation stops early).
        """
        return charge_usd(
            self.spec.value_usd, self.spec.input_tokens + self.spec.output_tokens_est, tokens_used
        )

    def as_request(self) -> JobRequest:
        s = self.spec
        return JobRequest(
            job_id=self.job_id,
            model=s.model,
            tier=s.tier,
            input_tokens=s.input_tokens,
            output_tokens_est=s.output_tokens_est,
            submitted_s=self.submitted_s,
            deadline_s=s.deadline_s,
            allowed_regions=s.allowed_regions,
            memory_mb=s.memory_mb,
            value_usd=s.value_usd,
            deferrable=self.not_before_s == 0.0,
            prefix_blocks=s.prefix_blocks,
        )


_RECORD_FIELDS = frozenset(f.name for f in fields(JobRecord))
