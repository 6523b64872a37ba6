"""The scheduler process, assembled: journal, control loop, gRPC services, metrics.

`SchedulerApp` is what a Ray actor hosts (and what tests may run in-process). It recovers its jobs
from the journal on start, so a restart after a crash carries on where the journal left off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1.health import HealthServicer

from scheduler.api.admin_service import AdminService
from scheduler.api.admission import AdmissionLimits
from scheduler.api.agent_identity import AgentCa, AgentIdentities, is_loopback_host
from scheduler.api.agent_service import AgentEnrollmentService, AgentService
from scheduler.api.auth import Authenticator
from scheduler.api.customer_service import CustomerService
from scheduler.api.intake_service import IntakeService
from scheduler.api.server import build_server, mark_serving, server_credentials
from scheduler.control.loop import ControlLoop
from scheduler.control.observe import MetricsObserver
from scheduler.control.power import PowerController
from scheduler.core.clock import Clock, SystemClock
from scheduler.core.fleet import Fleet
from scheduler.core.market import DEFAULT_MARKET_LIMITS
from scheduler.core.models import ModelSpec, Tier, priced_catalogue
from scheduler.feeds.http_json import HttpJsonFeed
from scheduler.feeds.layered import LayeredFeed
from scheduler.feeds.live import PolledSource, hashprice_index, live_sources
from scheduler.feeds.ops import OpsFeed
from scheduler.feeds.replay import ReplayFeed
from scheduler.fleet import (
    default_catalogue_path,
    default_fleet_path,
    load_catalogue,
    load_fleet,
)
from scheduler.journal import open_journal
from scheduler.journal.base import Journal
from scheduler.metrics.grpc_interceptor import GrpcServerMetrics, MetricsServerInterceptor
from scheduler.metrics.http_server import MetricsHttpServer, start_metrics_http_server
from scheduler.metrics.registry import SchedulerMetrics
from scheduler.runtime.leader import Leadership, holder_id
from scheduler.settings import SchedulerSettings

if TYPE_CHECKING:
    from scheduler.api.openai.front import HttpServing

log = logging.getLogger("hashserve.scheduler")
# On losing the lease, calls in flight get this long to send their (UNAVAILABLE) answers.
STEP_DOWN_GRACE_S = 0.3


@dataclass
class MarketFeeds:
    ops: OpsFeed
    replay: ReplayFeed
    http: HttpJsonFeed | None
    layered: LayeredFeed
    live: list[PolledSource] = field(default_factory=list)
    hashprice_index: PolledSource | None = None

    @property
    def polled(self) -> list[PolledSource]:
        """Every source with a polling thread to start and stop."""
        return [*self.live, *([self.hashprice_index] if self.hashprice_index else [])]


def build_market_feed(settings: SchedulerSettings, fleet: Fleet, clock: Clock) -> MarketFeeds:
    """Ops values over an HTTP endpoint and live sources (when configured) over the replay of
    shipped history."""
    speedup = settings.market_speedup
    limits = DEFAULT_MARKET_LIMITS.scaled(speedup)
    zones = sorted(fleet.price_zones)
    fx = dict(fleet.fx_usd_per_unit)
    ops = OpsFeed(zones, fx, limits)
    live = live_sources(settings, zones, clock)
    origin_s = settings.market_replay_origin_s
    start: float | str = settings.market_replay_start
    data_start: str | None = None
    if live:
        # Beside live sources market time is the real time (their prices are the real hour's):
        # the replay lays the shipped history under it from market_replay_start, hour on hour,
        # for the zones and values no live source gives.
        origin_s = math.floor(clock.now_s() / 3600.0) * 3600.0 if origin_s is None else origin_s
        start, data_start = origin_s, settings.market_replay_start
    replay = ReplayFeed(
        start=start,
        data_start=data_start,
        speedup=speedup,
        clock=clock,
        origin_s=origin_s,
        zones=zones,
        fx_usd_per_unit=fx,
        limits=limits,
        loop=settings.market_replay_loop,
    )
    log.info(
        "market: %sreplaying the shipped history from %s at %g s per hour%s",
        "live sources on the real clock, over " if live else "",
        settings.market_replay_start, settings.market_seconds_per_hour,
        f"; it loops back to the start after {replay.loop_span_s / 3600:.0f} market hours "
        "(no live source)" if replay.loop else "; without a loop, prices end with the history",
    )
    http = None
    if settings.market_http_url:
        http = HttpJsonFeed(
            settings.market_http_url,
            settings.market_http_interval_s,
            clock,
            zones=zones,
            fx_usd_per_unit=fx,
            limits=limits,
        )
    sources = [src for src in (ops, http, *live, replay) if src is not None]
    return MarketFeeds(
        ops, replay, http, LayeredFeed(sources, zones, fx, limits), live,
        hashprice_index(settings, clock),
    )


def admission_limits(settings: SchedulerSettings) -> AdmissionLimits:
    return AdmissionLimits(
        max_active_jobs=settings.admission_max_active_jobs,
        max_active_spec_bytes=int(settings.admission_max_active_spec_mib * 2**20),
        tier_share={Tier.INTERACTIVE: 1.0, Tier.STANDARD: settings.admission_standard_share,
                    Tier.FLEX: settings.admission_flex_share},
        burst_s=settings.admission_burst_s,
        default_max_queued_jobs=settings.default_max_queued_jobs,
        default_submits_per_second=settings.default_submits_per_second,
    )


def load_model_catalogue(catalogue_path: str | None) -> dict[str, ModelSpec]:
    """The catalogue file's models (the shipped one's when none is given), said in the log."""
    path = catalogue_path or default_catalogue_path()
    catalogue = load_catalogue(path)
    log.info(
        "catalogue %s: %s", path,
        ", ".join(
            f"{m.name} ({m.kind.value}"
            + (f", on {','.join(sorted(m.accelerators))}" if m.accelerators else "") + ")"
            for m in catalogue.values()
        ),
    )
    return catalogue


def agent_identities(settings: SchedulerSettings, journal: Journal, fleet: Fleet,
                     regions: Sequence[str]) -> AgentIdentities:
    """Agent credentials as configured. The '*' token is refused unless the scheduler listens on
    loopback only; an own agent port needs TLS and the agent CA."""
    s = settings
    ca = None
    if s.agent_ca_cert or s.agent_ca_key:
        if not (s.agent_ca_cert and s.agent_ca_key):
            raise ValueError("agent_ca_cert and agent_ca_key go together")
        ca = AgentCa.from_files(s.agent_ca_cert, s.agent_ca_key)
    if s.agent_port >= 0 and not (s.tls_cert and s.tls_key and ca is not None):
        raise ValueError(
            "the agents' own port (agent_port) is mutual TLS: it needs tls_cert, tls_key, "
            "agent_ca_cert and agent_ca_key (scripts/gen_certs.py makes a set)")
    if s.tls_client_ca and s.agent_port < 0:
        log.warning("tls_client_ca applies to the agents' own port (agent_port) only: the "
                    "customers' port never asks for client certificates")
    if ca is not None and s.agent_port < 0:
        # A certificate is only ever checked on the agents' own port: without one, agents
        # that ask for a certificate are told to take a token instead.
        log.warning("agent_ca_cert/agent_ca_key are used only with agent_port: without it, "
                    "enrolled agents get tokens, not certificates")
        ca = None
    identities = AgentIdentities(
        journal, time.time, {site.name: site.region for site in fleet.sites},
        frozenset(regions), ca, s.agent_credential_ttl_s,
    )
    if s.agent_token:
        if not is_loopback_host(s.host):
            raise ValueError(
                f"HASHSERVE_AGENT_TOKEN (agent_token) may act as any agent, so it is accepted "
                f"only while the scheduler listens on loopback, not on {s.host}: enroll agents "
                "with a bootstrap token instead (`hashserve admin bootstrap-token --site S`, "
                "or bootstrap_token and bootstrap_site in the settings)")
        identities.ensure_any_agent_token(s.agent_token)
    if s.bootstrap_token:
        if not s.bootstrap_site:
            raise ValueError("bootstrap_token needs bootstrap_site: the site it enrolls")
        identities.ensure_bootstrap(s.bootstrap_token, s.bootstrap_site, s.bootstrap_region,
                                    s.bootstrap_agent_ids, s.bootstrap_ttl_s, s.bootstrap_uses)
    return identities


class SchedulerApp:
    def __init__(self, settings: SchedulerSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.journal = open_journal(settings.journal_url, settings.journal_synchronous)
        self.auth = Authenticator(self.journal)
        if settings.admin_key:
            self.auth.create_tenant("admin")
            self.auth.ensure_api_key(settings.admin_key, "admin", admin=True)
        self.fleet = load_fleet(settings.fleet_path or default_fleet_path())
        regions = sorted({s.region for s in self.fleet.sites} | set(settings.regions))
        self.identities = agent_identities(settings, self.journal, self.fleet, regions)
        # The catalogue file's models at the fleet file's list prices (which win where both price
        # a tier): admission prices work with them, as the power step values it and the backtest
        # books it.
        self.catalogue = priced_catalogue(
            load_model_catalogue(settings.catalogue_path),
            self.fleet.tier_prices_usd_per_million_tokens
        )
        priced = self.fleet.tier_prices_usd_per_million_tokens
        not_offered = sorted(set(priced) - set(self.catalogue))
        if not_offered:
            log.warning(
                "the fleet file prices %s, which the catalogue does not offer",
                ", ".join(not_offered),
            )
        self.loop = ControlLoop(
            self.journal,
            self.catalogue,
            regions,
            self.clock,
            policy=settings.scheduler_policy(),
            profile=settings.scoring_profile(),
            tick_s=settings.tick_s,
        )
        self.metrics = SchedulerMetrics(models=self.catalogue)
        self.loop.on_refused = self.metrics.agent_refusal
        self.loop.observers.append(MetricsObserver(self.metrics, self.catalogue))
        self.feeds = build_market_feed(settings, self.fleet, self.clock)
        self.http_feed = self.feeds.http
        self.power = PowerController(
            self.loop,
            self.fleet,
            self.feeds.layered,
            self.clock,
            settings.planner_config(),
            replay=self.feeds.replay,
            interval_s=settings.plan_interval_s,
            ai_value_floor_usd_per_mwh=settings.ai_value_floor_usd_per_mwh,
            window_lead_s=settings.dr_window_lead_s,
            accounting_retention_s=settings.accounting_retention_days * 86_400.0,
            hashprice_index=self.feeds.hashprice_index,
        )
        self.power.metrics = self.metrics
        self.loop.observers.append(self.power)
        self.port = 0
        self.metrics_port = 0
        self._metrics_http: MetricsHttpServer | None = None
        self._server: grpc.aio.Server | None = None
        self._health: HealthServicer | None = None
        self.agent_port = 0  # the agents' mTLS port when they have their own; else `port`
        self._agent_server: grpc.aio.Server | None = None
        self._agent_health: HealthServicer | None = None
        self.http_port = 0
        self._http: HttpServing | None = None
        self._batches: Any = None  # scheduler.api.openai.batches.BatchService
        self.customers: CustomerService | None = None
        self.leadership: Leadership | None = None
        self.stepped_down = asyncio.Event()  # set when the lease is lost; the host then exits
        self.step_down_reason = ""
        self._stepping: asyncio.Future[list[None]] | None = None

    async def start(self) -> int:
        """Wait for the leader lease (a standby serves nothing but its metrics meanwhile), then
        recover from the journal and serve. Returns the gRPC port."""
        s = self.settings
        if s.metrics_port >= 0 and self._metrics_http is None:
            self._metrics_http = start_metrics_http_server(self.metrics.registry, s.host,
                                                           s.metrics_port)
            self.metrics_port = self._metrics_http.port
            log.info("metrics on %s:%d", s.host, self.metrics_port)
        self.metrics.set_leader(False, 0)
        leadership = Leadership(self.journal, holder_id(s.instance_name), s.leader_lease_s,
                                self._step_down)
        self.leadership = leadership
        lease = await leadership.acquire()
        self.loop.epoch = lease.epoch
        self.loop.on_fatal = lambda err: leadership.lost(
            f"a journal write failed after memory changed: {type(err).__name__}: {err}")
        leadership.start_renewing()
        self.metrics.set_leader(True, lease.epoch)
        await self.loop.start()
        saved = self.loop.journal.load_ops_state().get("market:ops")
        if saved is not None:
            try:
                self.feeds.ops.load_json(saved)
            except ValueError as err:
                log.warning("ignoring saved ops market values: %s", err)
        await self.power.start()
        if self.http_feed is not None:
            self.http_feed.start()
        for source in self.feeds.polled:
            source.start()
        self.customers = CustomerService(self.loop, self.auth, admission_limits(self.settings),
                                         max_watches_per_tenant=s.max_watches_per_tenant)
        agents = AgentService(self.loop, self.identities)
        enrollment = AgentEnrollmentService(self.identities, self.loop.refused)
        own_agent_port = s.agent_port >= 0
        interceptors = [MetricsServerInterceptor(GrpcServerMetrics(self.metrics.registry))]
        server, health_servicer = build_server(
            self.customers,
            None if own_agent_port else agents,
            AdminService(self.loop, self.power, self.feeds.ops, self.auth, self.identities),
            interceptors=interceptors,
            enrollment=enrollment,
            intake=IntakeService(self.customers),
        )
        tls = bool(s.tls_cert and s.tls_key)
        self.port = self._bind(server, s.port, tls, ())
        await server.start()
        mark_serving(health_servicer, True)
        self._server, self._health = server, health_servicer
        self.agent_port = self.port
        if own_agent_port:
            # Agents' own port: mutual TLS, the certificate names the agent (Renew is here too).
            agent_server, agent_health = build_server(None, agents, None, interceptors,
                                                      enrollment=enrollment)
            client_cas = [c for c in (s.agent_ca_cert, s.tls_client_ca) if c]
            self.agent_port = self._bind(agent_server, s.agent_port, True, client_cas)
            await agent_server.start()
            mark_serving(agent_health, True)
            self._agent_server, self._agent_health = agent_server, agent_health
            log.info("agents' mutual-TLS port on %s:%d", s.host, self.agent_port)
        if self.settings.http_port >= 0:
            await self._start_http()
        log.info("scheduler serving on %s:%d (epoch %d)", self.settings.host, self.port,
                 lease.epoch)
        return self.port

    def _bind(self, server: grpc.aio.Server, port: int, tls: bool,
              client_cas: Sequence[str]) -> int:
        s = self.settings
        address = f"{s.host}:{port}"
        if tls:
            assert s.tls_cert and s.tls_key
            bound = server.add_secure_port(
                address, server_credentials(s.tls_cert, s.tls_key, client_cas or None))
        else:
            bound = server.add_insecure_port(address)
        if bound == 0:
            raise RuntimeError(f"could not bind the scheduler to {address}")
        return bound

    def _step_down(self, reason: str) -> None:
        """The lease is lost: stop serving at once; the host exits (`stepped_down`) and comes
        back as a standby, recovering from the journal when it leads again."""
        self.step_down_reason = reason
        self.metrics.set_leader(False, self.loop.epoch)
        self.loop.halt()
        for health_servicer in (self._health, self._agent_health):
            if health_servicer is not None:
                mark_serving(health_servicer, False)
        for session in list(self.loop.sessions.values()):
            session.close()
        if self._server is not None:
            servers = [x for x in (self._server, self._agent_server) if x is not None]
            # A moment's grace: calls already answered UNAVAILABLE (the loop's halt fails the
            # submits waiting on the journal) get that answer out, not CANCELLED.
            self._stepping = asyncio.ensure_future(
                asyncio.gather(*(x.stop(STEP_DOWN_GRACE_S) for x in servers)))
        if self._http is not None:
            self._http.server.should_exit = True
        self.stepped_down.set()

    async def _start_http(self) -> None:
        """The OpenAI-compatible front and its Batch API, on their own port, calling this
        process's customer service in-process."""
        from scheduler.api.openai.batches import BatchLimits, BatchService
        from scheduler.api.openai.front import (
            InProcessCalls,
            OpenAiFront,
            add_leader_routes,
            start_http,
        )

        assert self.customers is not None
        s = self.settings
        self._batches = BatchService(
            self.customers, self.journal,
            BatchLimits(max_lines=s.batch_max_lines, max_file_bytes=s.batch_max_file_bytes,
                        in_flight=s.batch_in_flight,
                        retention_s=s.batch_file_retention_days * 86_400.0),
        )
        await self._batches.start()
        calls = InProcessCalls(self.customers)
        front = OpenAiFront(calls, add_leader_routes(calls, self._batches, self.journal))
        # With the gRPC front's certificate, the HTTP front serves HTTPS too.
        self._http = start_http(front.app, s.host, s.http_port, s.tls_cert, s.tls_key,
                                reuse_port=False, name="openai-http")
        self.http_port = self._http.port
        log.info("OpenAI-compatible API on %s://%s:%d/v1",
                 "https" if self._http.tls else "http", s.host, self.http_port)

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._http is not None:
            await self._http.stop()
        if self._batches is not None:
            await self._batches.stop()
        if self._health is not None:
            mark_serving(self._health, False)
        await self.power.stop()
        if self.http_feed is not None:
            self.http_feed.stop()
        for source in self.feeds.polled:
            source.stop()
        await self.loop.stop()
        if self._agent_server is not None:
            await self._agent_server.stop(grace_s)
        if self._server is not None:
            await self._server.stop(grace_s)
        if self._metrics_http is not None:
            self._metrics_http.stop()
        if self.leadership is not None:
            # A clean stop lets the lease go, so a standby takes over without waiting it out.
            await self.leadership.stop(release=not self.stepped_down.is_set())
        self.journal.close()
