"""The agent stream's wire format, in one place: intents out encoded, agent messages in decoded.

The control edge decides what to tell an agent (an assignment, a cancel, a power mode, a welcome,
an acknowledgement) and hands the intent here; what an agent says reaches it as the typed events
of `scheduler/control/agent_events.py`. Nothing outside `scheduler/api` reads or builds an agent
message (a layers test keeps it so).
"""

from __future__ import annotations

from hashserve.v1 import agent_pb2, jobs_pb2
from scheduler.api.convert import timestamp
from scheduler.control.agent_events import (
    AgentEvent,
    AgentHeartbeat,
    AgentHello,
    JobOutcomeReport,
    JobProgressReport,
    JobStartedReport,
)
from scheduler.core.capacity import LoadOnNode, UnloadOnNode
from scheduler.core.power_step import SetPowerMode
from scheduler.core.scheduler import Assign, CancelOnNode, ModelsReport, NodeInfo

# What an agent that does not say its power draws (an older agent): a small CPU node.
DEFAULT_IDLE_POWER_KW = 0.3
DEFAULT_BUSY_POWER_KW = 0.7


def decode_hello(hello: agent_pb2.AgentHello) -> AgentHello:
    """A checked hello (agent_service checks it first) as the loop takes it."""
    info = NodeInfo(
        node_id=hello.agent_id,
        site=hello.site,
        region=hello.region,
        gpu_kind=hello.gpu_kind,
        models=frozenset(hello.models),
        memory_mb=int(hello.gpu_memory_mb),
        slots_total=max(int(hello.max_concurrent_jobs), 1),
        idle_power_kw=hello.idle_power_kw or DEFAULT_IDLE_POWER_KW,
        busy_power_kw=hello.busy_power_kw or DEFAULT_BUSY_POWER_KW,
        resumable_models=frozenset(hello.resumable_models),
        loadable_models=frozenset(hello.loadable_models) - frozenset(hello.models),
    )
    return AgentHello(info, tuple((r.job_id, r.attempt) for r in hello.running))


# Prefix block hashes taken from one heartbeat (64 blocks of each of 64 cached prompts).
MAX_PREFIX_BLOCKS = 4096


def decode(msg: agent_pb2.AgentMessage) -> AgentEvent | None:
    """An agent's message after its hello; None for one the loop has no use for (a second
    hello, an empty message)."""
    kind = msg.WhichOneof("msg")
    if kind == "heartbeat":
        hb = msg.heartbeat
        return AgentHeartbeat(
            running=tuple((r.job_id, r.attempt) for r in hb.running),
            free_slots=int(hb.free_slots),
            power_draw_kw=hb.power_draw_kw,
            gpu_utilization=hb.gpu_utilization,
            draining=hb.draining,
            # An agent says what its engines hold; no more than a bounded list is believed.
            prefix_blocks=frozenset(hb.prefix_blocks[:MAX_PREFIX_BLOCKS]),
            prefill_tokens_per_s=(hb.prefill_tokens_per_s
                                  if 0.0 < hb.prefill_tokens_per_s < 1e9 else 0.0),
            models=ModelsReport(
                loaded=frozenset(hb.loaded_models),
                loading=frozenset(hb.loading_models),
                failures={f.model: f.reason[:500] for f in hb.load_failures},
                load_s={m: s for m, s in hb.load_s.items() if 0.0 <= s < 1e6},
            ),
        )
    if kind == "started":
        return JobStartedReport(msg.started.ref.job_id, msg.started.ref.attempt)
    if kind == "progress":
        p = msg.progress
        return JobProgressReport(p.ref.job_id, p.ref.attempt, p.text_delta, int(p.tokens_so_far))
    if kind == "outcome":
        o = msg.outcome
        if o.WhichOneof("outcome") == "result":
            r = o.result
            return JobOutcomeReport(
                o.ref.job_id, o.ref.attempt, r.SerializeToString(), "", o.run_ms, o.energy_kwh,
                int(r.prompt_tokens) + int(r.completion_tokens), int(r.completion_tokens),
                _load_ms(o.load_ms),
            )
        return JobOutcomeReport(
            o.ref.job_id, o.ref.attempt, b"", o.error or "unknown agent error", o.run_ms,
            o.energy_kwh, 0, load_ms=_load_ms(o.load_ms),
        )
    return None


def _load_ms(value: float) -> float:
    return value if 0.0 <= value < 1e9 else 0.0


def load_model(intent: LoadOnNode) -> agent_pb2.SchedulerMessage:
    return agent_pb2.SchedulerMessage(
        load_model=agent_pb2.LoadModel(model=intent.model, reason=intent.reason))


def unload_model(intent: UnloadOnNode) -> agent_pb2.SchedulerMessage:
    return agent_pb2.SchedulerMessage(
        unload_model=agent_pb2.UnloadModel(model=intent.model, reason=intent.reason))


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
