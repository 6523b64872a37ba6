"""The node agent: dials the scheduler, runs what it is assigned, reports what happened.

One outbound stream per connection. The agent reconnects with exponential backoff and jitter when
the stream breaks; work already running goes on, and its outcomes wait in an outbox until a
scheduler acknowledges them (the scheduler refuses an outcome of an attempt it re-placed, so a
resend can never answer a job twice). Inference runs in worker threads, as many as the agent has
slots; tokens of a generation go up as progress while they come.

Models come and go at run time (`ModelHost`): the scheduler may load or unload one, and a job for
a model that is not loaded waits for its load before it starts (its lease held by heartbeats
meanwhile); its outcome says how long (`load_ms`), apart from the run (`run_ms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from hashserve.logs import log_context
from hashserve.v1 import agent_pb2, agent_pb2_grpc, jobs_pb2
from node_agent.backends.base import Cancelled, GenerateParams
from node_agent.backends.host import ModelHost, ModelLoadError, ModelNotServable
from node_agent.backends.registry import Backend
from node_agent.credentials import CredentialStore, StoredCredential, request_credential
from node_agent.power import SimulatedAsicFleet, SitePowerTarget, job_energy_kwh
from node_agent.settings import AgentSettings
from scheduler.core.clock import SystemClock

log = logging.getLogger("hashserve.agent")
AttemptKey = tuple[str, int]
VERSION = "0.1.0"
DRAIN_TIMEOUT_S = 30.0
_FATAL_CODES = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
)


FAST_RECONNECT_S = 30.0


class StaleLeader(Exception):
    """A message from a scheduler whose leader epoch is below one this agent has met."""


@dataclass
class RunningJob:
    key: AttemptKey
    model: str
    stop: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None


class NodeAgent:
    def __init__(
        self,
        settings: AgentSettings,
        backends: ModelHost | Mapping[str, Backend],
        metrics: Any = None,
    ):
        """`backends`: the node's models, as a `ModelHost` (models load and unload at run time),
        or backends built already (they serve until unloaded)."""
        self.settings = settings
        self.host = backends if isinstance(backends, ModelHost) else ModelHost.of_built(backends)
        self.metrics = metrics
        if metrics is not None and self.host.metrics is None:
            self.host.metrics = metrics
        # Loads the scheduler asked for, kept so that they are not collected mid-load.
        self._load_tasks: set[asyncio.Task[None]] = set()
        # A fixed token, or (None) the enrolled credential in the state directory.
        self.token = settings.resolved_token()
        self.store = CredentialStore(settings.state_dir) if settings.state_dir else None
        self.credential: StoredCredential | None = None
        self._key_pem = b""
        self._cert_pem = b""
        self._rotated = asyncio.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=settings.max_concurrent_jobs, thread_name_prefix="inference"
        )
        self._running: dict[AttemptKey, RunningJob] = {}
        # Outcomes sent but not yet acknowledged; resent after a reconnect.
        self._unacked: dict[AttemptKey, agent_pb2.AgentMessage] = {}
        self._up: asyncio.Queue[agent_pb2.AgentMessage] | None = None
        self._busy_s_in_window = 0.0
        self.connected = asyncio.Event()
        self.jobs_done = 0
        self.draining = False
        self.last_power_mode: agent_pb2.PowerMode | None = None
        self.power_adapter: SimulatedAsicFleet | None = None
        if settings.asic_hashrate_phs > 0:
            self.power_adapter = SimulatedAsicFleet(
                settings.asic_hashrate_phs, settings.asic_efficiency_j_per_th,
                settings.asic_block_mw, settings.asic_ramp_s, SystemClock(),
            )
        self._lost_since: float | None = None
        self.in_fallback = False
        # The scheduler's addresses (leader and standbys): a lost or refused session moves on
        # to the next. The highest leader epoch met fences old leaders out (`StaleLeader`).
        self.addresses = [a.strip() for a in settings.scheduler.split(",") if a.strip()]
        self._address_i = 0
        self.epoch = 0

    @property
    def backends(self) -> dict[str, Backend]:
        """The backends loaded now, by model."""
        return self.host.loaded()

    @property
    def address(self) -> str:
        return self.addresses[self._address_i % len(self.addresses)]

    # ----- connection -----------------------------------------------------------------------

    # ----- credential -----------------------------------------------------------------------

    def _bearer(self) -> str:
        if self.token is not None:
            return self.token
        cred = self.credential
        return cred.token if cred is not None and cred.kind == "token" else ""

    def _use(self, cred: StoredCredential, key_pem: bytes, cert_pem: bytes) -> None:
        self.credential, self._key_pem, self._cert_pem = cred, key_pem, cert_pem

    async def ensure_credential(self, stop: asyncio.Event) -> None:
        """A live credential bound to this agent's id, site and region: the stored one
        (renewed when due), or a new enrollment with the bootstrap token."""
        if self.token is not None or self.store is None:
            return
        s = self.settings
        loaded = self.store.load()
        if loaded is not None:
            cred = loaded[0]
            if not cred.binds(s.agent_id, s.site, s.region):
                log.warning("the stored credential is for %s at %s (%s), not this agent: "
                            "enrolling again", cred.agent_id, cred.site, cred.region)
            elif cred.expires_s <= time.time() + 1:
                log.warning("the stored credential %s has expired: enrolling again",
                            cred.credential_id)
            else:
                self._use(*loaded)
                if time.time() >= cred.renew_at_s:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await self._renew()
                return
        await self._enroll(stop)

    async def _enroll(self, stop: asyncio.Event) -> None:
        s = self.settings
        bootstrap = s.resolved_bootstrap_token()
        if not bootstrap:
            raise SystemExit(
                f"agent {s.agent_id} has no credential in {s.state_dir} and no bootstrap token: "
                "give --bootstrap-token-file (`hashserve admin bootstrap-token --site "
                f"{s.site}`)")
        address = s.enroll_address or self.addresses[0]
        backoff_s = s.backoff_initial_s
        while not stop.is_set():
            try:
                async with self._channel(address, client_cert=False) as channel:
                    got = await request_credential(
                        channel, renew=False, bearer=bootstrap, agent_id=s.agent_id,
                        site=s.site, region=s.region, want_certificate=bool(s.tls_ca))
            except grpc.aio.AioRpcError as err:
                if err.code() in (*_FATAL_CODES, grpc.StatusCode.FAILED_PRECONDITION):
                    raise SystemExit(f"enrollment refused: {err.details()}") from err
                log.info("enrollment at %s failed (%s); trying again", address, err.code().name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), random.uniform(0, backoff_s))
                backoff_s = min(backoff_s * 2, s.backoff_max_s)
                continue
            assert self.store is not None
            self.store.save(*got)
            self._use(*got)
            log.info("enrolled as %s: %s %s until %s", s.agent_id, got[0].kind,
                     got[0].credential_id, time.strftime("%Y-%m-%d %H:%M:%SZ",
                                                         time.gmtime(got[0].expires_s)))
            return

    async def _renew(self) -> None:
        cred = self.credential
        assert cred is not None and self.store is not None
        s = self.settings
        async with self._channel(self.address) as channel:
            got = await request_credential(
                channel, renew=True, bearer=self._bearer(), agent_id=s.agent_id, site=s.site,
                region=s.region, want_certificate=cred.kind == "certificate")
        self.store.save(*got)
        self._use(*got)
        self._rotated.set()
        log.info("renewed %s as %s until %s", cred.credential_id, got[0].credential_id,
                 time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(got[0].expires_s)))

    async def _rotate(self, stop: asyncio.Event) -> None:
        """Renew the credential before it expires, for as long as the agent runs."""
        while not stop.is_set() and self.credential is not None:
            cred = self.credential
            wait_s = max(cred.renew_at_s - time.time(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
            if stop.is_set():
                return
            try:
                await self._renew()
            except Exception as err:
                retry_s = min(60.0, max((cred.expires_s - time.time()) / 10, 1.0))
                log.warning("renewing %s failed (%s); again in %.0f s", cred.credential_id,
                            err, retry_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_s)

    # ----- connection -----------------------------------------------------------------------

    def _channel(self, address: str | None = None, client_cert: bool = True) -> grpc.aio.Channel:
        s = self.settings
        address = address or self.address
        options: list[tuple[str, int | str]] = [
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            # A paused scheduler still accepts TCP: give up on its HTTP/2 answer after 2 s
            # (not gRPC's 20) and move on to the next address.
            ("grpc.min_reconnect_backoff_ms", 2_000),
        ]
        if s.tls_ca:
            key, chain = None, None
            if client_cert and self._cert_pem:
                key, chain = self._key_pem, self._cert_pem  # the enrolled certificate
            elif client_cert and s.tls_cert and s.tls_key:
                key, chain = Path(s.tls_key).read_bytes(), Path(s.tls_cert).read_bytes()
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(s.tls_ca).read_bytes(), private_key=key,
                certificate_chain=chain,
            )
            if s.tls_server_name:
                options.append(("grpc.ssl_target_name_override", s.tls_server_name))
            return grpc.aio.secure_channel(address, creds, options=options)
        return grpc.aio.insecure_channel(address, options=options)

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set; then finish or hand back running work."""
        backoff_s = self.settings.backoff_initial_s
        first = True
        await self.ensure_credential(stop)
        rotation = asyncio.create_task(self._rotate(stop), name="credential-rotation")
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self._session(stop)
            except grpc.aio.AioRpcError as err:
                if err.code() in _FATAL_CODES:
                    log.error("scheduler refused this agent: %s", err.details())
                    raise SystemExit(f"scheduler refused this agent: {err.details()}") from err
                log.info("stream to scheduler ended: %s (%s)", err.code().name, self.address)
                self._next_address()
            except StaleLeader as err:
                log.warning("left an old leader: %s", err)
                self._next_address()
            except Exception:
                log.exception("agent session failed")
            finally:
                self.connected.clear()
                if self.metrics is not None:
                    self.metrics.set_connected(False)
            if stop.is_set():
                break
            self.check_fallback(time.monotonic())
            if time.monotonic() - started > 10.0:
                backoff_s = self.settings.backoff_initial_s  # it was a healthy connection
            # Full jitter keeps a fleet of agents from reconnecting in lockstep. For the first
            # half minute of an outage the wait stays under a second: that is a failover (a
            # standby starts serving within seconds), and every second of it is lost work.
            delay_s = random.uniform(0, backoff_s)
            cap_s = self.settings.backoff_max_s
            lost_since = self._lost_since
            if lost_since is not None and time.monotonic() - lost_since < FAST_RECONNECT_S:
                cap_s = min(cap_s, 1.0)
            backoff_s = min(backoff_s * 2, cap_s)
            if not first and self.metrics is not None:
                self.metrics.reconnected()
            first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)
        rotation.cancel()
        await self._drain()

    def _next_address(self) -> None:
        if len(self.addresses) > 1:
            self._address_i += 1
            log.info("trying scheduler %s next", self.address)

    async def _session(self, stop: asyncio.Event) -> None:
        async with self._channel() as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            bearer = self._bearer()
            call = stub.Connect(
                metadata=(("authorization", f"Bearer {bearer}"),) if bearer else ())
            up: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
            self._up = up
            await call.write(agent_pb2.AgentMessage(hello=self._hello()))
            for msg in list(self._unacked.values()):
                up.put_nowait(msg)
            writer = asyncio.create_task(self._write(call, up))
            beats = asyncio.create_task(self._heartbeats(up))
            stopper = asyncio.create_task(stop.wait())
            # A renewed credential: reconnect with it (the hello re-adopts running work).
            self._rotated.clear()
            rotated = asyncio.create_task(self._rotated.wait())
            reader = asyncio.create_task(self._read(call))
            try:
                done, _ = await asyncio.wait(
                    {writer, reader, stopper, rotated}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task not in (stopper, rotated) and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if stopper in done:
                    await self._drain_connected(up, reader)
            finally:
                self._up = None
                for task in (writer, beats, stopper, rotated, reader):
                    task.cancel()
                call.cancel()

    async def _drain_connected(
        self, up: asyncio.Queue[agent_pb2.AgentMessage], reader: asyncio.Task[None]
    ) -> None:
        """Graceful stop: take no new work, finish what runs, see every outcome acknowledged."""
        self.draining = True
        up.put_nowait(agent_pb2.AgentMessage(heartbeat=self._heartbeat(0.0)))
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while (self._running or self._unacked) and time.monotonic() < deadline:
            if reader.done():
                return
            await asyncio.sleep(0.05)
        if self._running:
            log.warning("handing back %d unfinished jobs", len(self._running))

    async def _write(self, call: Any, up: asyncio.Queue[agent_pb2.AgentMessage]) -> None:
        while True:
            msg = await up.get()
            await call.write(msg)

    async def _read(self, call: Any) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            self._on_message(msg)

    async def _heartbeats(self, up: asyncio.Queue[agent_pb2.AgentMessage]) -> None:
        interval_s = self.settings.heartbeat_s
        while True:
            await asyncio.sleep(interval_s)
            up.put_nowait(agent_pb2.AgentMessage(heartbeat=self._heartbeat(interval_s)))

    def _hello(self) -> agent_pb2.AgentHello:
        s = self.settings
        running = [agent_pb2.AttemptRef(job_id=j, attempt=a) for j, a in self._running]
        running += [
            agent_pb2.AttemptRef(job_id=j, attempt=a)
            for j, a in self._unacked
            if (j, a) not in self._running
        ]
        return agent_pb2.AgentHello(
            agent_id=s.agent_id,
            site=s.site,
            region=s.region,
            gpu_kind=s.gpu_kind,
            gpu_count=s.gpu_count,
            gpu_memory_mb=s.gpu_memory_mb,
            models=self.host.loaded_models(),
            max_concurrent_jobs=s.max_concurrent_jobs,
            running=running,
            version=VERSION,
            idle_power_kw=s.idle_power_kw,
            busy_power_kw=s.busy_power_kw,
            resumable_models=sorted(
                name for name, b in self.host.loaded().items() if getattr(b, "can_resume", False)
            ),
            loadable_models=self.host.loadable_models(),
        )

    def _heartbeat(self, interval_s: float) -> agent_pb2.Heartbeat:
        s = self.settings
        n = len(self._running)
        utilization = min(n / s.max_concurrent_jobs, 1.0)
        power_kw = s.idle_power_kw + (s.busy_power_kw - s.idle_power_kw) * utilization
        if self.metrics is not None:
            self.metrics.set_power(power_kw, utilization)
        host = self.host
        loaded = host.loaded()
        return agent_pb2.Heartbeat(
            running_jobs=n,
            free_slots=max(s.max_concurrent_jobs - n, 0),
            power_draw_kw=power_kw,
            gpu_utilization=utilization,
            running=[agent_pb2.AttemptRef(job_id=j, attempt=a) for j, a in self._running],
            draining=self.draining,
            prefix_blocks=self._prefix_blocks(loaded),
            prefill_tokens_per_s=max(
                (getattr(b, "prefill_tokens_per_s", lambda: 0.0)() for b in loaded.values()),
                default=0.0),
            loaded_models=sorted(loaded),
            loading_models=host.loading_models(),
            load_failures=[
                agent_pb2.ModelLoadFailure(model=model, reason=reason)
                for model, reason in sorted(host.failures().items())
            ],
            load_s=host.load_seconds(),
        )

    @staticmethod
    def _prefix_blocks(loaded: Mapping[str, Backend]) -> list[int]:
        """The prefix block hashes every loaded backend's engine holds now."""
        held: set[int] = set()
        for backend in loaded.values():
            report = getattr(backend, "prefix_blocks", None)
            if report is not None:
                held.update(report())
        return sorted(held)

    def _send(self, msg: agent_pb2.AgentMessage) -> None:
        if self._up is not None:
            self._up.put_nowait(msg)

    # ----- messages down --------------------------------------------------------------------

    def _on_message(self, msg: agent_pb2.SchedulerMessage) -> None:
        if msg.epoch < self.epoch:
            # An old leader, woken after a takeover: it may not assign, cancel or set power.
            raise StaleLeader(
                f"{self.address} sent epoch {msg.epoch}; the leader's is {self.epoch}"
            )
        if msg.epoch > self.epoch:
            if self.epoch:
                log.warning("scheduler leader epoch %d -> %d", self.epoch, msg.epoch)
            self.epoch = msg.epoch
        kind = msg.WhichOneof("msg")
        if kind == "welcome":
            self.connected.set()
            if self.metrics is not None:
                self.metrics.set_connected(True)
            log.info("connected to scheduler as %s", msg.welcome.agent_id)
        elif kind == "assign":
            self._start(msg.assign)
        elif kind == "cancel":
            key = (msg.cancel.ref.job_id, msg.cancel.ref.attempt)
            job = self._running.get(key)
            self._unacked.pop(key, None)
            if job is not None:
                log.info(
                    "cancel %s attempt %d: %s", key[0], key[1], msg.cancel.reason,
                    extra={"job_id": key[0], "attempt": key[1]},
                )
                job.stop.set()
        elif kind == "ack":
            self._unacked.pop((msg.ack.ref.job_id, msg.ack.ref.attempt), None)
            if not msg.ack.accepted:
                log.warning(
                    "scheduler refused outcome of %s attempt %d: %s",
                    msg.ack.ref.job_id, msg.ack.ref.attempt, msg.ack.reason,
                    extra={"job_id": msg.ack.ref.job_id, "attempt": msg.ack.ref.attempt},
                )
        elif kind == "power_mode":
            self._apply_power_mode(msg.power_mode)
        elif kind == "load_model":
            self._load_on_command(msg.load_model.model, msg.load_model.reason)
        elif kind == "unload_model":
            self._unload_on_command(msg.unload_model.model, msg.unload_model.reason)

    def _load_on_command(self, model: str, reason: str) -> None:
        log.info("loading %s: %s", model, reason or "the scheduler asked", extra={"model": model})

        async def load() -> None:
            try:
                await self.host.ensure_loaded(model)
            except (ModelLoadError, ModelNotServable) as err:
                # The heartbeats' load_failures tell the scheduler; this tells the operator.
                log.warning("not loading %s: %s", model, err, extra={"model": model})

        task = asyncio.create_task(load(), name=f"load {model} on command")
        self._load_tasks.add(task)
        task.add_done_callback(self._load_tasks.discard)

    def _unload_on_command(self, model: str, reason: str) -> None:
        log.info("unloading %s: %s", model, reason or "the scheduler asked",
                 extra={"model": model})
        try:
            refused = self.host.unload(model)
        except ModelNotServable as err:
            refused = str(err)
        if refused is not None:
            log.warning("not unloading %s: %s", model, refused, extra={"model": model})

    def _apply_power_mode(self, pm: agent_pb2.PowerMode) -> None:
        previous = self.last_power_mode
        self.last_power_mode = pm
        self._set_fallback(False)
        if self.metrics is not None:
            self.metrics.set_power_mode(pm.mining_mw, pm.ai_mw, pm.curtailed_mw)
        if self.power_adapter is None:
            return
        try:
            target = SitePowerTarget(pm.mining_mw, pm.ai_mw, pm.curtailed_mw)
        except ValueError as err:
            log.warning("ignoring an invalid power mode: %s", err)
            return
        applied = self.power_adapter.apply(target)
        if previous is None or abs(previous.mining_mw - pm.mining_mw) > 1e-6:
            log.info(
                "power mode for %s: mining %.2f MW (%d blocks), AI %.4f MW, curtailed %.2f MW: %s",
                pm.site, applied.mining_mw, applied.blocks_on, pm.ai_mw, applied.curtailed_mw,
                pm.reason,
            )

    def _set_fallback(self, active: bool) -> None:
        if active == self.in_fallback:
            return
        self.in_fallback = active
        if self.metrics is not None:
            self.metrics.set_fallback(active)
        if active and self.power_adapter is not None:
            log.warning(
                "no scheduler for %.0f s: safe local policy, mining stops; AI work finishes",
                self.settings.fallback_hold_s,
            )
            self.power_adapter.apply(SitePowerTarget(0.0, 0.0, self.power_adapter.full_power_mw))

    def check_fallback(self, now_s: float) -> None:
        """Called while disconnected: after the hold time, fall back to the safe local policy."""
        if self.connected.is_set():
            self._lost_since = None
            return
        if self._lost_since is None:
            self._lost_since = now_s
        elif now_s - self._lost_since >= self.settings.fallback_hold_s:
            self._set_fallback(True)

    def _start(self, assign: agent_pb2.Assignment) -> None:
        key = (assign.ref.job_id, assign.ref.attempt)
        if key in self._running or key in self._unacked:
            return  # a repeated assignment after a reconnect
        if self.draining:
            return  # its lease runs out and the scheduler places it elsewhere
        job = RunningJob(key, assign.spec.model)
        self._running[key] = job
        # The task copies this context: its log lines carry the job's ids.
        with log_context(job_id=key[0], attempt=key[1], model=assign.spec.model):
            job.task = asyncio.create_task(self._run_job(job, assign))

    async def _run_job(self, job: RunningJob, assign: agent_pb2.Assignment) -> None:
        ref = assign.ref
        spec = assign.spec
        if self.metrics is not None:
            self.metrics.job_started()
        outcome = agent_pb2.JobOutcome(ref=ref)
        label = "succeeded"
        prompt_tokens = completion_tokens = cached_tokens = 0
        load_s = 0.0
        started: float | None = None  # when the run began, after any load
        try:
            # Held from before the load: an unload cannot take the model from a waiting job.
            with self.host.in_use(spec.model):
                load_from = time.perf_counter()
                try:
                    load_s = await self.host.ensure_loaded(spec.model)
                except ModelLoadError:
                    load_s = time.perf_counter() - load_from
                    raise
                backend = self.host.get(spec.model)
                if backend is None:
                    raise RuntimeError(f"{spec.model} was unloaded before the job could start")
                if job.stop.is_set():
                    raise Cancelled(f"cancelled while {spec.model} loaded")
                self._send(agent_pb2.AgentMessage(started=agent_pb2.JobStarted(ref=ref)))
                started = time.perf_counter()
                prompt_tokens, completion_tokens, cached_tokens = await self._run_backend(
                    job, assign, backend, outcome.result
                )
        except Cancelled:
            label = "cancelled"
        except Exception as err:
            label = "failed"
            log.warning("job %s attempt %d failed: %s", ref.job_id, ref.attempt, err)
            outcome.error = f"{type(err).__name__}: {err}"[:2000]
        run_s = time.perf_counter() - started if started is not None else 0.0
        self._running.pop(job.key, None)
        if self.metrics is not None:
            self.metrics.job_ended(
                spec.model, label, inference_s=run_s if started is not None else None,
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                cached_prompt_tokens=cached_tokens,
            )
        if label == "cancelled" or job.stop.is_set():
            return  # the scheduler has moved on; it wants no outcome
        s = self.settings
        outcome.run_ms = run_s * 1000.0
        outcome.load_ms = load_s * 1000.0
        outcome.energy_kwh = job_energy_kwh(
            s.idle_power_kw, s.busy_power_kw, run_s, share=1.0 / s.max_concurrent_jobs
        )
        msg = agent_pb2.AgentMessage(outcome=outcome)
        self._unacked[job.key] = msg
        self.jobs_done += 1
        self._send(msg)

    async def _run_backend(
        self, job: RunningJob, assign: agent_pb2.Assignment, backend: Any,
        result: jobs_pb2.JobResult,
    ) -> tuple[int, int, int]:
        """Run the job on its backend in a worker thread, filling `result`; the prompt and
        completion tokens it took, and the prompt tokens its engine had kept."""
        ref = assign.ref
        spec = assign.spec
        loop = asyncio.get_running_loop()
        if spec.WhichOneof("input") == "embed":
            out = await loop.run_in_executor(self._pool, backend.embed, list(spec.embed.texts))
            result.embeddings.extend(jobs_pb2.Embedding(values=v) for v in out.vectors)
            result.prompt_tokens = out.prompt_tokens
            return out.prompt_tokens, 0, 0
        # A generation moved here continues after what was streamed already.
        tokens_so_far = assign.resume_tokens if assign.resume_text else 0

        def on_token(text: str) -> None:
            nonlocal tokens_so_far
            tokens_so_far += 1
            loop.call_soon_threadsafe(
                self._send,
                agent_pb2.AgentMessage(
                    progress=agent_pb2.JobProgress(
                        ref=ref, text_delta=text, tokens_so_far=tokens_so_far
                    )
                ),
            )

        g = spec.generate
        params = GenerateParams(
            prompt=g.prompt, max_tokens=g.max_tokens, temperature=g.temperature,
            seed=g.seed, resume_text=assign.resume_text,
            resume_tokens=assign.resume_tokens if assign.resume_text else 0,
            messages=tuple((m.role, m.content) for m in g.messages),
            raw_prompt=g.raw_prompt, stop=tuple(g.stop),
        )
        gen = await loop.run_in_executor(
            self._pool, backend.generate, params, on_token, job.stop.is_set
        )
        result.text, result.finish_reason = gen.text, gen.finish_reason
        result.prompt_tokens = gen.prompt_tokens
        result.completion_tokens = gen.completion_tokens
        result.cached_prompt_tokens = gen.cached_prompt_tokens
        return gen.prompt_tokens, gen.completion_tokens, gen.cached_prompt_tokens

    async def _drain(self, timeout_s: float = 30.0) -> None:
        tasks = [j.task for j in self._running.values() if j.task is not None]
        if tasks:
            log.info("waiting for %d running jobs before exit", len(tasks))
            await asyncio.wait(tasks, timeout=timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.host.shutdown()


@contextlib.contextmanager
def log_agent_exit() -> Iterator[None]:
    """Whatever ends the agent's run leaves a last line saying how."""
    try:
        yield
    except SystemExit as exc:
        log.error("agent exiting: %s", exc.code)
        raise
    except KeyboardInterrupt:
        log.info("agent exiting: interrupted")
        raise
    except BaseException:
        log.exception("agent exiting on an unexpected error")
        raise
    else:
        log.info("agent stopped")
