"""Scheduler configuration: defaults that run on one machine, overridable by HASHSERVE_* env vars
and by CLI flags."""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from hashserve.logs import LogFormat
from scheduler.core.capacity import CapacityPolicy
from scheduler.core.placement import DEFAULT_PROFILE, ScoringProfile
from scheduler.core.planner import PlannerConfig
from scheduler.core.scheduler import SchedulerPolicy

DEFAULT_REGIONS = ("north_america", "europe", "south_america", "asia_pacific")


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HASHSERVE_", extra="ignore")

    host: str = "127.0.0.1"
    # Logs: text or JSON lines. The actor writes to `log_file` when set, else to its stderr (which
    # Ray keeps in its logs folder); in JSON mode the driver does not relay the actor's lines, as
    # Ray's "(SchedulerActor pid=...)" prefix would break them.
    log_format: LogFormat = LogFormat.TEXT
    log_file: str | None = None
    port: int = Field(50051, ge=0, le=65535)
    metrics_port: int = Field(9100, ge=-1, le=65535, description="-1: no metrics endpoint")
    # The OpenAI-compatible HTTP API (scheduler/api/openai/); -1: off, 0: a free port.
    http_port: int = Field(-1, ge=-1, le=65535, description="OpenAI-compatible API; -1: off")
    # Its Batch API: lines per batch, bytes per input file, lines queued at once per batch
    # (never more than the tenant's quota has room for), and how long files are kept.
    # Admission (scheduler/api/admission.py): the whole scheduler's room for active jobs and
    # their inputs, the share flex and standard work may fill, a tenant's burst (seconds of its
    # rate), the limits of a tenant created without its own, and the WatchJob streams (and
    # OpenAI streams) a tenant may hold open at once.
    admission_max_active_jobs: int = Field(100_000, ge=1)
    admission_max_active_spec_mib: float = Field(512.0, gt=0)
    admission_standard_share: float = Field(0.85, gt=0, le=1)
    admission_flex_share: float = Field(0.7, gt=0, le=1)
    admission_burst_s: float = Field(2.0, gt=0)
    default_max_queued_jobs: int = Field(10_000, ge=1)
    default_submits_per_second: float = Field(200.0, gt=0)
    max_watches_per_tenant: int = Field(1_000, ge=1)
    batch_max_lines: int = Field(50_000, ge=1)
    batch_max_file_bytes: int = Field(200 * 1024 * 1024, ge=1)
    batch_in_flight: int = Field(1024, ge=1)
    batch_file_retention_days: float = Field(30.0, gt=0)
    journal_url: str = "sqlite:///var/hashserve/journal.db"
    # Several schedulers may share a journal; the one holding the leader lease serves, the
    # others stand by (scheduler/runtime/leader.py). Each needs its own instance name (its Ray
    # actor's name); a standby takes over within about `leader_lease_s` of the leader's end.
    instance_name: str = Field("scheduler", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    leader_lease_s: float = Field(3.0, gt=0, le=300)
    journal_synchronous: str = "FULL"
    ray_address: str | None = None
    # Custom Ray resources the scheduler actor asks for, e.g. {"hashserve_scheduler": 0.01} to pin
    # it to the KubeRay head pod that the Service points at.
    ray_actor_resources: dict[str, float] = Field(default_factory=dict)
    fleet_path: str | None = None
    # The model catalogue (scheduler/fleet/catalogue.py); default: the shipped catalogue.yaml, the
    # embedded models. The fleet file's `tiers` prices win over the catalogue's.
    catalogue_path: str | None = None
    regions: tuple[str, ...] = DEFAULT_REGIONS
    tick_s: float = Field(0.5, gt=0, le=60)
    # Route a generation to a node whose engine holds its prompt's prefix, weighed against load
    # (scheduler/core/prefix.py); off: least loaded, the engines' caches ignored.
    prefix_routing: bool = True
    # Capacity by SLO (scheduler/core/capacity.py): load a model on more nodes when its arrivals
    # and queue need more replicas for its catalogue targets (agents that can load it: their
    # `--preload` left it out). A surplus replica is unloaded after `scale_down_after_s` (unset:
    # never), the last one after `scale_to_zero_after_s` with no demand (unset: never to zero).
    capacity_planning: bool = True
    scale_down_after_s: float | None = Field(None, gt=0)
    scale_to_zero_after_s: float | None = Field(None, gt=0)
    lease_s: float = Field(15.0, gt=0)
    disconnect_grace_s: float = Field(10.0, ge=0)
    recovery_grace_s: float = Field(20.0, ge=0)
    # Agents heartbeat every second; one silent this long gets no new work.
    agent_silence_s: float = Field(5.0, gt=0)
    # Bootstrap credentials (a real deployment sets the admin key once, then uses the admin API).
    admin_key: str | None = None
    # The local cluster's agent token, which may act as any agent: refused unless the scheduler
    # listens on loopback only (`hashserve up`, the demo, tests). Elsewhere agents enroll.
    agent_token: str | None = None
    # A bootstrap token from a deployment's secrets (scheduler/api/agent_identity.py): it can
    # only enroll agents of `bootstrap_site` (the listed ids, when given), `bootstrap_uses`
    # times within `bootstrap_ttl_s` of its first registration; a restart does not refill it.
    bootstrap_token: str | None = None
    bootstrap_site: str | None = None
    bootstrap_region: str = ""
    bootstrap_agent_ids: tuple[str, ...] = ()
    bootstrap_uses: int = Field(1, ge=1, le=10_000)
    bootstrap_ttl_s: float = Field(3600.0, gt=0, le=7 * 86_400)
    # How long an enrolled agent's credential lives; agents renew it at two thirds of that.
    agent_credential_ttl_s: float = Field(7 * 86_400.0, ge=10, le=400 * 86_400)
    # TLS: server TLS for both ports. The agent CA signs enrolled agents' client certificates;
    # the agent port (mutual TLS) trusts it and any CA in `tls_client_ca` (an old CA while
    # rotating). Customers' port never asks for a client certificate.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    agent_ca_cert: str | None = None
    agent_ca_key: str | None = None
    # The agents' own port, mutual TLS; -1: agents share the customers' port, with tokens.
    agent_port: int = Field(-1, ge=-1, le=65535, description="agents' mTLS port; -1: shared")
    # Market: replay of the shipped history on a compressed clock (1 h of history per N seconds).
    market_replay_start: str = "2024-07-01T00:00:00Z"
    market_seconds_per_hour: float = Field(
        5.0, gt=0, description="scheduler seconds per hour of history; 3600 replays in real time"
    )
    # The wall-clock time (Unix seconds) at which the replay is at `market_replay_start`; default:
    # when the scheduler starts. Several processes given the same origin replay the same hour at
    # the same moment (a standby scheduler, a twin run, agents' simulated ASIC fleets).
    market_replay_origin_s: float | None = Field(
        None, description="Unix time at which the replay is at market_replay_start"
    )
    # Past the end of the shipped history the replay starts again from `market_replay_start`, so
    # prices never run out; off, the planner falls back everywhere once the history ends.
    market_replay_loop: bool = True
    market_http_url: str | None = Field(None, description="poll this JSON endpoint for prices")
    # Live sources (scheduler/feeds/live). Any of them needs the real clock
    # (market_seconds_per_hour 3600). Credentials: a value, or a file holding it (a secret mount).
    bitcoin_rpc_url: str | None = Field(None, description="a Bitcoin Core node's JSON-RPC URL")
    bitcoin_rpc_user: str | None = None
    bitcoin_rpc_password: SecretStr | None = None
    bitcoin_rpc_password_file: str | None = None
    bitcoin_rpc_cookie_file: str | None = Field(None, description="the node's .cookie file")
    mempool_api_url: str | None = Field(None, description="e.g. https://mempool.space/api")
    btc_usd_url: str | None = Field(
        None, description="a Coinbase-shaped spot price, e.g. "
        "https://api.coinbase.com/v2/prices/BTC-USD/spot",
    )
    bitcoin_poll_interval_s: float = Field(60.0, gt=0)
    # A published hashprice index to compare the computed hashprice with (a metric; never used).
    hashprice_index_url: str | None = None
    hashprice_index_field: str = "hashprice_usd_per_phs_day"
    hashprice_index_scale: float = Field(1.0, gt=0, description="1000 for a per-TH/s index")
    entsoe_token: SecretStr | None = None
    entsoe_token_file: str | None = None
    entsoe_endpoint_url: str = "https://web-api.tp.entsoe.eu/api"
    entsoe_poll_interval_s: float = Field(900.0, gt=0)
    # ERCOT's public API (an account at apiexplorer.ercot.com and a subscription key).
    ercot_api_username: str | None = None
    ercot_api_password: SecretStr | None = None
    ercot_api_password_file: str | None = None
    ercot_subscription_key: SecretStr | None = None
    ercot_subscription_key_file: str | None = None
    ercot_default_settlement_point: str = "HB_HUBAVG"
    ercot_api_url: str | None = Field(None, description="default: ERCOT's public-reports API")
    ercot_token_url: str | None = Field(None, description="default: ERCOT's B2C token endpoint")
    ercot_poll_interval_s: float = Field(300.0, gt=0)
    # AEMO's NEMWEB (no account needed): set to https://nemweb.com.au to price the NEM's sites.
    aemo_nemweb_url: str | None = None
    aemo_poll_interval_s: float = Field(300.0, gt=0)
    # JEPX's yearly spot summary ({year} is filled in), and CCEE's hourly PLD (open data, CKAN).
    jepx_spot_url: str | None = Field(
        None, description="e.g. https://www.jepx.jp/js/csv_read.php?dir=spot_summary"
        "&file=spot_summary_{year}.csv",
    )
    ccee_datastore_url: str | None = Field(
        None, description="e.g. https://dadosabertos.ccee.org.br/api/3/action/datastore_search"
    )
    ccee_pld_resource_id: str | None = None
    day_ahead_poll_interval_s: float = Field(1800.0, gt=0)
    # IESO's public reports (no account): set to https://reports-public.ieso.ca/public.
    ieso_reports_url: str | None = None
    ieso_poll_interval_s: float = Field(300.0, gt=0)
    # NYISO's postings (no account): set to https://oasis-postings.prod.nysdi.com.
    nyiso_postings_url: str | None = None
    nyiso_default_zone: str = "NORTH"
    nyiso_poll_interval_s: float = Field(300.0, gt=0)
    # PJM's Data Miner 2 (a subscription key from PJM's API portal).
    pjm_api_key: SecretStr | None = None
    pjm_api_key_file: str | None = None
    pjm_default_pnode: str = Field("51288", description="a pnode id; 51288 is the Western Hub")
    pjm_data_miner_url: str | None = Field(None, description="default: api.pjm.com's")
    pjm_poll_interval_s: float = Field(300.0, gt=0)
    # CAISO's OASIS (no account; gridstatus knows its address).
    caiso_enabled: bool = False
    caiso_default_node: str = "TH_NP15_GEN-APND"
    caiso_poll_interval_s: float = Field(300.0, gt=0)
    market_http_interval_s: float = Field(60.0, gt=0)
    plan_interval_s: float = Field(2.0, gt=0)
    # Below this power price a site keeps its connected GPU nodes serving (see control/power.py).
    ai_value_floor_usd_per_mwh: float = Field(1000.0, ge=0)
    # A site takes no new AI work this long (scheduler seconds) before a demand-response window
    # that cuts its load, so work started just before is not preempted by the window.
    dr_window_lead_s: float = Field(120.0, ge=0)
    # The accounting ledger is kept in the journal this long (market days), then pruned.
    accounting_retention_days: float = Field(400.0, gt=0)

    # What the core decides with, built in one place: the live scheduler and the backtest's twin
    # (scheduler/backtest/twin.py) take them from the same settings.

    @property
    def market_speedup(self) -> float:
        """How much faster than real time the market replay runs."""
        return 3600.0 / self.market_seconds_per_hour

    def scheduler_policy(self) -> SchedulerPolicy:
        return SchedulerPolicy(
            lease_s=self.lease_s,
            disconnect_grace_s=self.disconnect_grace_s,
            recovery_grace_s=self.recovery_grace_s,
            silence_s=self.agent_silence_s,
            capacity=CapacityPolicy(
                enabled=self.capacity_planning,
                scale_down_after_s=self.scale_down_after_s,
                scale_to_zero_after_s=self.scale_to_zero_after_s,
            ),
        )

    def scoring_profile(self) -> ScoringProfile:
        # On a compressed market clock every duration the placer weighs shrinks with it.
        return replace(
            DEFAULT_PROFILE,
            defer_deadline_margin_s=DEFAULT_PROFILE.defer_deadline_margin_s / self.market_speedup,
            prefix_cache_weight=DEFAULT_PROFILE.prefix_cache_weight if self.prefix_routing
            else 0.0,
        )

    def planner_config(self) -> PlannerConfig:
        return PlannerConfig(clock_speedup=self.market_speedup)
