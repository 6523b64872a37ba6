"""Builders for the core's unit tests: a job, a node, a site, a job record, an agent's hello.

Every argument has a plain default, so a test names only what its case is about
(`make_job(tier="flex")`, `make_site(opportunity_usd_per_mwh=45.0)`). The defaults make the
arithmetic easy to do by hand: a MiniLM job of 200 tokens on a node with no learned rate runs at
the profile's default 100 tokens/s, so 2 s; a node draws 0.3 kW idle and 0.7 kW busy, so the job
costs 0.4 kW * 2 s = 0.8 kJ = 0.000222 kWh = 2.222e-7 MWh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scheduler.core.jobs import JobRecord, JobSpecData
from scheduler.core.models import MINILM, SMOLLM2, ModelKind, Tier
from scheduler.core.placement import JobRequest, NodeView, PriceOutlook, SiteView
from scheduler.core.scheduler import NodeInfo

T0_S = 1_700_000_000.0  # ManualClock's default start (2023-11-14 22:13:20 UTC)
EMBED_MODEL = MINILM.name
GEN_MODEL = SMOLLM2.name


def make_job(
    job_id: str = "j1",
    tier: Tier | str = "flex",
    model: str = EMBED_MODEL,
    input_tokens: int = 200,
    output_tokens_est: int = 0,
    submitted_s: float = T0_S,
    deadline_s: float | None = None,
    allowed_regions: Iterable[str] = (),
    memory_mb: int = 128,
    value_usd: float = 0.0,
    accelerators: Iterable[str] = (),
) -> JobRequest:
    """A placement request; the deadline defaults to six hours after submission."""
    return JobRequest(
        job_id=job_id,
        model=model,
        tier=Tier(tier),
        input_tokens=input_tokens,
        output_tokens_est=output_tokens_est,
        submitted_s=submitted_s,
        deadline_s=submitted_s + 6 * 3600.0 if deadline_s is None else deadline_s,
        allowed_regions=frozenset(allowed_regions),
        memory_mb=memory_mb,
        value_usd=value_usd,
        accelerators=frozenset(accelerators),
    )


def make_node(
    node_id: str = "n1",
    site: str = "s1",
    region: str = "r1",
    models: Iterable[str] = (EMBED_MODEL,),
    memory_mb: int = 8192,
    slots_free: int = 1,
    slots_total: int | None = None,
    serving: bool = True,
    healthy: bool = True,
    idle_power_kw: float = 0.3,
    busy_power_kw: float = 0.7,
    tokens_per_s: Mapping[str, float] | None = None,
    warm_models: Iterable[str] = (),
    backlog_s: float = 0.0,
    gpu_kind: str = "cpu",
) -> NodeView:
    return NodeView(
        node_id=node_id,
        site=site,
        region=region,
        models=frozenset(models),
        memory_mb=memory_mb,
        slots_free=slots_free,
        slots_total=max(slots_free, 1) if slots_total is None else slots_total,
        serving=serving,
        healthy=healthy,
        idle_power_kw=idle_power_kw,
        busy_power_kw=busy_power_kw,
        tokens_per_s=dict(tokens_per_s or {}),
        warm_models=frozenset(warm_models),
        backlog_s=backlog_s,
        gpu_kind=gpu_kind,
    )


def make_site(
    site: str = "s1",
    region: str = "r1",
    price_usd_per_mwh: float = 40.0,
    opportunity_usd_per_mwh: float | None = None,
    outlook: Iterable[tuple[float, float]] = (),
) -> SiteView:
    """A site; `outlook` is (start_s, opportunity price USD/MWh) pairs. The opportunity price
    defaults to the power price (a site that would otherwise sell or curtail its power)."""
    return SiteView(
        site=site,
        region=region,
        price_usd_per_mwh=price_usd_per_mwh,
        opportunity_price_usd_per_mwh=(
            price_usd_per_mwh if opportunity_usd_per_mwh is None else opportunity_usd_per_mwh
        ),
        outlook=tuple(PriceOutlook(start_s, price) for start_s, price in outlook),
    )


def sites_by_name(*sites: SiteView) -> dict[str, SiteView]:
    return {s.site: s for s in sites}


def make_record(
    job_id: str = "j1",
    tier: Tier | str = "standard",
    model: str = EMBED_MODEL,
    tenant: str = "acme",
    input_tokens: int = 200,
    output_tokens_est: int = 0,
    submitted_s: float = T0_S,
    deadline_s: float | None = None,
    allowed_regions: Iterable[str] = (),
    memory_mb: int = 128,
) -> JobRecord:
    """A queued job record as the customer API hands it to the core (deadline: submit + 1 h)."""
    kind = ModelKind.EMBEDDING if model == EMBED_MODEL else ModelKind.GENERATION
    spec = JobSpecData(
        model=model,
        kind=kind,
        tier=Tier(tier),
        input_tokens=input_tokens,
        output_tokens_est=output_tokens_est,
        deadline_s=submitted_s + 3600.0 if deadline_s is None else deadline_s,
        allowed_regions=frozenset(allowed_regions),
        memory_mb=memory_mb,
    )
    return JobRecord(
        job_id=job_id,
        tenant=tenant,
        spec=spec,
        spec_blob=f"spec of {job_id}".encode(),
        submitted_s=submitted_s,
    )


def make_node_info(
    node_id: str = "n1",
    site: str = "s1",
    region: str = "r1",
    models: Iterable[str] = (EMBED_MODEL,),
    memory_mb: int = 8192,
    slots_total: int = 1,
    idle_power_kw: float = 0.3,
    busy_power_kw: float = 0.7,
    gpu_kind: str = "cpu",
) -> NodeInfo:
    """What an agent says in its hello."""
    return NodeInfo(
        node_id=node_id,
        site=site,
        region=region,
        gpu_kind=gpu_kind,
        models=frozenset(models),
        memory_mb=memory_mb,
        slots_total=slots_total,
        idle_power_kw=idle_power_kw,
        busy_power_kw=busy_power_kw,
    )
