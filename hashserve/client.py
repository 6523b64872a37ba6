"""A small typed client for the customer API, used by the CLI, the demo, tests and benchmarks."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc

from hashserve.v1 import customer_pb2, customer_pb2_grpc, jobs_pb2

CREDENTIALS_FILE = Path("var/hashserve/credentials.env")

TIERS = {
    "interactive": jobs_pb2.TIER_INTERACTIVE,
    "standard": jobs_pb2.TIER_STANDARD,
    "flex": jobs_pb2.TIER_FLEX,
}
STATE_NAMES = {
    v: k.removeprefix("JOB_STATE_").lower() for k, v in jobs_pb2.JobState.items()
}
TIER_NAMES = {v: k for k, v in TIERS.items()}
TERMINAL_STATES = frozenset({jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED,
                             jobs_pb2.JOB_STATE_CANCELLED, jobs_pb2.JOB_STATE_EXPIRED})


def read_credentials(path: Path = CREDENTIALS_FILE) -> dict[str, str]:
    """KEY=VALUE lines written by `hashserve up`."""
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
    return values


def resolve(value: str | None, env: str, default: str | None = None) -> str | None:
    return value or os.environ.get(env) or read_credentials().get(env) or default


def grpc_target(address: str) -> str:
    """A gRPC target for one address or several (`10.0.0.5:50051,10.0.0.6:50051`: the leader
    and its standbys). Several IP addresses become one `ipv4:`/`ipv6:` target, which gRPC's
    pick-first balancer walks: a channel whose scheduler is gone connects to the next that
    listens (a standby listens only once it leads). Several host names cannot share a target:
    give one name whose DNS lists every address instead."""
    parts = [p.strip() for p in address.split(",") if p.strip()]
    if len(parts) <= 1:
        return address.strip()
    hosts = [p.rsplit(":", 1)[0] for p in parts]
    try:
        families = {ipaddress.ip_address(h.strip("[]")).version for h in hosts}
    except ValueError:
        raise ValueError(
            f"{address!r}: several scheduler addresses must be IP:port each; for host names, "
            "give one name whose DNS record lists every scheduler"
        ) from None
    if len(families) != 1:
        raise ValueError(f"{address!r}: mix of IPv4 and IPv6 addresses")
    return f"ipv{families.pop()}:{','.join(parts)}"


class Client:
    def __init__(self, address: str, api_key: str, tls_ca: str | None = None) -> None:
        options = [
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            # A scheduler that stops answering (paused, or its machine gone without a reset)
            # is noticed within 15 s, and the channel moves on to the next address.
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            # A paused scheduler's kernel still accepts the TCP connection, and gRPC would wait
            # 20 s for its HTTP/2 answer before trying the next address: 2 s is plenty on a
            # network where a scheduler answers in milliseconds.
            ("grpc.min_reconnect_backoff_ms", 2_000),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        target = grpc_target(address)
        if tls_ca:
            creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self.channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        self.stub = customer_pb2_grpc.CustomerServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {api_key}"),)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def submit(
        self, spec: jobs_pb2.JobSpec, idempotency_key: str = "", timeout_s: float = 30.0
    ) -> customer_pb2.SubmitJobResponse:
        return await self.stub.SubmitJob(
            customer_pb2.SubmitJobRequest(spec=spec, idempotency_key=idempotency_key),
            metadata=self.metadata,
            timeout=timeout_s,
        )

    async def submit_many(
        self, specs: Iterable[tuple[jobs_pb2.JobSpec, str]], timeout_s: float = 30.0
    ) -> customer_pb2.SubmitJobsResponse:
        reqs = [customer_pb2.SubmitJobRequest(spec=s, idempotency_key=k) for s, k in specs]
        return await self.stub.SubmitJobs(
            customer_pb2.SubmitJobsRequest(jobs=reqs), metadata=self.metadata, timeout=timeout_s
        )

    async def get(self, job_id: str, timeout_s: float = 10.0) -> jobs_pb2.Job:
        return await self.stub.GetJob(
            customer_pb2.GetJobRequest(job_id=job_id), metadata=self.metadata, timeout=timeout_s
        )

    async def watch(self, job_id: str) -> AsyncIterator[customer_pb2.JobEvent]:
        call = self.stub.WatchJob(
            customer_pb2.WatchJobRequest(job_id=job_id), metadata=self.metadata
        )
        async for event in call:
            yield event

    async def wait(self, job_id: str, timeout_s: float = 300.0) -> jobs_pb2.Job:
        """Watch until the job ends; returns its final state, as soon as it arrives (not when
        the stream closes after it)."""
        call = self.stub.WatchJob(
            customer_pb2.WatchJobRequest(job_id=job_id), metadata=self.metadata, timeout=timeout_s
        )
        last: jobs_pb2.Job | None = None
        async for event in call:
            if event.HasField("job"):
                last = event.job
                # The server closes the stream right after; its status adds nothing.
                if last.state in TERMINAL_STATES:
                    return last
        if last is None:
            return await self.get(job_id)
        return last

    async def cancel(self, job_id: str) -> jobs_pb2.Job:
        return await self.stub.CancelJob(
            customer_pb2.CancelJobRequest(job_id=job_id), metadata=self.metadata, timeout=10.0
        )

    async def list_jobs(
        self, page_size: int = 50, page_token: str = "", state: int = 0
    ) -> customer_pb2.ListJobsResponse:
        return await self.stub.ListJobs(
            customer_pb2.ListJobsRequest(
                page_size=page_size,
                page_token=page_token,
                state=jobs_pb2.JobState.ValueType(state),
            ),
            metadata=self.metadata,
            timeout=10.0,
        )

    async def models(self) -> customer_pb2.ListModelsResponse:
        return await self.stub.ListModels(
            customer_pb2.ListModelsRequest(), metadata=self.metadata, timeout=10.0
        )


def embed_spec(
    model: str, texts: list[str], tier: str = "standard", regions: Iterable[str] = ()
) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(
        model=model, embed=jobs_pb2.EmbedInput(texts=texts), tier=TIERS[tier],
        allowed_regions=list(regions),
    )


def generate_spec(
    model: str, prompt: str, max_tokens: int = 32, tier: str = "standard",
    temperature: float = 0.0, regions: Iterable[str] = (),
) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(
        model=model,
        generate=jobs_pb2.GenerateInput(
            prompt=prompt, max_tokens=max_tokens, temperature=temperature
        ),
        tier=TIERS[tier],
        allowed_regions=list(regions),
    )


def job_to_dict(job: jobs_pb2.Job) -> dict[str, object]:
    t = job.timings
    result: dict[str, object] = {}
    if job.result.embeddings:
        result["embeddings"] = [list(e.values) for e in job.result.embeddings]
    if job.result.text or job.result.completion_tokens:
        result["text"] = job.result.text
        result["finish_reason"] = job.result.finish_reason
    result["prompt_tokens"] = job.result.prompt_tokens
    result["completion_tokens"] = job.result.completion_tokens
    return {
        "id": job.id,
        "state": STATE_NAMES.get(job.state, str(job.state)),
        "model": job.spec.model,
        "tier": TIER_NAMES.get(job.spec.tier, "standard"),
        "attempt": job.attempt,
        "site": job.site,
        "node": job.node,
        "region": job.region,
        "error": job.error,
        "result": result,
        "timings": {
            "submitted_at": t.submitted_at.ToJsonString() if t.HasField("submitted_at") else None,
            "finished_at": t.finished_at.ToJsonString() if t.HasField("finished_at") else None,
            "queue_ms": round(t.queue_ms, 3),
            "run_ms": round(t.run_ms, 3),
            "total_ms": round(t.total_ms, 3),
        },
    }
