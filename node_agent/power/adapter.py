"""The contract between the node agent and a site's power equipment, and the data it carries.

The scheduler's mode planner splits a site's power into mining, AI and curtailed MW (the proto's
`PowerMode`); the agent hands that `SitePowerTarget` to a `PowerAdapter`, which drives real
equipment (ASIC fleet controllers, PDUs, GPU power caps) or a simulation, and reports what it
actually did (`AppliedPower`: equipment moves in steps and takes time) and what it measures
(`PowerReading`). How the split is chosen is the planner's business; how equipment is driven is
each adapter's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


def _check_mw(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class SitePowerTarget:
    """What the planner wants the site to draw, by use, in MW."""

    mining_mw: float
    ai_mw: float
    curtailed_mw: float

    def __post_init__(self) -> None:
        _check_mw("mining_mw", self.mining_mw)
        _check_mw("ai_mw", self.ai_mw)
        _check_mw("curtailed_mw", self.curtailed_mw)

    @property
    def total_mw(self) -> float:
        return self.mining_mw + self.ai_mw + self.curtailed_mw


@dataclass(frozen=True)
class AppliedPower:
    """What the adapter will settle at for a target, and when.

    `mining_mw` may be below the target's (equipment switches in whole blocks, and never above
    the target, which may be a grid cap); the gap is reported as curtailed.
    """

    target: SitePowerTarget
    mining_mw: float
    ai_mw: float
    curtailed_mw: float
    blocks_on: int
    applied_at_s: float
    settles_at_s: float


@dataclass(frozen=True)
class PowerReading:
    """The site's mining equipment now, and its counters since the adapter started."""

    at_s: float
    mining_mw: float  # instantaneous draw (mid-ramp it is between two setpoints)
    mining_setpoint_mw: float  # where the current ramp ends
    blocks_on: int
    hashrate_phs: float
    mining_energy_mwh: float  # energy drawn by the miners, cumulative
    hash_work_phs_days: float  # integral of hashrate; revenue = hashprice (USD/PH/s/day) * this


class PowerAdapter(Protocol):
    def apply(self, mode: SitePowerTarget) -> AppliedPower: ...

    def read(self) -> PowerReading: ...
