"""What the chaos tests drive the real system with.

- `InProcessScheduler`: the very `SchedulerApp` the Ray actor hosts, run on its own event loop in
  a thread of the test process (no Ray: fast to start, and its core can be inspected).
- `WireAgent`: an agent spoken by hand over the real agent protocol, for the messages a real
  agent never sends (another agent's job, a stale attempt) and for exact timing.
- `customer_stub`: a customer channel that reconnects quickly after the scheduler comes back.
- `SteadyLoad`: submits at a steady rate, each submit retried with its idempotency key until it is
  acknowledged, as a careful customer would while the scheduler is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from hashserve.local import Credentials, bootstrap_credentials
from hashserve.v1 import agent_pb2, agent_pb2_grpc, customer_pb2, customer_pb2_grpc, jobs_pb2
from scheduler.api.agent_identity import AgentIdentities
from scheduler.api.auth import Authenticator
from scheduler.journal.sqlite import SqliteJournal
from scheduler.runtime.app import SchedulerApp
from scheduler.settings import SchedulerSettings

T = TypeVar("T")
EMBED = "all-minilm-l6-v2"
GEN = "smollm2-135m-instruct"

# Codes a customer retries a submit on: the scheduler is down, restarting, or busy.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    }
)
CHANNEL_OPTIONS = [
    # The default reconnect backoff grows to two minutes; a customer of a scheduler that
    # restarts in seconds wants to find it again in about a second.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def bearer(secret: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {secret}"),)


def customer_stub(address: str) -> tuple[grpc.aio.Channel, customer_pb2_grpc.CustomerServiceStub]:
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return channel, customer_pb2_grpc.CustomerServiceStub(channel)


def embed_spec(
    text: str, tier: jobs_pb2.Tier = jobs_pb2.TIER_STANDARD, regions: tuple[str, ...] = ()
) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(
        model=EMBED, embed=jobs_pb2.EmbedInput(texts=[text]), tier=tier,
        allowed_regions=list(regions),
    )


def gen_spec(
    prompt: str, max_tokens: int, tier: jobs_pb2.Tier = jobs_pb2.TIER_STANDARD
) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(
        model=GEN,
        generate=jobs_pb2.GenerateInput(prompt=prompt, max_tokens=max_tokens, temperature=0.0),
        tier=tier,
    )


def llm_installed() -> bool:
    from node_agent.backends.registry import SMOLLM2_SPEC, default_backend_specs

    return SMOLLM2_SPEC in default_backend_specs()


def issue_key(journal_path: Path, tenant: str, max_queued_jobs: int = 10_000,
              rate: float = 200.0) -> str:
    """A new tenant and key, written into the running scheduler's journal (WAL: two writers
    take turns); the scheduler reads keys and tenants from the journal."""
    journal = SqliteJournal(journal_path)
    try:
        auth = Authenticator(journal)
        auth.create_tenant(tenant, max_queued_jobs, rate)
        return auth.issue_api_key(tenant)[1]
    finally:
        journal.close()


def issue_agent_token(journal_path: Path, agent_id: str, site: str = "wire-site",
                      region: str = "north_america") -> str:
    """A per-agent token bound to `agent_id`, `site` and `region` (WireAgent's defaults)."""
    journal = SqliteJournal(journal_path)
    try:
        identities = AgentIdentities(journal, time.time, {}, frozenset())
        return identities.issue_token(agent_id, site, region).token
    finally:
        journal.close()


# ----- the scheduler in this process ----------------------------------------------------------


class InProcessScheduler:
    """`SchedulerApp` on a private event loop in a daemon thread; `call` runs work on it."""

    def __init__(
        self, workdir: Path, credentials: Credentials | None = None, **overrides: object
    ) -> None:
        """A fresh journal in `workdir` with new credentials, or, with `credentials`, the
        journal already there (a restart)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.journal_path = workdir / "journal.db"
        self.credentials: Credentials = credentials or bootstrap_credentials(self.journal_path)
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": 0,
            "journal_url": f"sqlite:///{self.journal_path}",
            "metrics_port": -1,
            "agent_token": self.credentials.agent_token,
            "admin_key": self.credentials.admin_key,
        }
        values.update(overrides)
        self.settings = SchedulerSettings(**values)  # type: ignore[arg-type]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="scheduler-loop", daemon=True
        )
        self.app: SchedulerApp | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> InProcessScheduler:
        self._thread.start()

        async def boot() -> int:
            self.app = SchedulerApp(self.settings)
            return await self.app.start()

        self.port = self.call(boot())
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def on_loop(self, fn: Callable[[SchedulerApp], T], timeout_s: float = 30.0) -> T:
        """Run `fn(app)` on the scheduler's own loop (its state is not thread-safe)."""

        async def go() -> T:
            assert self.app is not None
            return fn(self.app)

        return self.call(go(), timeout_s)

    def stop(self) -> None:
        if self.app is not None:
            with contextlib.suppress(Exception):
                self.call(self.app.stop(0.5))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> InProcessScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----- an agent spoken by hand --------------------------------------------------------------


@dataclass
class WireAgent:
    """One AgentService.Connect stream driven message by message."""

    address: str
    token: str
    agent_id: str
    site: str = "wire-site"
    region: str = "north_america"
    models: tuple[str, ...] = (EMBED,)
    slots: int = 1
    running: tuple[tuple[str, int], ...] = ()
    # TLS (the agents' mTLS port): the channel's credentials, with the client certificate.
    tls: grpc.ChannelCredentials | None = None
    # What this agent says it runs: started() adds, outcome() removes; heartbeats list it.
    holding: set[tuple[str, int]] = field(default_factory=set)
    _up: asyncio.Queue[agent_pb2.AgentMessage | None] = field(default_factory=asyncio.Queue)
    _channel: grpc.aio.Channel | None = None
    _call: Any = None
    _beats: asyncio.Task[None] | None = None

    def hello(self) -> agent_pb2.AgentMessage:
        return agent_pb2.AgentMessage(
            hello=agent_pb2.AgentHello(
                agent_id=self.agent_id, site=self.site, region=self.region, gpu_kind="cpu",
                gpu_count=1, gpu_memory_mb=16_384, models=list(self.models),
                max_concurrent_jobs=self.slots, version="wire",
                running=[agent_pb2.AttemptRef(job_id=j, attempt=a) for j, a in self.running],
            )
        )

    async def connect(self, first: agent_pb2.AgentMessage | None = None) -> None:
        """Open the stream and send `first` (default: the hello)."""
        if self.tls is not None:
            self._channel = grpc.aio.secure_channel(self.address, self.tls,
                                                    options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        self._up.put_nowait(first if first is not None else self.hello())

        async def requests() -> Any:
            while True:
                msg = await self._up.get()
                if msg is None:
                    return
                yield msg

        self._call = stub.Connect(requests(), metadata=bearer(self.token) if self.token else ())

    def send(self, msg: agent_pb2.AgentMessage) -> None:
        self._up.put_nowait(msg)

    def started(self, job_id: str, attempt: int) -> None:
        self.holding.add((job_id, attempt))
        ref = agent_pb2.AttemptRef(job_id=job_id, attempt=attempt)
        self.send(agent_pb2.AgentMessage(started=agent_pb2.JobStarted(ref=ref)))

    def outcome(self, job_id: str, attempt: int, text: str = "wire result") -> None:
        self.holding.discard((job_id, attempt))
        ref = agent_pb2.AttemptRef(job_id=job_id, attempt=attempt)
        result = jobs_pb2.JobResult(text=text, completion_tokens=2, finish_reason="stop")
        self.send(
            agent_pb2.AgentMessage(
                outcome=agent_pb2.JobOutcome(ref=ref, result=result, run_ms=1.0)
            )
        )

    def heartbeat(self) -> None:
        refs = [agent_pb2.AttemptRef(job_id=j, attempt=a) for j, a in sorted(self.holding)]
        self.send(
            agent_pb2.AgentMessage(
                heartbeat=agent_pb2.Heartbeat(
                    running_jobs=len(refs), free_slots=max(self.slots - len(refs), 0),
                    running=refs,
                )
            )
        )

    def beat(self, interval_s: float = 0.5) -> None:
        """Heartbeat in the background, as a live agent does, until closed."""

        async def loop() -> None:
            while True:
                self.heartbeat()
                await asyncio.sleep(interval_s)

        self._beats = asyncio.create_task(loop())

    async def recv(self, timeout_s: float = 10.0) -> agent_pb2.SchedulerMessage:
        msg = await asyncio.wait_for(self._call.read(), timeout_s)
        if msg is grpc.aio.EOF:
            raise EOFError("the scheduler ended the stream")
        return msg  # type: ignore[no-any-return]

    async def recv_kind(self, kind: str, timeout_s: float = 10.0) -> agent_pb2.SchedulerMessage:
        """The next message of `kind` ('assign', 'ack', 'cancel', ...), skipping others."""
        deadline = time.monotonic() + timeout_s
        while True:
            msg = await self.recv(max(deadline - time.monotonic(), 0.01))
            if msg.WhichOneof("msg") == kind:
                return msg

    async def close(self) -> None:
        if self._beats is not None:
            self._beats.cancel()
        self._up.put_nowait(None)
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()

    async def status(self) -> grpc.StatusCode:
        """The stream's final status (after the scheduler ended it)."""
        return await self._call.code()  # type: ignore[no-any-return]


# ----- load ---------------------------------------------------------------------------------


@dataclass
class SteadyLoad:
    """Submits `rate_per_s` jobs a second; each retried with its key until acknowledged."""

    address: str
    api_key: str
    make_spec: Callable[[int], jobs_pb2.JobSpec]
    rate_per_s: float
    key_prefix: str = "load"
    acked: dict[str, str] = field(default_factory=dict)  # key -> job id
    first_try_s: dict[str, float] = field(default_factory=dict)  # key -> wall time
    retries: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # non-retryable codes seen
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    async def run(self, duration_s: float, stop: asyncio.Event | None = None) -> None:
        channel, stub = customer_stub(self.address)
        tasks: list[asyncio.Task[None]] = []
        try:
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < duration_s and not (stop and stop.is_set()):
                due = t0 + n / self.rate_per_s
                await asyncio.sleep(max(due - time.monotonic(), 0))
                i = next(self._counter)
                tasks.append(asyncio.create_task(self._submit(stub, i)))
                n += 1
            await asyncio.gather(*tasks)
        finally:
            await channel.close()

    async def _submit(self, stub: customer_pb2_grpc.CustomerServiceStub, i: int) -> None:
        key = f"{self.key_prefix}-{i}"
        spec = self.make_spec(i)
        self.first_try_s[key] = time.time()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                resp = await stub.SubmitJob(
                    customer_pb2.SubmitJobRequest(spec=spec, idempotency_key=key),
                    metadata=bearer(self.api_key),
                    timeout=5,
                )
                self.acked[key] = resp.job.id
                return
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE:
                    self.refused[err.code().name] = self.refused.get(err.code().name, 0) + 1
                    return
                self.retries += 1
                await asyncio.sleep(0.3)
        raise AssertionError(f"{key} was never acknowledged in 180 s")


async def wait_serving(address: str, timeout_s: float = 90.0) -> None:
    """Until the scheduler at `address` answers its health check with SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError):
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"scheduler at {address} not serving within {timeout_s} s")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]
