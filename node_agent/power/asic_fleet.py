"""A simulated ASIC fleet: the `PowerAdapter` for sites without a real fleet controller, and for
tests and backtests.

The model: a fleet of `hashrate_phs` PH/s at `efficiency_j_per_th` J/TH draws
`hashrate_phs * efficiency_j_per_th / 1000` MW at full power (1 PH/s = 1e3 TH/s, so
1 PH/s * 1 J/TH = 1e3 W = 1e-3 MW; 100 PH/s at 17.5 J/TH is 1.75 MW). Operators switch miners in
whole blocks (a PDU or a container at a time) of `curtail_block_mw` each; the last block holds
what is left. A new setpoint is the largest set of whole blocks that fits under the target's
mining MW (the target may be a grid cap, so never above it). Power then moves linearly from where
it is to the setpoint over `ramp_s` seconds (miners boot and spin fans up, or wind down), and
hashrate follows power in proportion. Energy and hash work are integrated exactly over that
piecewise-linear power, read from the injected clock, so a `ManualClock` gives exact numbers.

It decides nothing about when to mine: that is the mode planner's. It models one site's miners.
"""

from __future__ import annotations

import math

from node_agent.power.adapter import AppliedPower, PowerReading, SitePowerTarget
from scheduler.core.clock import Clock

_SECONDS_PER_HOUR = 3600.0
_SECONDS_PER_DAY = 86_400.0
# Block counts are computed from MW ratios; this absorbs float error like 0.3 / 0.1 = 2.999...
_EPS = 1e-9


def fleet_power_mw(hashrate_phs: float, efficiency_j_per_th: float) -> float:
    """Full-fleet draw: PH/s * J/TH = kW, so / 1000 for MW (DESIGN.md's 24 * e / 1000 MWh per
    PH/s per day is the same figure times 24 hours)."""
    return hashrate_phs * efficiency_j_per_th / 1000.0


class SimulatedAsicFleet:
    def __init__(
        self,
        hashrate_phs: float,
        efficiency_j_per_th: float,
        curtail_block_mw: float,
        ramp_s: float,
        clock: Clock,
        start_on: bool = True,
    ) -> None:
        if hashrate_phs <= 0 or efficiency_j_per_th <= 0 or curtail_block_mw <= 0:
            raise ValueError("hashrate_phs, efficiency_j_per_th and curtail_block_mw must be > 0")
        if ramp_s < 0 or not math.isfinite(ramp_s):
            raise ValueError(f"ramp_s must be a finite number >= 0, got {ramp_s}")
        self.hashrate_phs = hashrate_phs
        self.efficiency_j_per_th = efficiency_j_per_th
        self.full_power_mw = fleet_power_mw(hashrate_phs, efficiency_j_per_th)
        self.block_mw = min(curtail_block_mw, self.full_power_mw)
        self.full_blocks = math.floor(self.full_power_mw / self.block_mw + _EPS)
        remainder = self.full_power_mw - self.full_blocks * self.block_mw
        # The partial last block (0 when the fleet divides evenly).
        self.last_block_mw = remainder if remainder > _EPS * self.full_power_mw else 0.0
        self.ramp_s = ramp_s
        self._clock = clock

        now = clock.now_s()
        power = self.full_power_mw if start_on else 0.0
        self._ramp_start_s = now
        self._ramp_from_mw = power
        self._setpoint_mw = power
        self._blocks_on = self.block_count if start_on else 0
        self._integrated_to_s = now
        self._energy_mw_s = 0.0

    @property
    def block_count(self) -> int:
        return self.full_blocks + (1 if self.last_block_mw > 0 else 0)

    def setpoint_for(self, mining_mw: float) -> tuple[float, int]:
        """(MW, blocks on) of the largest whole-block set not above `mining_mw`."""
        best = (0.0, 0)
        n_full = min(self.full_blocks, math.floor(mining_mw / self.block_mw + _EPS))
        best = max(best, (n_full * self.block_mw, n_full))
        if self.last_block_mw > 0 and mining_mw + _EPS >= self.last_block_mw:
            room = mining_mw - self.last_block_mw
            n = min(self.full_blocks, math.floor(room / self.block_mw + _EPS))
            best = max(best, (n * self.block_mw + self.last_block_mw, n + 1))
        return best

    def apply(self, mode: SitePowerTarget) -> AppliedPower:
        now = self._now()
        self._integrate_to(now)
        setpoint_mw, blocks = self.setpoint_for(mode.mining_mw)
        # A new ramp starts from wherever the old one has got to.
        self._ramp_from_mw = self.power_at(now)
        self._ramp_start_s = now
        self._setpoint_mw = setpoint_mw
        self._blocks_on = blocks
        unchanged = math.isclose(self._ramp_from_mw, setpoint_mw, abs_tol=_EPS)
        return AppliedPower(
            target=mode,
            mining_mw=setpoint_mw,
            ai_mw=mode.ai_mw,
            curtailed_mw=mode.curtailed_mw + (mode.mining_mw - setpoint_mw),
            blocks_on=blocks,
            applied_at_s=now,
            settles_at_s=now if unchanged else now + self.ramp_s,
        )

    def read(self) -> PowerReading:
        now = self._now()
        self._integrate_to(now)
        power_mw = self.power_at(now)
        return PowerReading(
            at_s=now,
            mining_mw=power_mw,
            mining_setpoint_mw=self._setpoint_mw,
            blocks_on=self._blocks_on,
            hashrate_phs=self._hashrate_for(power_mw),
            mining_energy_mwh=self._energy_mw_s / _SECONDS_PER_HOUR,
            hash_work_phs_days=self._hashrate_for(self._energy_mw_s) / _SECONDS_PER_DAY,
        )

    def power_at(self, t_s: float) -> float:
        """Draw at `t_s` (not before the current ramp started) on the current ramp."""
        elapsed_s = t_s - self._ramp_start_s
        if self.ramp_s == 0 or elapsed_s >= self.ramp_s:
            return self._setpoint_mw
        fraction = max(0.0, elapsed_s) / self.ramp_s
        return self._ramp_from_mw + (self._setpoint_mw - self._ramp_from_mw) * fraction

    def _hashrate_for(self, power_mw: float) -> float:
        # Linear in power: every running miner hashes at the fleet's efficiency.
        return power_mw * self.hashrate_phs / self.full_power_mw

    def _now(self) -> float:
        now = self._clock.now_s()
        if now < self._integrated_to_s:
            raise ValueError(f"clock went backwards: {now} < {self._integrated_to_s}")
        return now

    def _integrate_to(self, t_s: float) -> None:
        """Add the energy of [integrated_to, t_s]: a trapezoid while ramping, a rectangle after."""
        start = self._integrated_to_s
        ramp_end = self._ramp_start_s + self.ramp_s
        if start < ramp_end:
            mid = min(t_s, ramp_end)
            self._energy_mw_s += (self.power_at(start) + self.power_at(mid)) / 2 * (mid - start)
            start = mid
        if t_s > start:
            self._energy_mw_s += self._setpoint_mw * (t_s - start)
        self._integrated_to_s = t_s
