"""The power plan: per site, how many MW mine, serve AI, sit idle, or are curtailed, and why.

Frozen data; the planner makes it, the placer reads `serving_mw`/`opportunity_price_usd_per_mwh`,
the edges carry out the power modes, the accounting turns it into MWh and dollars, and the journal
records it with its reasons. The plan of one tick is the `previous` of the next.

Power terms (MW):
- `mining_mw`: ASIC blocks hashing.
- `ai_mw`: GPU nodes busy with AI work (the admitted demand, at busy power).
- `serving_mw`: GPU busy-power capacity switched on for AI (`ai_mw` + standby + idle nodes on);
  the cap is reserved for it at busy power, so the placer may fill it without breaching the cap.
- `idle_gpu_mw`: what the switched-on but unused part of `serving_mw` draws at idle power.
- `curtailed_mw`: nameplate switched off: ASICs not mining plus GPU capacity not switched on.
Load drawn = `mining_mw + ai_mw + idle_gpu_mw`; `mining_mw + serving_mw <= cap_mw`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SitePowerPlan:
    site: str
    mining_mw: float
    ai_mw: float
    idle_gpu_mw: float
    curtailed_mw: float
    price_usd_per_mwh: float  # the price decided on (the fallback price when the zone's is unknown)
    r_mine_usd_per_mwh: float
    opportunity_price_usd_per_mwh: float  # cost of one more MWh for AI here
    at_cap: bool  # more AI here would displace mining (no room left, or AI holds mining's room)
    mode_changed_at_s: float  # last change of the mining level (what dwell is measured from)
    reasons: tuple[str, ...]
    fallback: bool  # a fallback policy decided (zone price or hashprice unknown)
    serving_mw: float = 0.0
    cap_mw: float = 0.0  # effective cap this tick (interconnect, ops cap, windows)
    price_zone: str = ""
    price_known: bool = True
    fallback_since_s: float | None = None  # when the zone's price became unknown
    # Running AI work (busy MW) this plan does not admit: the scheduler preempts it.
    preempt_mw: float = 0.0
    # Of the ASIC block more AI would stop, the part the GPUs still off could use (1: all, or
    # no block to stop); it scales mining's margin in the opportunity price and the outlook.
    block_share: float = 1.0

    @property
    def load_mw(self) -> float:
        return self.mining_mw + self.ai_mw + self.idle_gpu_mw

    @property
    def headroom_mw(self) -> float:
        return max(0.0, self.cap_mw - self.mining_mw - self.serving_mw)


@dataclass(frozen=True)
class PowerPlan:
    t_s: float
    sites: Mapping[str, SitePowerPlan] = field(default_factory=dict)

    @property
    def mining_mw(self) -> float:
        return sum(p.mining_mw for p in self.sites.values())

    @property
    def ai_mw(self) -> float:
        return sum(p.ai_mw for p in self.sites.values())

    @property
    def curtailed_mw(self) -> float:
        return sum(p.curtailed_mw for p in self.sites.values())

    @property
    def load_mw(self) -> float:
        return sum(p.load_mw for p in self.sites.values())
