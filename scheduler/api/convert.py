"""Proto messages <-> core records. The only place that knows both shapes."""

from __future__ import annotations

import hashlib

from google.protobuf.timestamp_pb2 import Timestamp

from hashserve.v1 import jobs_pb2
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.models import Tier

TIER_FROM_PROTO = {
    jobs_pb2.TIER_UNSPECIFIED: Tier.STANDARD,
    jobs_pb2.TIER_INTERACTIVE: Tier.INTERACTIVE,
    jobs_pb2.TIER_STANDARD: Tier.STANDARD,
    jobs_pb2.TIER_FLEX: Tier.FLEX,
}
TIER_TO_PROTO = {
    Tier.INTERACTIVE: jobs_pb2.TIER_INTERACTIVE,
    Tier.STANDARD: jobs_pb2.TIER_STANDARD,
    Tier.FLEX: jobs_pb2.TIER_FLEX,
}
STATE_TO_PROTO = {
    JobState.QUEUED: jobs_pb2.JOB_STATE_QUEUED,
    JobState.ASSIGNED: jobs_pb2.JOB_STATE_ASSIGNED,
    JobState.RUNNING: jobs_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: jobs_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: jobs_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: jobs_pb2.JOB_STATE_CANCELLED,
    JobState.EXPIRED: jobs_pb2.JOB_STATE_EXPIRED,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}


def timestamp(t_s: float) -> Timestamp:
    ts = Timestamp()
    if t_s > 0:
        ts.FromNanoseconds(int(t_s * 1e9))
    return ts


def spec_hash(spec_blob: bytes) -> str:
    # Deterministic serialisation keeps the hash stable for equal specs.
    return hashlib.sha256(spec_blob).hexdigest()


def canonical_spec_blob(spec: jobs_pb2.JobSpec) -> bytes:
    return spec.SerializeToString(deterministic=True)


def job_to_proto(rec: JobRecord, include_result: bool = True) -> jobs_pb2.Job:
    spec = jobs_pb2.JobSpec.FromString(rec.spec_blob)
    job = jobs_pb2.Job(
        id=rec.job_id,
        tenant=rec.tenant,
        spec=spec,
        state=STATE_TO_PROTO[rec.state],
        attempt=rec.attempt,
        site=rec.site,
        node=rec.node_id,
        region=rec.region,
        error=rec.error,
        idempotency_key=rec.idempotency_key,
    )
    if include_result and rec.result_blob:
        job.result.ParseFromString(rec.result_blob)
    t = job.timings
    t.submitted_at.CopyFrom(timestamp(rec.submitted_s))
    if rec.assigned_s:
        t.assigned_at.CopyFrom(timestamp(rec.assigned_s))
        t.queue_ms = (rec.assigned_s - rec.submitted_s) * 1000.0
    if rec.started_s:
        t.started_at.CopyFrom(timestamp(rec.started_s))
    if rec.finished_s:
        t.finished_at.CopyFrom(timestamp(rec.finished_s))
        t.total_ms = (rec.finished_s - rec.submitted_s) * 1000.0
    t.run_ms = rec.run_ms
    t.load_ms = rec.load_ms
    return job
