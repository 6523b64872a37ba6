"""The fleet as the core sees it: sites, their power caps, ASICs and GPU nodes, and the price list.

Plain frozen dataclasses; no parsing or validation here. `scheduler.fleet` reads and validates the
YAML file and builds these; the planner, the placer and the backtester only read them.
Derived figures are cached on first use (`cached_property` writes the instance's __dict__ directly,
which a frozen dataclass allows): the planner reads them for every site on every tick.
Powers are nameplate figures: what the hardware draws when it runs (ASICs hashing, GPU nodes busy
or idle), in MW at the site level and kW per GPU node as datasheets give them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from scheduler.core.economics import asic_power_mw

REGIONS: tuple[str, ...] = ("north_america", "europe", "south_america", "asia_pacific")


@dataclass(frozen=True)
class AsicFleetSpec:
    """A site's ASIC miners as one fleet, switched off and on in blocks of `curtail_block_mw`."""

    hashrate_phs: float
    efficiency_j_per_th: float
    pool_fee: float  # fraction of mining revenue the pool keeps, e.g. 0.02
    curtail_block_mw: float  # smallest power step the site's controls switch (a container, a row)
    ramp_s: float  # time for a block to stop or come back to full hashrate

    @cached_property
    def power_mw(self) -> float:
        return asic_power_mw(self.hashrate_phs, self.efficiency_j_per_th)

    @cached_property
    def full_blocks(self) -> int:
        """Number of whole blocks; what is left over (`partial_block_mw`) is one smaller block."""
        if self.curtail_block_mw <= 0.0:
            return 0
        # A tiny epsilon so 20 MW / 2.5 MW is 8 blocks despite float rounding.
        return math.floor(self.power_mw / self.curtail_block_mw + 1e-9)

    @cached_property
    def partial_block_mw(self) -> float:
        rest = self.power_mw - self.full_blocks * self.curtail_block_mw
        return rest if rest > 1e-9 else 0.0


@dataclass(frozen=True)
class GpuNodeGroup:
    """`count` identical GPU servers (nodes); powers and memory are per node."""

    kind: str
    count: int
    idle_power_kw: float
    busy_power_kw: float
    memory_mb: int  # accelerator memory a node offers to models
    models: tuple[str, ...]
    gpus_per_node: int = 1

    @cached_property
    def busy_power_mw(self) -> float:
        """All nodes of the group busy."""
        return self.count * self.busy_power_kw / 1000.0

    @cached_property
    def idle_power_mw(self) -> float:
        """All nodes of the group on and idle."""
        return self.count * self.idle_power_kw / 1000.0

    @property
    def gpu_count(self) -> int:
        return self.count * self.gpus_per_node


SETTLEMENT_POINT_SEPARATOR = "@"


def market_zone(price_zone: str) -> str:
    """The market a site's price zone belongs to: `US-TEX-ERCO@HB_WEST` (a site priced on its own
    settlement point) is in `US-TEX-ERCO`. Sources that know no settlement points price the
    market's zone (the replay, the shipped files); live sources price the point itself."""
    return price_zone.split(SETTLEMENT_POINT_SEPARATOR, 1)[0]


def settlement_point(price_zone: str) -> str | None:
    """`HB_WEST` for `US-TEX-ERCO@HB_WEST`; None for a plain zone."""
    _, sep, point = price_zone.partition(SETTLEMENT_POINT_SEPARATOR)
    return point if sep else None


@dataclass(frozen=True)
class SiteSpec:
    name: str
    region: str
    # The zone the site is priced in, or `<zone>@<settlement point>` (fleet file:
    # `settlement_point`) for a site priced on its own node or hub.
    price_zone: str
    power_cap_mw: float  # grid interconnect: all loads together stay under it
    asic: AsicFleetSpec
    gpu_groups: tuple[GpuNodeGroup, ...] = ()

    @cached_property
    def gpu_busy_mw(self) -> float:
        return sum(g.busy_power_mw for g in self.gpu_groups)

    @cached_property
    def gpu_idle_mw(self) -> float:
        return sum(g.idle_power_mw for g in self.gpu_groups)

    @cached_property
    def gpu_idle_fraction(self) -> float:
        """Idle draw as a fraction of busy draw over the site's GPU nodes (0 without GPUs)."""
        busy = self.gpu_busy_mw
        return self.gpu_idle_mw / busy if busy > 0.0 else 0.0

    @property
    def gpu_count(self) -> int:
        return sum(g.gpu_count for g in self.gpu_groups)

    @cached_property
    def nameplate_mw(self) -> float:
        """Everything on at once (ASICs mining, GPU nodes busy); may exceed the cap."""
        return self.asic.power_mw + self.gpu_busy_mw


@dataclass(frozen=True)
class Fleet:
    """All sites, the FX rates to USD and the list prices per model and tier.

    `fx_usd_per_unit` maps a currency code to USD per unit (USD is 1.0).
    `tier_prices_usd_per_million_tokens[model][tier]` is what a customer pays.
    The mappings are meant to be read-only.
    """

    sites: tuple[SiteSpec, ...]
    fx_usd_per_unit: Mapping[str, float]
    tier_prices_usd_per_million_tokens: Mapping[str, Mapping[str, float]] = field(
        default_factory=dict
    )

    def site(self, name: str) -> SiteSpec:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    @property
    def price_zones(self) -> frozenset[str]:
        return frozenset(s.price_zone for s in self.sites)

    @property
    def hashrate_phs(self) -> float:
        return sum(s.asic.hashrate_phs for s in self.sites)

    @property
    def asic_power_mw(self) -> float:
        return sum(s.asic.power_mw for s in self.sites)

    @property
    def gpu_count(self) -> int:
        return sum(s.gpu_count for s in self.sites)

    def subset(self, names: tuple[str, ...] | list[str]) -> Fleet:
        """A fleet of the named sites only (same FX and prices), in the order given."""
        by_name = {s.name: s for s in self.sites}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(f"unknown sites: {missing}")
        return Fleet(
            sites=tuple(by_name[n] for n in names),
            fx_usd_per_unit=self.fx_usd_per_unit,
            tier_prices_usd_per_million_tokens=self.tier_prices_usd_per_million_tokens,
        )
