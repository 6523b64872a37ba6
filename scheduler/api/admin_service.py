"""The admin gRPC service: sites and nodes with their economics, the market, overrides, tenants
and keys. Every call needs an admin key; every change is logged with who made it."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re

import grpc

from hashserve.v1 import admin_pb2, admin_pb2_grpc
from scheduler.api.agent_identity import AgentIdentities
from scheduler.api.agent_service import credential_kind
from scheduler.api.auth import Authenticator, AuthError, Principal
from scheduler.api.convert import timestamp
from scheduler.api.refusal import Refusal
from scheduler.api.validation import InvalidRequest, timestamp_s
from scheduler.control.loop import PIN_KEY, ControlLoop
from scheduler.control.power import PowerController
from scheduler.core.metering import aggregate
from scheduler.core.planner import CurtailmentWindow
from scheduler.feeds.ops import OpsFeed
from scheduler.journal.base import AgentCredentialRow

log = logging.getLogger("hashserve.scheduler.admin")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MODES = ("auto", "curtail", "mine", "serve")
MAX_PRICE_USD_PER_MWH = 20_000.0
MIN_PRICE_USD_PER_MWH = -1_000.0


def _credential(row: AgentCredentialRow) -> admin_pb2.AgentCredential:
    out = admin_pb2.AgentCredential(
        credential_id=row.credential_id, kind=credential_kind(row.kind), agent_id=row.agent_id,
        site=row.site, region=row.region, agent_ids=list(row.agent_ids),
        uses_left=row.uses_left, issued_at=timestamp(row.issued_s), issued_by=row.issued_by,
    )
    if row.expires_s:
        out.expires_at.CopyFrom(timestamp(row.expires_s))
    if row.revoked_s:
        out.revoked_at.CopyFrom(timestamp(row.revoked_s))
    if row.last_used_s:
        out.last_used_at.CopyFrom(timestamp(row.last_used_s))
    return out


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self, loop: ControlLoop, power: PowerController, ops: OpsFeed, auth: Authenticator,
        identities: AgentIdentities,
    ) -> None:
        self.loop = loop
        self.power = power
        self.ops = ops
        self.auth = auth
        self.identities = identities

    async def _admin(self, context: grpc.aio.ServicerContext) -> Principal:
        try:
            return self.auth.admin(context.invocation_metadata())
        except AuthError as err:
            code = (
                grpc.StatusCode.PERMISSION_DENIED
                if "admin key" in str(err)
                else grpc.StatusCode.UNAUTHENTICATED
            )
            await context.abort(code, str(err))
            raise

    async def _site_or_abort(self, context: grpc.aio.ServicerContext, site: str) -> None:
        if site not in {s.name for s in self.power.fleet.sites}:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no site {site[:80]!r} in the fleet")

    # ----- sites, nodes, market ---------------------------------------------------------------

    def site_message(self, name: str) -> admin_pb2.Site:
        spec = self.power.fleet.site(name)
        msg = admin_pb2.Site(
            name=name,
            region=spec.region,
            price_zone=spec.price_zone,
            power_cap_mw=spec.power_cap_mw,
        )
        plan = self.power.plan.sites.get(name) if self.power.plan is not None else None
        if plan is not None:
            price = _finite(plan.price_usd_per_mwh)
            msg.price_usd_per_mwh = price
            msg.r_mine_usd_per_mwh = _finite(plan.r_mine_usd_per_mwh)
            msg.opportunity_price_usd_per_mwh = _finite(plan.opportunity_price_usd_per_mwh)
            msg.mining_mw = plan.mining_mw
            msg.ai_mw = plan.ai_mw
            msg.idle_mw = plan.idle_gpu_mw
            msg.curtailed_mw = plan.curtailed_mw
            msg.mode_reason = "; ".join(plan.reasons)
            msg.feed_fallback = plan.fallback
            msg.profit_usd_per_hour = (
                plan.mining_mw * _finite(plan.r_mine_usd_per_mwh)
                + self.power.ai_revenue_usd_per_hour.get(name, 0.0)
                - plan.load_mw * price
            )
        override = self.power.overrides.get(name)
        if override is not None:
            msg.override = override.force.value if override.force is not None else ""
            msg.override_cap_mw = override.cap_mw or 0.0
        nodes = [n for n in self.loop.core.nodes.values() if n.info.site == name]
        msg.nodes_connected = sum(1 for n in nodes if n.connected)
        msg.jobs_running = sum(len(n.running) for n in nodes)
        msg.curtailments.extend(self._window(s, w) for s, w in self.power.curtailments(name))
        return msg

    def _window(self, site: str, w: CurtailmentWindow) -> admin_pb2.CurtailmentWindow:
        return admin_pb2.CurtailmentWindow(
            id=w.window_id, site=site, start=timestamp(w.start_s), end=timestamp(w.end_s),
            max_load_mw=w.max_load_mw, reason=w.reason,
            active=w.active(self.loop.clock.now_s()),
        )

    async def ListCurtailments(
        self, request: admin_pb2.ListCurtailmentsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListCurtailmentsResponse:
        await self._admin(context)
        if request.site:
            await self._site_or_abort(context, request.site)
        return admin_pb2.ListCurtailmentsResponse(
            windows=[self._window(s, w) for s, w in self.power.curtailments(request.site)]
        )

    async def CancelCurtailment(
        self, request: admin_pb2.CancelCurtailmentRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Site:
        who = await self._admin(context)
        try:
            site = self.power.cancel_curtailment(request.id)
        except KeyError:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no curtailment window {request.id[:80]!r}"
            )
        log.info("curtailment %s of %s cancelled by key %s", request.id, site, who.key_id)
        return self.site_message(site)

    async def ListSites(
        self, request: admin_pb2.ListSitesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListSitesResponse:
        await self._admin(context)
        return admin_pb2.ListSitesResponse(
            sites=[self.site_message(s.name) for s in self.power.fleet.sites],
            as_of=timestamp(self.loop.clock.now_s()),
        )

    async def ListNodes(
        self, request: admin_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListNodesResponse:
        await self._admin(context)
        nodes = []
        for node in sorted(self.loop.core.nodes.values(), key=lambda n: n.info.node_id):
            info = node.info
            if request.site and info.site != request.site:
                continue
            nodes.append(
                admin_pb2.Node(
                    id=info.node_id,
                    site=info.site,
                    region=info.region,
                    gpu_kind=info.gpu_kind,
                    connected=node.connected,
                    draining=node.draining or node.agent_draining,
                    running_jobs=len(node.running),
                    max_concurrent_jobs=info.slots_total,
                    power_draw_kw=node.power_draw_kw,
                    gpu_utilization=node.gpu_utilization,
                    models=sorted(info.servable_models),
                    last_seen=timestamp(node.last_seen_s),
                    loaded_models=sorted(node.loaded_models),
                    loading_models=sorted(node.loading_models),
                    load_s=dict(node.load_s),
                )
            )
        return admin_pb2.ListNodesResponse(nodes=nodes)

    def market_message(self) -> admin_pb2.Market:
        market = self.power.market
        if market is None:
            return admin_pb2.Market()
        zones = []
        for zone in sorted(self.power.fleet.price_zones):
            key = f"price[{zone}]"
            price = market.price_usd_per_mwh_by_zone.get(zone)
            zones.append(
                admin_pb2.ZonePrice(
                    zone=zone,
                    price_usd_per_mwh=_finite(price) if price is not None else 0.0,
                    as_of=timestamp(market.as_of_s.get(key, 0.0)),
                    stale=zone in market.stale_zones or price is None,
                    source=market.sources.get(key, ""),
                )
            )
        return admin_pb2.Market(
            zones=zones,
            btc_usd=_finite(market.btc_usd or 0.0),
            hashprice_usd_per_phs_day=_finite(market.hashprice_usd_per_phs_day or 0.0),
            difficulty=_finite(market.difficulty or 0.0),
            as_of=timestamp(market.market_time_s or market.t_s),
            problems=list(market.problems),
        )

    async def GetMarket(
        self, request: admin_pb2.GetMarketRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Market:
        await self._admin(context)
        return self.market_message()

    async def SetMarketValue(
        self, request: admin_pb2.SetMarketValueRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Market:
        who = await self._admin(context)
        now_s = self.loop.clock.now_s()
        # Check every value before changing any: a refused request changes nothing.
        if not (
            request.clear or request.zone or request.btc_usd or request.hashprice_usd_per_phs_day
        ):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "set zone and price_usd_per_mwh, btc_usd, hashprice_usd_per_phs_day, or clear",
            )
        price = request.price_usd_per_mwh
        if request.zone:
            if request.zone not in self.power.fleet.price_zones:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"no price zone {request.zone[:40]!r}; "
                    f"zones: {', '.join(sorted(self.power.fleet.price_zones))}",
                )
            if not (
                math.isfinite(price) and MIN_PRICE_USD_PER_MWH <= price <= MAX_PRICE_USD_PER_MWH
            ):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"price_usd_per_mwh {price} is outside [{MIN_PRICE_USD_PER_MWH:g}, "
                    f"{MAX_PRICE_USD_PER_MWH:g}]",
                )
        setters = (
            ("btc_usd", request.btc_usd, self.ops.set_btc_usd),
            (
                "hashprice_usd_per_phs_day",
                request.hashprice_usd_per_phs_day,
                self.ops.set_hashprice,
            ),
        )
        for name, value, _ in setters:
            if value and not (math.isfinite(value) and value > 0):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{name} must be a positive number"
                )
        if request.clear:
            self.ops.clear()
        if request.zone:
            self.ops.set_price(request.zone, price, now_s)
        for _, value, setter in setters:
            if value:
                setter(value, now_s)
        # Kept in the journal: a restarted scheduler obeys them until they expire.
        self.loop.journal.put_ops_state("market:ops", self.ops.to_json())
        log.info("market value set by key %s: %s", who.key_id, request)
        self.power.tick(now_s)
        return self.market_message()

    # ----- overrides ----------------------------------------------------------------------------

    async def SetSiteOverride(
        self, request: admin_pb2.SetSiteOverrideRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Site:
        who = await self._admin(context)
        await self._site_or_abort(context, request.site)
        mode = request.mode or "auto"
        if mode not in MODES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"mode {mode[:20]!r} is not one of {MODES}"
            )
        if not math.isfinite(request.cap_mw) or request.cap_mw < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cap_mw must be >= 0")
        self.power.set_override(request.site, mode, request.cap_mw or None)
        log.info(
            "site %s override %s cap %s by key %s", request.site, mode, request.cap_mw, who.key_id
        )
        return self.site_message(request.site)

    async def ScheduleCurtailment(
        self, request: admin_pb2.ScheduleCurtailmentRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Site:
        who = await self._admin(context)
        await self._site_or_abort(context, request.site)
        try:
            start_s = timestamp_s(request.start, "start")
            end_s = timestamp_s(request.end, "end")
        except InvalidRequest as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
        if not request.HasField("start") or not request.HasField("end") or end_s <= start_s:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "give start and end, with end after start"
            )
        if end_s <= self.loop.clock.now_s():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the window is in the past")
        max_load_mw = request.max_load_mw
        if not math.isfinite(max_load_mw) or max_load_mw < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"max_load_mw must be a finite number >= 0, got {max_load_mw}",
            )
        window = self.power.schedule_curtailment(
            request.site, start_s, end_s, request.reason[:200], max_load_mw=max_load_mw
        )
        log.info(
            "curtailment %s of %s %s-%s to %g MW by key %s",
            window.window_id, request.site, start_s, end_s, max_load_mw, who.key_id,
        )
        return self.site_message(request.site)

    async def _drain(
        self, context: grpc.aio.ServicerContext, node_id: str, draining: bool
    ) -> admin_pb2.Node:
        await self._admin(context)
        if node_id not in self.loop.core.nodes:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no node {node_id[:80]!r}")
        # Journalled first: a drain survives a scheduler restart (the node is drained again
        # when it reconnects).
        self.loop.journal.put_ops_state(f"drain:{node_id}", "true" if draining else None)
        self.loop.core.set_draining(node_id, draining)
        self.loop.kick()
        resp = await self.ListNodes(admin_pb2.ListNodesRequest(), context)
        return next(n for n in resp.nodes if n.id == node_id)

    async def DrainNode(
        self, request: admin_pb2.DrainNodeRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Node:
        return await self._drain(context, request.node_id, True)

    async def ResumeNode(
        self, request: admin_pb2.ResumeNodeRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Node:
        return await self._drain(context, request.node_id, False)

    async def SetNodeModel(
        self, request: admin_pb2.SetNodeModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Node:
        await self._admin(context)
        if not request.model:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model is required")
        what = "load" if request.loaded else "unload"
        core = self.loop.core
        problem = core.model_command_problem(request.node_id, request.model, request.loaded)
        if problem is not None:
            code = (grpc.StatusCode.NOT_FOUND if request.node_id not in core.nodes
                    else grpc.StatusCode.FAILED_PRECONDITION)
            await context.abort(code, problem)
        # Journalled first: a pin outlives a scheduler restart, as a drain does.
        pins = sorted(core.pins_after(request.node_id, request.model, request.loaded))
        self.loop.journal.put_ops_state(f"{PIN_KEY}{request.node_id}",
                                        json.dumps(pins) if pins else None)
        step = core.command_model(
            request.node_id, request.model, request.loaded, f"ops asked to {what} it")
        if isinstance(step, str):  # nothing changed between the check and now
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, step)
        else:
            self.loop.apply(step)
        resp = await self.ListNodes(admin_pb2.ListNodesRequest(), context)
        return next(n for n in resp.nodes if n.id == request.node_id)

    # ----- tenants and credentials --------------------------------------------------------------

    async def CreateTenant(
        self, request: admin_pb2.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Tenant:
        await self._admin(context)
        if not NAME_RE.match(request.name):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "tenant name must be 1-63 lowercase letters, digits, '.', '_' or '-'",
            )
        max_queued = request.max_queued_jobs or 10_000
        rate = request.submits_per_second or 200.0
        if not (math.isfinite(rate) and 0 < rate <= 100_000) or max_queued > 10_000_000:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "submits_per_second must be in (0, 100000]; max_queued_jobs at most 10,000,000",
            )
        self.auth.create_tenant(request.name, max_queued, rate)
        return admin_pb2.Tenant(
            name=request.name, max_queued_jobs=max_queued, submits_per_second=rate
        )

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateApiKeyResponse:
        who = await self._admin(context)
        if self.loop.journal.get_tenant(request.tenant) is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no tenant {request.tenant[:63]!r}: create it first (CreateTenant)",
            )
        key_id, key = self.auth.issue_api_key(request.tenant, admin=request.admin)
        log.info("key %s issued for tenant %s by key %s", key_id, request.tenant, who.key_id)
        return admin_pb2.CreateApiKeyResponse(key_id=key_id, api_key=key)

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RevokeApiKeyResponse:
        who = await self._admin(context)
        if not self.auth.revoke_api_key(request.key_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no live key {request.key_id[:40]!r}")
        log.info("key %s revoked by key %s", request.key_id, who.key_id)
        return admin_pb2.RevokeApiKeyResponse()

    async def CreateAgentToken(
        self, request: admin_pb2.CreateAgentTokenRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateAgentTokenResponse:
        who = await self._admin(context)
        try:
            issued = await asyncio.to_thread(
                self.identities.issue_token, request.agent_id, request.site, request.region,
                request.ttl_s, f"admin key {who.key_id}",
            )
        except Refusal as err:
            await context.abort(err.code, err.message)
        log.info("agent token %s for %s (site %s) issued by key %s", issued.row.credential_id,
                 issued.row.agent_id, issued.row.site, who.key_id)
        return admin_pb2.CreateAgentTokenResponse(
            token=issued.token, credential_id=issued.row.credential_id,
            expires_at=timestamp(issued.row.expires_s),
        )

    async def CreateBootstrapToken(
        self, request: admin_pb2.CreateBootstrapTokenRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateBootstrapTokenResponse:
        who = await self._admin(context)
        try:
            issued = await asyncio.to_thread(
                self.identities.issue_bootstrap, request.site, request.region,
                list(request.agent_ids), request.ttl_s, request.uses, f"admin key {who.key_id}",
            )
        except Refusal as err:
            await context.abort(err.code, err.message)
        return admin_pb2.CreateBootstrapTokenResponse(
            token=issued.token, credential_id=issued.row.credential_id,
            expires_at=timestamp(issued.row.expires_s),
        )

    async def ListAgentCredentials(
        self, request: admin_pb2.ListAgentCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListAgentCredentialsResponse:
        await self._admin(context)
        rows = await asyncio.to_thread(
            self.identities.list, request.agent_id, request.include_revoked,
            request.include_expired,
        )
        return admin_pb2.ListAgentCredentialsResponse(credentials=[_credential(r) for r in rows])

    async def RevokeAgentCredential(
        self, request: admin_pb2.RevokeAgentCredentialRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RevokeAgentCredentialResponse:
        who = await self._admin(context)
        if bool(request.credential_id) == bool(request.agent_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "give one of credential_id and agent_id")
        ids, closed = await asyncio.to_thread(
            self.identities.revoke, request.credential_id, request.agent_id)
        if not ids:
            what = request.credential_id or f"agent {request.agent_id}"
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no live credential for {what[:80]!r}")
        log.warning("agent credentials %s revoked by key %s", ", ".join(ids), who.key_id)
        return admin_pb2.RevokeAgentCredentialResponse(revoked=ids, streams_closed=closed)

    async def GetUsage(
        self, request: admin_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetUsageResponse:
        await self._admin(context)
        start_s, end_s = await _time_range(request, context)
        jobs = await asyncio.to_thread(self.loop.journal.metered_jobs, request.tenant, start_s,
                                       end_s)
        rows = []
        for row in aggregate(jobs, hourly=request.hourly):
            out = admin_pb2.UsageRow(
                tenant=row.tenant, model=row.model, tier=row.tier, jobs=row.jobs,
                prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                charged_usd=row.charged_usd,
            )
            if row.hour_start_s is not None:
                out.hour.CopyFrom(timestamp(row.hour_start_s))
            rows.append(out)
        return admin_pb2.GetUsageResponse(rows=rows)

    async def GetAccounting(
        self, request: admin_pb2.GetAccountingRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetAccountingResponse:
        await self._admin(context)
        start_s, end_s = await _time_range(request, context)
        rows = []
        # From the journal: any range within the retention (`accounting_retention_days`).
        for row in self.loop.journal.accounting_rows(request.site, start_s, end_s):
            rows.append(
                admin_pb2.AccountingRow(
                    site=row.site,
                    hour=timestamp(row.hour_start_s),
                    mining_mwh=row.mining_mwh,
                    ai_mwh=row.ai_mwh,
                    idle_mwh=row.idle_mwh,
                    curtailed_mwh=row.curtailed_mwh,
                    mining_revenue_usd=row.mining_revenue_usd,
                    ai_revenue_usd=row.ai_revenue_usd,
                    power_cost_usd=row.power_cost_usd,
                    profit_usd=row.profit_usd,
                )
            )
        return admin_pb2.GetAccountingResponse(rows=rows)


async def _time_range(
    request: admin_pb2.GetUsageRequest | admin_pb2.GetAccountingRequest,
    context: grpc.aio.ServicerContext,
) -> tuple[float, float]:
    """A request's [start, end) in seconds; unset ends are open."""
    try:
        start_s = timestamp_s(request.start, "start") if request.HasField("start") else -math.inf
        end_s = timestamp_s(request.end, "end") if request.HasField("end") else math.inf
    except InvalidRequest as err:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
        raise  # unreachable: abort raises
    return start_s, end_s
