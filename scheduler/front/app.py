"""A front process, assembled; and a supervisor for several of them on one port.

`FrontApp` serves the customers' gRPC API on `port`, and with `http_port` the OpenAI-compatible
HTTP API (`scheduler/front/openai.py`), each with SO_REUSEPORT, so any number of front processes
on a machine share them and the kernel spreads connections over them. It keeps nothing a
restart would lose: submits are acknowledged only once the leader journalled them, and the leader
is found among `scheduler` (its address and its standbys') again after every change.
`run_fronts` starts `processes` of them and starts again any that exits, saying why.

A front's engine (`FrontEngine`) is this Python app or the native front
(`scheduler/front/native/`), which serves the same gRPC API at a fraction of the CPU per call;
`resolve_engine` picks the native one where it is built and nothing it lacks is asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hashserve.client import grpc_target
from hashserve.logs import LogFormat
from scheduler.api.server import build_server, mark_serving, server_credentials
from scheduler.core.models import priced_catalogue
from scheduler.fleet import default_fleet_path, load_fleet
from scheduler.front.batcher import SubmitBatcher
from scheduler.front.metrics import FrontMetrics
from scheduler.front.native import NativeFrontOptions, native_front_binary, require_binary
from scheduler.front.service import FrontCustomerService
from scheduler.metrics.grpc_interceptor import MetricsServerInterceptor
from scheduler.metrics.http_server import MetricsHttpServer, start_metrics_http_server
from scheduler.runtime.app import load_model_catalogue
from scheduler.settings import DEFAULT_REGIONS

if TYPE_CHECKING:
    from scheduler.api.openai.front import HttpServing

log = logging.getLogger("hashserve.front")


class FrontEngine(StrEnum):
    # The native front where it is built and no HTTP port is asked for, else the Python one.
    AUTO = "auto"
    NATIVE = "native"  # gRPC only; validation is left to the leader (it validates anyway)
    PYTHON = "python"  # gRPC and the OpenAI-compatible HTTP API; validates before forwarding


class FrontSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HASHSERVE_FRONT_", extra="ignore")

    # The leader and its standbys (IP:port each, or one DNS name listing them all).
    scheduler: str = "127.0.0.1:50061"
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    processes: int = Field(1, ge=1, le=64)
    # The same catalogue and fleet files as the scheduler's, for validation.
    catalogue_path: str | None = None
    fleet_path: str | None = None
    regions: tuple[str, ...] = DEFAULT_REGIONS
    # Customers' TLS (this front's certificate), and the CA to verify the scheduler with.
    tls_cert: str | None = None
    tls_key: str | None = None
    scheduler_tls_ca: str | None = None
    scheduler_tls_server_name: str | None = None
    # The OpenAI-compatible HTTP API on this port too (-1: none), and the scheduler's own HTTP
    # ports (its `http_port` on the leader and each standby: IP:port or URLs, comma-separated),
    # where the Batch API and usage are passed on.
    http_port: int = Field(-1, ge=-1, le=65535)
    scheduler_http: str = ""
    # Prometheus metrics on this port (-1: none; 0: a free one); with several processes, the
    # i-th (from 0) serves on metrics_port + i.
    metrics_port: int = Field(-1, ge=-1, le=65535)
    max_batch_items: int = Field(256, ge=1, le=1024)
    # How long a keyed submit waits for a leader to answer, across a failover.
    failover_wait_s: float = Field(15.0, ge=0, le=300)
    log_format: LogFormat = LogFormat.TEXT
    engine: FrontEngine = FrontEngine.AUTO


def resolve_engine(s: FrontSettings) -> FrontEngine:
    """NATIVE or PYTHON; ValueError for what the native front cannot serve, NativeFrontError
    where it is asked for and not built."""
    if s.engine is FrontEngine.PYTHON:
        return FrontEngine.PYTHON
    if s.engine is FrontEngine.AUTO:
        native = s.http_port < 0 and native_front_binary() is not None
        return FrontEngine.NATIVE if native else FrontEngine.PYTHON
    if s.http_port >= 0:
        raise ValueError("the native front serves gRPC only: serve the OpenAI-compatible HTTP "
                         "API from a Python front (--engine python), or leave out --http-port")
    require_binary()
    return FrontEngine.NATIVE


def metrics_port_of(s: FrontSettings, process: int = 0) -> int:
    """The metrics port of the `process`-th front (-1: none)."""
    if s.metrics_port < 0:
        return -1
    return s.metrics_port + process if s.metrics_port else 0


def native_options(s: FrontSettings, process: int = 0) -> NativeFrontOptions:
    metrics_port = metrics_port_of(s, process)
    return NativeFrontOptions(
        listen=f"{s.host}:{s.port}", scheduler_target=grpc_target(s.scheduler),
        max_batch_items=s.max_batch_items, failover_wait_s=s.failover_wait_s,
        tls_cert=s.tls_cert, tls_key=s.tls_key, scheduler_tls_ca=s.scheduler_tls_ca,
        scheduler_tls_server_name=s.scheduler_tls_server_name,
        metrics_listen=f"{s.host}:{metrics_port}" if metrics_port >= 0 else None)


def native_command(s: FrontSettings, process: int = 0) -> list[str]:
    """The `process`-th native front's command line for these settings."""
    return native_options(s, process).command(require_binary())


