"""The scheduler process, assembled: journal, control loop, gRPC services, metrics.

`SchedulerApp` is what a Ray actor hosts (and what tests may run in-process). It recovers its jobs
from the journal on start, so a restart after a crash carries on where the journal left off.
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1.health import HealthServicer

from scheduler.api.agent_service import AgentService
from scheduler.api.auth import Authenticator
from scheduler.api.customer_service import CustomerService
from scheduler.api.server import build_server, mark_serving, server_credentials
from scheduler.control.loop import ControlLoop
from scheduler.control.observe import MetricsObserver
from scheduler.core.clock import Clock, SystemClock
from scheduler.core.models import DEFAULT_CATALOGUE
from scheduler.core.scheduler import SchedulerPolicy
from scheduler.journal import open_journal
from scheduler.metrics.grpc_interceptor import GrpcServerMetrics, MetricsServerInterceptor
from scheduler.metrics.http_server import MetricsHttpServer, start_metrics_http_server
from scheduler.metrics.registry import SchedulerMetrics
from scheduler.settings import SchedulerSettings

log = logging.getLogger("hashserve.scheduler")


class SchedulerApp:
    def __init__(self, settings: SchedulerSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.journal = open_journal(settings.journal_url)
        self.auth = Authenticator(self.journal)
        if settings.admin_key:
            self.auth.create_tenant("admin")
            self.auth.ensure_api_key(settings.admin_key, "admin", admin=True)
        if settings.agent_token:
            self.auth.ensure_agent_token(settings.agent_token, "*")
        policy = SchedulerPolicy(
            lease_s=settings.lease_s,
            disconnect_grace_s=settings.disconnect_grace_s,
            recovery_grace_s=settings.recovery_grace_s,
        )
        self.loop = ControlLoop(
            self.journal,
            DEFAULT_CATALOGUE,
            settings.regions,
            self.clock,
            policy=policy,
            tick_s=settings.tick_s,
        )
        self.metrics = SchedulerMetrics(models=DEFAULT_CATALOGUE)
        self.loop.observers.append(MetricsObserver(self.metrics, DEFAULT_CATALOGUE))
        self.port = 0
        self.metrics_port = 0
        self._metrics_http: MetricsHttpServer | None = None
        self._server: grpc.aio.Server | None = None
        self._health: HealthServicer | None = None

    async def start(self) -> int:
        await self.loop.start()
        server, health_servicer = build_server(
            CustomerService(self.loop, self.auth),
            AgentService(self.loop, self.auth),
            None,
            interceptors=[MetricsServerInterceptor(GrpcServerMetrics(self.metrics.registry))],
        )
        address = f"{self.settings.host}:{self.settings.port}"
        if self.settings.tls_cert and self.settings.tls_key:
            creds = server_credentials(
                self.settings.tls_cert, self.settings.tls_key, self.settings.tls_client_ca
            )
            self.port = server.add_secure_port(address, creds)
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind the scheduler to {address}")
        await server.start()
        mark_serving(health_servicer, True)
        self._server, self._health = server, health_servicer
        if self.settings.metrics_port >= 0:
            self._metrics_http = start_metrics_http_server(
                self.metrics.registry, self.settings.host, self.settings.metrics_port
            )
            self.metrics_port = self._metrics_http.port
            log.info("metrics on %s:%d", self.settings.host, self.metrics_port)
        log.info("scheduler serving on %s:%d", self.settings.host, self.port)
        return self.port

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._health is not None:
            mark_serving(self._health, False)
        await self.loop.stop()
        if self._server is not None:
            await self._server.stop(grace_s)
        if self._metrics_http is not None:
            self._metrics_http.stop()
        self.journal.close()
