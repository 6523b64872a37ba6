"""The fleet file's schema (pydantic v2): what a valid fleet YAML is, field by field.

What it decides: the names, units and allowed ranges of every field, and the cross-checks a
single field cannot make (unique site names, an FX rate for every zone's currency, a price for
every model a GPU group serves). Errors name the bad field by path, e.g.
`sites[3] (tx-odessa).asic.efficiency_j_per_th: must be > 0` (see `loader.format_errors`).
What it leaves to others: reading the file (`loader`) and what the numbers mean (`scheduler.core`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler.core.fleet import REGIONS
from scheduler.core.market import PRICE_ZONE_CURRENCY

TIERS: tuple[str, ...] = ("interactive", "standard", "flex")

Region = Literal["north_america", "europe", "south_america", "asia_pacific"]
assert set(REGIONS) == {"north_america", "europe", "south_america", "asia_pacific"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AsicModel(_Strict):
    hashrate_phs: float = Field(ge=0, description="ASIC hashrate, PH/s")
    efficiency_j_per_th: float = Field(gt=0, description="fleet-average J/TH")
    pool_fee: float = Field(ge=0, lt=1, description="fraction of revenue the pool keeps")
    curtail_block_mw: float = Field(gt=0, description="smallest block switched off/on, MW")
    ramp_s: float = Field(ge=0, description="time for a block to stop or restart, s")


class GpuGroupModel(_Strict):
    kind: str = Field(min_length=1)
    count: int = Field(ge=0, description="number of nodes (servers)")
    gpus_per_node: int = Field(default=1, ge=0, description="0 for CPU-only nodes")
    idle_power_kw: float = Field(ge=0, description="per node, on and idle")
    busy_power_kw: float = Field(gt=0, description="per node, fully busy")
    memory_mb: int = Field(gt=0, description="accelerator memory per node for models")
    models: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _idle_below_busy(self) -> GpuGroupModel:
        if self.idle_power_kw > self.busy_power_kw:
            raise ValueError(
                f"idle_power_kw ({self.idle_power_kw:g}) must be <= busy_power_kw "
                f"({self.busy_power_kw:g})"
            )
        return self


class SiteModel(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=63)
    region: Region
    price_zone: str
    # The site's own settlement point (a node or hub, e.g. ERCOT's HB_WEST); live sources that
    # know it price the site there, the replay prices the zone.
    settlement_point: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    power_cap_mw: float = Field(gt=0, description="grid interconnect, MW")
    asic: AsicModel
    gpus: list[GpuGroupModel] = Field(default_factory=list)

    @field_validator("price_zone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        if zone not in PRICE_ZONE_CURRENCY:
            raise ValueError(
                f"{zone!r} is not a zone the price data covers; one of: "
                + ", ".join(PRICE_ZONE_CURRENCY)
            )
        return zone


class FleetModel(_Strict):
    version: Literal[1] = 1
    fx_usd_per_unit: dict[str, float] = Field(min_length=1)
    tiers: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="USD per million tokens, by model then tier"
    )
    sites: list[SiteModel] = Field(min_length=1)

    @field_validator("fx_usd_per_unit")
    @classmethod
    def _positive_rates(cls, rates: dict[str, float]) -> dict[str, float]:
        bad = [f"{cur}={rate!r}" for cur, rate in rates.items() if not rate > 0]
        if bad:
            raise ValueError(f"every rate must be > 0 (got {', '.join(bad)})")
        if rates.get("USD", 1.0) != 1.0:
            raise ValueError("USD must be 1.0")
        return rates

    @field_validator("tiers")
    @classmethod
    def _known_tiers(cls, tiers: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for model, prices in tiers.items():
            for tier, price in prices.items():
                if tier not in TIERS:
                    raise ValueError(f"{model}.{tier}: unknown tier, one of {', '.join(TIERS)}")
                if not price >= 0:
                    raise ValueError(f"{model}.{tier}: price must be >= 0 (got {price!r})")
        return tiers


def cross_check(fleet: FleetModel) -> list[str]:
    """Problems no single field shows, each as `path: message`."""
    problems: list[str] = []
    first_index: dict[str, int] = {}
    for i, site in enumerate(fleet.sites):
        where = f"sites[{i}] ({site.name})"
        if site.name in first_index:
            problems.append(f"{where}.name: duplicate of sites[{first_index[site.name]}]")
        else:
            first_index[site.name] = i
        currency = PRICE_ZONE_CURRENCY[site.price_zone]
        if currency not in fleet.fx_usd_per_unit:
            problems.append(
                f"{where}.price_zone: {site.price_zone} is priced in {currency}, "
                f"which has no rate in fx_usd_per_unit"
            )
        for g, group in enumerate(site.gpus):
            for m, model in enumerate(group.models):
                if fleet.tiers and model not in fleet.tiers:
                    problems.append(
                        f"{where}.gpus[{g}].models[{m}]: {model!r} has no prices in tiers"
                    )
    return problems