def upstream_channel(s: FrontSettings) -> grpc.aio.Channel:
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ("grpc.max_send_message_length", 8 * 1024 * 1024),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # A standby starts serving within seconds of a leader's loss: look for it every
        # 200 ms to 1 s, not gRPC's default of up to two minutes.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.lb_policy_name", "pick_first"),
    ]
    target = grpc_target(s.scheduler)
    if s.scheduler_tls_ca:
        if s.scheduler_tls_server_name:
            options.append(("grpc.ssl_target_name_override", s.scheduler_tls_server_name))
        creds = grpc.ssl_channel_credentials(Path(s.scheduler_tls_ca).read_bytes())
        return grpc.aio.secure_channel(target, creds, options=options)
    return grpc.aio.insecure_channel(target, options=options)


class FrontApp:
    def __init__(self, settings: FrontSettings) -> None:
        self.settings = settings
        fleet = load_fleet(settings.fleet_path or default_fleet_path())
        self.catalogue = priced_catalogue(load_model_catalogue(settings.catalogue_path),
                                          fleet.tier_prices_usd_per_million_tokens)
        self.regions = frozenset({site.region for site in fleet.sites} | set(settings.regions))
        self.port = 0
        self.http_port = 0
        self.metrics_port = 0
        self.metrics = FrontMetrics()
        self._metrics_http: MetricsHttpServer | None = None
        self._http: HttpServing | None = None
        self._leader_http: Any = None  # LeaderHttp
        self._server: grpc.aio.Server | None = None
        self._upstream: grpc.aio.Channel | None = None
        self.batcher: SubmitBatcher | None = None

    async def start(self) -> int:
        s = self.settings
        self._upstream = upstream_channel(s)
        self.batcher = SubmitBatcher(self._upstream, s.max_batch_items,
                                     failover_wait_s=s.failover_wait_s, metrics=self.metrics)
        service = FrontCustomerService(self._upstream, self.batcher, self.catalogue,
                                       self.regions)
        # Counted only where served: the interceptor costs the Python front CPU on every call.
        counted = [MetricsServerInterceptor(self.metrics.grpc)] if s.metrics_port >= 0 else []
        server, health_servicer = build_server(service, None, None, interceptors=counted,
                                               reuse_port=True)
        if s.metrics_port >= 0:
            self._metrics_http = start_metrics_http_server(self.metrics.registry, s.host,
                                                           s.metrics_port)
            self.metrics_port = self._metrics_http.port
        address = f"{s.host}:{s.port}"
        if s.tls_cert and s.tls_key:
            self.port = server.add_secure_port(address, server_credentials(s.tls_cert, s.tls_key,
                                                                           None))
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind the front to {address}")
        await server.start()
        mark_serving(health_servicer, True)
        self._server = server
        log.info("front serving customers on %s:%d for the scheduler at %s%s", s.host,
                 self.port, s.scheduler,
                 f"; metrics on port {self.metrics_port}" if self._metrics_http else "")
        if s.http_port >= 0:
            await self._start_http()
        return self.port

    async def _start_http(self) -> None:
        import ssl

        from scheduler.api.openai.front import OpenAiFront, start_http
        from scheduler.front.openai import LeaderHttp, RemoteCalls, leader_base_urls

        s = self.settings
        assert self._upstream is not None and self.batcher is not None
        verify: ssl.SSLContext | bool = True
        if s.scheduler_tls_ca:
            verify = ssl.create_default_context(cafile=s.scheduler_tls_ca)
        self._leader_http = LeaderHttp(
            leader_base_urls(s.scheduler_http, tls=bool(s.scheduler_tls_ca)), verify=verify)
        calls = RemoteCalls(self._upstream, self.batcher, self.catalogue, self.regions,
                            failover_wait_s=s.failover_wait_s)
        front = OpenAiFront(calls, self._leader_http.routes)
        self._http = start_http(front.app, s.host, s.http_port, s.tls_cert, s.tls_key,
                                reuse_port=True, name="front-http")
        self.http_port = self._http.port
        log.info("front serving the OpenAI-compatible API on %s://%s:%d/v1",
                 "https" if self._http.tls else "http", s.host, self.http_port)

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._http is not None:
            await self._http.stop()
        if self._leader_http is not None:
            await self._leader_http.close()
        if self._server is not None:
            await self._server.stop(grace_s)
        if self._upstream is not None:
            await self._upstream.close()
        if self._metrics_http is not None:
            self._metrics_http.stop()


async def run_fronts(settings: FrontSettings, command: Callable[[int], Sequence[str]],
                     stop_requested: asyncio.Event) -> None:
    """Supervise `settings.processes` front processes (`command(i)` starts the i-th, of either
    engine) until asked to stop: one that exits is started again, after a pause that grows if
    it keeps failing."""
    procs: dict[int, subprocess.Popen[bytes]] = {}
    starts: dict[int, float] = {}
    backoff_s: dict[int, float] = {}

    def start(i: int) -> None:
        procs[i] = subprocess.Popen(list(command(i)), stdin=subprocess.DEVNULL)
        starts[i] = time.monotonic()
        log.info("front %d started (pid %d)", i, procs[i].pid)

    for i in range(settings.processes):
        start(i)
    try:
        while not stop_requested.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_requested.wait(), 0.5)
            for i, proc in list(procs.items()):
                code = proc.poll()
                if code is None or stop_requested.is_set():
                    continue
                healthy = time.monotonic() - starts[i] > 30
                backoff_s[i] = 0.5 if healthy else min(backoff_s.get(i, 0.25) * 2, 15.0)
                log.error("front %d (pid %d) exited with code %s; starting it again in "
                          "%.1f s", i, proc.pid, code, backoff_s[i])
                await asyncio.sleep(backoff_s[i])
                start(i)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
