"""Messages to agents, encoded: the control loop emits intents, this turns them into protos.

The control edge decides what to tell an agent (an assignment, a cancel, a power mode, a welcome,
an acknowledgement) and hands the intent here; nothing outside `scheduler/api` builds an agent
message, so the wire format has one home (a layers test keeps it so).
"""

from __future__ import annotations

from hashserve.v1 import agent_pb2, jobs_pb2
from scheduler.api.convert import timestamp
from scheduler.core.power_step import SetPowerMode
from scheduler.core.scheduler import Assign, CancelOnNode


def assignment(
    intent: Assign, spec_blob: bytes, resume_text: str = "", resume_tokens: int = 0
) -> agent_pb2.SchedulerMessage:
    return agent_pb2.SchedulerMessage(
        assign=agent_pb2.Assignment(
            ref=agent_pb2.AttemptRef(job_id=intent.job_id, attempt=intent.attempt),
            spec=jobs_pb2.JobSpec.FromString(spec_blob),
            lease_expires_at=timestamp(intent.lease_expires_s),
            resume_text=resume_text,
            resume_tokens=resume_tokens,
        )
    )


def cancel(intent: CancelOnNode) -> agent_pb2.SchedulerMessage:
    return agent_pb2.SchedulerMessage(
        cancel=agent_pb2.CancelAssignment(
            ref=agent_pb2.AttemptRef(job_id=intent.job_id, attempt=intent.attempt),
            reason=intent.reason,
        )
    )


def power_mode(mode: SetPowerMode) -> agent_pb2.SchedulerMessage:
    return agent_pb2.SchedulerMessage(
        power_mode=agent_pb2.PowerMode(
            site=mode.site,
            mining_mw=mode.mining_mw,
            ai_mw=mode.ai_mw,
            curtailed_mw=mode.curtailed_mw,
            reason=mode.reason,
        )
    )


def welcome(agent_id: str, heartbeat_interval_ms: int, lease_ms: int) -> agent_pb2.SchedulerMessage:
    return agent_pb2.SchedulerMessage(
        welcome=agent_pb2.Welcome(
            agent_id=agent_id, heartbeat_interval_ms=heartbeat_interval_ms, lease_ms=lease_ms
        )
    )


def outcome_ack(
    job_id: str, attempt: int, accepted: bool, reason: str
) -> agent_pb2.SchedulerMessage:
    return agent_pb2.SchedulerMessage(
        ack=agent_pb2.OutcomeAck(
            ref=agent_pb2.AttemptRef(job_id=job_id, attempt=attempt),
            accepted=accepted,
            reason=reason,
        )
    )
