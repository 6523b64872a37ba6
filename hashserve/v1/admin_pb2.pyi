import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from . import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListSitesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Site(_message.Message):
    __slots__ = ("name", "region", "price_zone", "power_cap_mw", "price_usd_per_mwh", "r_mine_usd_per_mwh", "opportunity_price_usd_per_mwh", "mining_mw", "ai_mw", "idle_mw", "curtailed_mw", "mode_reason", "override", "override_cap_mw", "nodes_connected", "jobs_running", "profit_usd_per_hour", "feed_fallback", "curtailments")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PRICE_ZONE_FIELD_NUMBER: _ClassVar[int]
    POWER_CAP_MW_FIELD_NUMBER: _ClassVar[int]
    PRICE_USD_PER_MWH_FIELD_NUMBER: _ClassVar[int]
    R_MINE_USD_PER_MWH_FIELD_NUMBER: _ClassVar[int]
    OPPORTUNITY_PRICE_USD_PER_MWH_FIELD_NUMBER: _ClassVar[int]
    MINING_MW_FIELD_NUMBER: _ClassVar[int]
    AI_MW_FIELD_NUMBER: _ClassVar[int]
    IDLE_MW_FIELD_NUMBER: _ClassVar[int]
    CURTAILED_MW_FIELD_NUMBER: _ClassVar[int]
    MODE_REASON_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_CAP_MW_FIELD_NUMBER: _ClassVar[int]
    NODES_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    JOBS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    PROFIT_USD_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    FEED_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    CURTAILMENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    region: str
    price_zone: str
    power_cap_mw: float
    price_usd_per_mwh: float
    r_mine_usd_per_mwh: float
    opportunity_price_usd_per_mwh: float
    mining_mw: float
    ai_mw: float
    idle_mw: float
    curtailed_mw: float
    mode_reason: str
    override: str
    override_cap_mw: float
    nodes_connected: int
    jobs_running: int
    profit_usd_per_hour: float
    feed_fallback: bool
    curtailments: _containers.RepeatedCompositeFieldContainer[CurtailmentWindow]
    def __init__(self, name: _Optional[str] = ..., region: _Optional[str] = ..., price_zone: _Optional[str] = ..., power_cap_mw: _Optional[float] = ..., price_usd_per_mwh: _Optional[float] = ..., r_mine_usd_per_mwh: _Optional[float] = ..., opportunity_price_usd_per_mwh: _Optional[float] = ..., mining_mw: _Optional[float] = ..., ai_mw: _Optional[float] = ..., idle_mw: _Optional[float] = ..., curtailed_mw: _Optional[float] = ..., mode_reason: _Optional[str] = ..., override: _Optional[str] = ..., override_cap_mw: _Optional[float] = ..., nodes_connected: _Optional[int] = ..., jobs_running: _Optional[int] = ..., profit_usd_per_hour: _Optional[float] = ..., feed_fallback: _Optional[bool] = ..., curtailments: _Optional[_Iterable[_Union[CurtailmentWindow, _Mapping]]] = ...) -> None: ...

class CurtailmentWindow(_message.Message):
    __slots__ = ("id", "site", "start", "end", "max_load_mw", "reason", "active")
    ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    MAX_LOAD_MW_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    id: str
    site: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    max_load_mw: float
    reason: str
    active: bool
    def __init__(self, id: _Optional[str] = ..., site: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_load_mw: _Optional[float] = ..., reason: _Optional[str] = ..., active: _Optional[bool] = ...) -> None: ...

