"""What an agent tells the scheduler, as the control loop takes it: decoded by the api edge
(`scheduler/api/agent_codec.py`) from the agent stream's protos, so the loop never reads the wire
format."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scheduler.core.scheduler import AttemptKey, ModelsReport, NodeInfo


class AgentRefusal(StrEnum):
    """What an agent (or something posing as one) was refused, for `hashserve_agent_refused_total`.
    """

    CREDENTIAL = "credential"  # no, unknown, expired or revoked credential
    BOOTSTRAP = "bootstrap"  # a bootstrap token used for anything but enrolling
    IDENTITY = "identity"  # a hello naming an agent, site or region its credential does not bind
    ENROLLMENT = "enrollment"  # an enrollment or renewal refused
    NOT_ITS_JOB = "not_its_job"  # a start, progress or outcome for an attempt not placed on it


@dataclass(frozen=True)
class AgentHello:
    info: NodeInfo
    running: tuple[AttemptKey, ...]  # work it still does from before a reconnect


@dataclass(frozen=True)
class AgentHeartbeat:
    running: tuple[AttemptKey, ...]
    free_slots: int
    power_draw_kw: float
    gpu_utilization: float
    draining: bool
    prefix_blocks: frozenset[int] = frozenset()
    prefill_tokens_per_s: float = 0.0
    models: ModelsReport | None = None  # what its engines hold, load, failed to load


@dataclass(frozen=True)
class JobStartedReport:
    job_id: str
    attempt: int


@dataclass(frozen=True)
class JobProgressReport:
    job_id: str
    attempt: int
    text_delta: str
    tokens_so_far: int


@dataclass(frozen=True)
class JobOutcomeReport:
    job_id: str
    attempt: int
    result_blob: bytes  # the serialized JobResult; empty with an error
    error: str
    run_ms: float
    energy_kwh: float
    tokens: int  # prompt and completion tokens the agent reports
    completion_tokens: int = 0  # of which generated (the rest read from the prompt)
    load_ms: float = 0.0  # its model loading on the node first (a cold start)


AgentEvent = AgentHeartbeat | JobStartedReport | JobProgressReport | JobOutcomeReport
