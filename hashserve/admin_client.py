"""A small typed client for the operators' API (`hashserve.v1.AdminService`).

Used by the operators' CLI (`hashserve sites`, `hashserve market`, `hashserve admin ...`) and the
integration tests. Every call sends `authorization: Bearer <admin key>`; the server decides what
the key may do. This module only shapes requests: argument checks that need no server live in
the CLI, and the server validates everything again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from hashserve.client import grpc_target, resolve
from hashserve.v1 import admin_pb2, admin_pb2_grpc

ADMIN_KEY_ENV = "HASHSERVE_ADMIN_KEY"
DEFAULT_TIMEOUT_S = 15.0


def resolve_admin_key(admin_key: str | None) -> str | None:
    """--admin-key, else env HASHSERVE_ADMIN_KEY, else var/hashserve/credentials.env."""
    return resolve(admin_key, ADMIN_KEY_ENV)


def to_timestamp(t_s: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(t_s * 1e9))
    return ts


class AdminClient:
    def __init__(
        self,
        address: str,
        admin_key: str,
        tls_ca: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        target = grpc_target(address)  # one address, or the leader's and its standbys'
        if tls_ca:
            creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self.channel = grpc.aio.secure_channel(target, creds)
        else:
            self.channel = grpc.aio.insecure_channel(target)
        self.stub = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {admin_key}"),) if admin_key else ()
        )
        self.timeout_s = timeout_s

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----- sites, nodes, market -----------------------------------------------------------------

    async def sites(self) -> admin_pb2.ListSitesResponse:
        return await self.stub.ListSites(
            admin_pb2.ListSitesRequest(), metadata=self.metadata, timeout=self.timeout_s
        )

    async def site(self, name: str) -> admin_pb2.Site:
        """One site from ListSites (KeyError when the fleet has none of that name)."""
        for site in (await self.sites()).sites:
            if site.name == name:
                return site
        raise KeyError(name)

    async def nodes(self, site: str = "") -> admin_pb2.ListNodesResponse:
        return await self.stub.ListNodes(
            admin_pb2.ListNodesRequest(site=site), metadata=self.metadata, timeout=self.timeout_s
        )

    async def market(self) -> admin_pb2.Market:
        return await self.stub.GetMarket(
            admin_pb2.GetMarketRequest(), metadata=self.metadata, timeout=self.timeout_s
        )

    async def set_price(self, zone: str, price_usd_per_mwh: float) -> admin_pb2.Market:
        return await self._set_market(
            admin_pb2.SetMarketValueRequest(zone=zone, price_usd_per_mwh=price_usd_per_mwh)
        )

    async def set_btc(
        self, btc_usd: float = 0.0, hashprice_usd_per_phs_day: float = 0.0
    ) -> admin_pb2.Market:
        """0 leaves a value unchanged."""
        return await self._set_market(
            admin_pb2.SetMarketValueRequest(
                btc_usd=btc_usd, hashprice_usd_per_phs_day=hashprice_usd_per_phs_day
            )
        )

    async def clear_market(self) -> admin_pb2.Market:
        return await self._set_market(admin_pb2.SetMarketValueRequest(clear=True))

    async def _set_market(self, request: admin_pb2.SetMarketValueRequest) -> admin_pb2.Market:
        return await self.stub.SetMarketValue(
            request, metadata=self.metadata, timeout=self.timeout_s
        )

    # ----- overrides ----------------------------------------------------------------------------

    async def set_mode(self, site: str, mode: str, cap_mw: float = 0.0) -> admin_pb2.Site:
        """mode: auto, curtail, mine or serve; cap_mw 0: no ops cap."""
        return await self.stub.SetSiteOverride(
            admin_pb2.SetSiteOverrideRequest(site=site, mode=mode, cap_mw=cap_mw),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def curtail(
        self, site: str, start_s: float, end_s: float, reason: str = "",
        max_load_mw: float = 0.0,
    ) -> admin_pb2.Site:
        """A demand-response window, Unix seconds (the scheduler's clock); the site's load stays
        at or under `max_load_mw` (0: nothing) during it."""
        return await self.stub.ScheduleCurtailment(
            admin_pb2.ScheduleCurtailmentRequest(
                site=site, start=to_timestamp(start_s), end=to_timestamp(end_s), reason=reason,
                max_load_mw=max_load_mw,
            ),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def curtailments(self, site: str = "") -> admin_pb2.ListCurtailmentsResponse:
        return await self.stub.ListCurtailments(
            admin_pb2.ListCurtailmentsRequest(site=site),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def cancel_curtailment(self, window_id: str) -> admin_pb2.Site:
        return await self.stub.CancelCurtailment(
            admin_pb2.CancelCurtailmentRequest(id=window_id),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def drain(self, node_id: str) -> admin_pb2.Node:
        return await self.stub.DrainNode(
            admin_pb2.DrainNodeRequest(node_id=node_id),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def resume(self, node_id: str) -> admin_pb2.Node:
        return await self.stub.ResumeNode(
            admin_pb2.ResumeNodeRequest(node_id=node_id),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def set_model(self, node_id: str, model: str, loaded: bool) -> admin_pb2.Node:
        return await self.stub.SetNodeModel(
            admin_pb2.SetNodeModelRequest(node_id=node_id, model=model, loaded=loaded),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    # ----- tenants and credentials --------------------------------------------------------------

    async def create_tenant(
        self, name: str, max_queued_jobs: int = 0, submits_per_second: float = 0.0
    ) -> admin_pb2.Tenant:
        """0: the server's defaults."""
        return await self.stub.CreateTenant(
            admin_pb2.CreateTenantRequest(
                name=name, max_queued_jobs=max_queued_jobs, submits_per_second=submits_per_second
            ),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def create_key(self, tenant: str, admin: bool = False) -> admin_pb2.CreateApiKeyResponse:
        return await self.stub.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(tenant=tenant, admin=admin),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def revoke_key(self, key_id: str) -> admin_pb2.RevokeApiKeyResponse:
        return await self.stub.RevokeApiKey(
            admin_pb2.RevokeApiKeyRequest(key_id=key_id),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    # ----- agent credentials --------------------------------------------------------------------

    async def agent_token(
        self, agent_id: str, site: str = "", region: str = "", ttl_s: float = 0.0
    ) -> admin_pb2.CreateAgentTokenResponse:
        """A per-agent token bound to agent id, site and region ("": the fleet's region for the
        site); ttl_s 0: the scheduler's agent_credential_ttl_s."""
        return await self.stub.CreateAgentToken(
            admin_pb2.CreateAgentTokenRequest(
                agent_id=agent_id, site=site, region=region, ttl_s=ttl_s
            ),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def bootstrap_token(
        self, site: str, region: str = "", agent_ids: Sequence[str] = (), ttl_s: float = 0.0,
        uses: int = 0,
    ) -> admin_pb2.CreateBootstrapTokenResponse:
        """A token that can only enroll agents of `site` (of `agent_ids`, when given); ttl_s 0:
        one hour; uses 0: single-use."""
        return await self.stub.CreateBootstrapToken(
            admin_pb2.CreateBootstrapTokenRequest(
                site=site, region=region, agent_ids=list(agent_ids), ttl_s=ttl_s, uses=uses
            ),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def agent_credentials(
        self, agent_id: str = "", include_revoked: bool = False, include_expired: bool = False
    ) -> admin_pb2.ListAgentCredentialsResponse:
        return await self.stub.ListAgentCredentials(
            admin_pb2.ListAgentCredentialsRequest(
                agent_id=agent_id, include_revoked=include_revoked,
                include_expired=include_expired,
            ),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    async def revoke_agent(
        self, credential_id: str = "", agent_id: str = ""
    ) -> admin_pb2.RevokeAgentCredentialResponse:
        """One of: a credential id, or an agent id (all its live credentials). Its open stream
        is closed at once."""
        return await self.stub.RevokeAgentCredential(
            admin_pb2.RevokeAgentCredentialRequest(credential_id=credential_id, agent_id=agent_id),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )

    # ----- usage and accounting -----------------------------------------------------------------

    async def usage(
        self, tenant: str = "", start_s: float | None = None, end_s: float | None = None,
        hourly: bool = False,
    ) -> admin_pb2.GetUsageResponse:
        """Metered usage of jobs that finished in [start_s, end_s), wall-clock time."""
        request = admin_pb2.GetUsageRequest(tenant=tenant, hourly=hourly)
        if start_s is not None:
            request.start.CopyFrom(to_timestamp(start_s))
        if end_s is not None:
            request.end.CopyFrom(to_timestamp(end_s))
        return await self.stub.GetUsage(request, metadata=self.metadata, timeout=self.timeout_s)

    async def accounting(
        self, site: str = "", start_s: float | None = None, end_s: float | None = None
    ) -> admin_pb2.GetAccountingResponse:
        """Rows whose hour starts in [start_s, end_s), on the market's timeline (see the CLI)."""
        request = admin_pb2.GetAccountingRequest(site=site)
        if start_s is not None:
            request.start.CopyFrom(to_timestamp(start_s))
        if end_s is not None:
            request.end.CopyFrom(to_timestamp(end_s))
        return await self.stub.GetAccounting(
            request, metadata=self.metadata, timeout=self.timeout_s
        )