class ListCurtailmentsRequest(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: str
    def __init__(self, site: _Optional[str] = ...) -> None: ...

class ListCurtailmentsResponse(_message.Message):
    __slots__ = ("windows",)
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[CurtailmentWindow]
    def __init__(self, windows: _Optional[_Iterable[_Union[CurtailmentWindow, _Mapping]]] = ...) -> None: ...

class CancelCurtailmentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListSitesResponse(_message.Message):
    __slots__ = ("sites", "as_of")
    SITES_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[Site]
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, sites: _Optional[_Iterable[_Union[Site, _Mapping]]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: str
    def __init__(self, site: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "site", "region", "gpu_kind", "connected", "draining", "running_jobs", "max_concurrent_jobs", "power_draw_kw", "gpu_utilization", "models", "last_seen", "loaded_models", "loading_models", "load_s")
    class LoadSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    GPU_KIND_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_JOBS_FIELD_NUMBER: _ClassVar[int]
    POWER_DRAW_KW_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    LOADING_MODELS_FIELD_NUMBER: _ClassVar[int]
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    id: str
    site: str
    region: str
    gpu_kind: str
    connected: bool
    draining: bool
    running_jobs: int
    max_concurrent_jobs: int
    power_draw_kw: float
    gpu_utilization: float
    models: _containers.RepeatedScalarFieldContainer[str]
    last_seen: _timestamp_pb2.Timestamp
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    loading_models: _containers.RepeatedScalarFieldContainer[str]
    load_s: _containers.ScalarMap[str, float]
    def __init__(self, id: _Optional[str] = ..., site: _Optional[str] = ..., region: _Optional[str] = ..., gpu_kind: _Optional[str] = ..., connected: _Optional[bool] = ..., draining: _Optional[bool] = ..., running_jobs: _Optional[int] = ..., max_concurrent_jobs: _Optional[int] = ..., power_draw_kw: _Optional[float] = ..., gpu_utilization: _Optional[float] = ..., models: _Optional[_Iterable[str]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., loaded_models: _Optional[_Iterable[str]] = ..., loading_models: _Optional[_Iterable[str]] = ..., load_s: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class GetMarketRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ZonePrice(_message.Message):
    __slots__ = ("zone", "price_usd_per_mwh", "as_of", "stale", "source")
    ZONE_FIELD_NUMBER: _ClassVar[int]
    PRICE_USD_PER_MWH_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    zone: str
    price_usd_per_mwh: float
    as_of: _timestamp_pb2.Timestamp
    stale: bool
    source: str
    def __init__(self, zone: _Optional[str] = ..., price_usd_per_mwh: _Optional[float] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stale: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class Market(_message.Message):
    __slots__ = ("zones", "btc_usd", "hashprice_usd_per_phs_day", "difficulty", "as_of", "problems")
    ZONES_FIELD_NUMBER: _ClassVar[int]
    BTC_USD_FIELD_NUMBER: _ClassVar[int]
    HASHPRICE_USD_PER_PHS_DAY_FIELD_NUMBER: _ClassVar[int]
    DIFFICULTY_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    zones: _containers.RepeatedCompositeFieldContainer[ZonePrice]
    btc_usd: float
    hashprice_usd_per_phs_day: float
    difficulty: float
    as_of: _timestamp_pb2.Timestamp
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, zones: _Optional[_Iterable[_Union[ZonePrice, _Mapping]]] = ..., btc_usd: _Optional[float] = ..., hashprice_usd_per_phs_day: _Optional[float] = ..., difficulty: _Optional[float] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class SetMarketValueRequest(_message.Message):
    __slots__ = ("zone", "price_usd_per_mwh", "btc_usd", "hashprice_usd_per_phs_day", "clear")
    ZONE_FIELD_NUMBER: _ClassVar[int]
    PRICE_USD_PER_MWH_FIELD_NUMBER: _ClassVar[int]
    BTC_USD_FIELD_NUMBER: _ClassVar[int]
    HASHPRICE_USD_PER_PHS_DAY_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    zone: str
    price_usd_per_mwh: float
    btc_usd: float
    hashprice_usd_per_phs_day: float
    clear: bool
    def __init__(self, zone: _Optional[str] = ..., price_usd_per_mwh: _Optional[float] = ..., btc_usd: _Optional[float] = ..., hashprice_usd_per_phs_day: _Optional[float] = ..., clear: _Optional[bool] = ...) -> None: ...

class SetSiteOverrideRequest(_message.Message):
    __slots__ = ("site", "mode", "cap_mw")
    SITE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CAP_MW_FIELD_NUMBER: _ClassVar[int]
    site: str
    mode: str
    cap_mw: float
    def __init__(self, site: _Optional[str] = ..., mode: _Optional[str] = ..., cap_mw: _Optional[float] = ...) -> None: ...

class ScheduleCurtailmentRequest(_message.Message):
    __slots__ = ("site", "start", "end", "reason", "max_load_mw")
    SITE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MAX_LOAD_MW_FIELD_NUMBER: _ClassVar[int]
    site: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    reason: str
    max_load_mw: float
    def __init__(self, site: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., max_load_mw: _Optional[float] = ...) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class ResumeNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class SetNodeModelRequest(_message.Message):
    __slots__ = ("node_id", "model", "loaded")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    model: str
    loaded: bool
    def __init__(self, node_id: _Optional[str] = ..., model: _Optional[str] = ..., loaded: _Optional[bool] = ...) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("name", "max_queued_jobs", "submits_per_second")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    SUBMITS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_queued_jobs: int
    submits_per_second: float
    def __init__(self, name: _Optional[str] = ..., max_queued_jobs: _Optional[int] = ..., submits_per_second: _Optional[float] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("name", "max_queued_jobs", "submits_per_second")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    SUBMITS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_queued_jobs: int
    submits_per_second: float
    def __init__(self, name: _Optional[str] = ..., max_queued_jobs: _Optional[int] = ..., submits_per_second: _Optional[float] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant", "admin")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    admin: bool
    def __init__(self, tenant: _Optional[str] = ..., admin: _Optional[bool] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key_id", "api_key")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    api_key: str
    def __init__(self, key_id: _Optional[str] = ..., api_key: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateAgentTokenRequest(_message.Message):
    __slots__ = ("agent_id", "site", "region", "ttl_s")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    site: str
    region: str
    ttl_s: float
    def __init__(self, agent_id: _Optional[str] = ..., site: _Optional[str] = ..., region: _Optional[str] = ..., ttl_s: _Optional[float] = ...) -> None: ...

class CreateAgentTokenResponse(_message.Message):
    __slots__ = ("token", "credential_id", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    credential_id: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., credential_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateBootstrapTokenRequest(_message.Message):
    __slots__ = ("site", "region", "agent_ids", "ttl_s", "uses")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    site: str
    region: str
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    ttl_s: float
    uses: int
    def __init__(self, site: _Optional[str] = ..., region: _Optional[str] = ..., agent_ids: _Optional[_Iterable[str]] = ..., ttl_s: _Optional[float] = ..., uses: _Optional[int] = ...) -> None: ...

class CreateBootstrapTokenResponse(_message.Message):
    __slots__ = ("token", "credential_id", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    credential_id: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., credential_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AgentCredential(_message.Message):
    __slots__ = ("credential_id", "kind", "agent_id", "site", "region", "agent_ids", "uses_left", "issued_at", "expires_at", "revoked_at", "last_used_at", "issued_by")
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    USES_LEFT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_BY_FIELD_NUMBER: _ClassVar[int]
    credential_id: str
    kind: _agent_pb2.CredentialKind
    agent_id: str
    site: str
    region: str
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    uses_left: int
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    last_used_at: _timestamp_pb2.Timestamp
    issued_by: str
    def __init__(self, credential_id: _Optional[str] = ..., kind: _Optional[_Union[_agent_pb2.CredentialKind, str]] = ..., agent_id: _Optional[str] = ..., site: _Optional[str] = ..., region: _Optional[str] = ..., agent_ids: _Optional[_Iterable[str]] = ..., uses_left: _Optional[int] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., issued_by: _Optional[str] = ...) -> None: ...

class ListAgentCredentialsRequest(_message.Message):
    __slots__ = ("agent_id", "include_revoked", "include_expired")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    include_revoked: bool
    include_expired: bool
    def __init__(self, agent_id: _Optional[str] = ..., include_revoked: _Optional[bool] = ..., include_expired: _Optional[bool] = ...) -> None: ...

class ListAgentCredentialsResponse(_message.Message):
    __slots__ = ("credentials",)
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.RepeatedCompositeFieldContainer[AgentCredential]
    def __init__(self, credentials: _Optional[_Iterable[_Union[AgentCredential, _Mapping]]] = ...) -> None: ...

class RevokeAgentCredentialRequest(_message.Message):
    __slots__ = ("credential_id", "agent_id")
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    credential_id: str
    agent_id: str
    def __init__(self, credential_id: _Optional[str] = ..., agent_id: _Optional[str] = ...) -> None: ...

class RevokeAgentCredentialResponse(_message.Message):
    __slots__ = ("revoked", "streams_closed")
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_CLOSED_FIELD_NUMBER: _ClassVar[int]
    revoked: _containers.RepeatedScalarFieldContainer[str]
    streams_closed: int
    def __init__(self, revoked: _Optional[_Iterable[str]] = ..., streams_closed: _Optional[int] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("tenant", "start", "end", "hourly")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    HOURLY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    hourly: bool
    def __init__(self, tenant: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hourly: _Optional[bool] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("tenant", "model", "tier", "hour", "jobs", "prompt_tokens", "completion_tokens", "charged_usd")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    HOUR_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_USD_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    model: str
    tier: str
    hour: _timestamp_pb2.Timestamp
    jobs: int
    prompt_tokens: int
    completion_tokens: int
    charged_usd: float
    def __init__(self, tenant: _Optional[str] = ..., model: _Optional[str] = ..., tier: _Optional[str] = ..., hour: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., jobs: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., charged_usd: _Optional[float] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ...) -> None: ...

class GetAccountingRequest(_message.Message):
    __slots__ = ("site", "start", "end")
    SITE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    site: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, site: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AccountingRow(_message.Message):
    __slots__ = ("site", "hour", "mining_mwh", "ai_mwh", "idle_mwh", "curtailed_mwh", "mining_revenue_usd", "ai_revenue_usd", "power_cost_usd", "profit_usd")
    SITE_FIELD_NUMBER: _ClassVar[int]
    HOUR_FIELD_NUMBER: _ClassVar[int]
    MINING_MWH_FIELD_NUMBER: _ClassVar[int]
    AI_MWH_FIELD_NUMBER: _ClassVar[int]
    IDLE_MWH_FIELD_NUMBER: _ClassVar[int]
    CURTAILED_MWH_FIELD_NUMBER: _ClassVar[int]
    MINING_REVENUE_USD_FIELD_NUMBER: _ClassVar[int]
    AI_REVENUE_USD_FIELD_NUMBER: _ClassVar[int]
    POWER_COST_USD_FIELD_NUMBER: _ClassVar[int]
    PROFIT_USD_FIELD_NUMBER: _ClassVar[int]
    site: str
    hour: _timestamp_pb2.Timestamp
    mining_mwh: float
    ai_mwh: float
    idle_mwh: float
    curtailed_mwh: float
    mining_revenue_usd: float
    ai_revenue_usd: float
    power_cost_usd: float
    profit_usd: float
    def __init__(self, site: _Optional[str] = ..., hour: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mining_mwh: _Optional[float] = ..., ai_mwh: _Optional[float] = ..., idle_mwh: _Optional[float] = ..., curtailed_mwh: _Optional[float] = ..., mining_revenue_usd: _Optional[float] = ..., ai_revenue_usd: _Optional[float] = ..., power_cost_usd: _Optional[float] = ..., profit_usd: _Optional[float] = ...) -> None: ...

class GetAccountingResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[AccountingRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[AccountingRow, _Mapping]]] = ...) -> None: ...
