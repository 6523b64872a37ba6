"""What an agent tells the scheduler, as the control loop takes it: decoded by the api edge
(`scheduler/api/agent_codec.py`) from the agent stream's protos, so the loop never reads the wire
format."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.core.scheduler import AttemptKey, NodeInfo


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


AgentEvent = AgentHeartbeat | JobStartedReport | JobProgressReport | JobOutcomeReport
