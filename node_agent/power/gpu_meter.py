"""An estimate of a GPU node's power draw and of each job's energy, for nodes without a metered PDU.

The model is the linear one of Fan, Weber and Barroso, "Power provisioning for a warehouse-sized
computer" (ISCA 2007): a server draws `P(u) = P_idle + (P_busy - P_idle) * u` at
utilisation `u` in [0, 1]. `idle_power_kw` and `busy_power_kw` are the node's all-in figures (the
agent reports them in its hello; DESIGN.md puts an H100 node at about 1-1.4 kW per GPU all-in).

Attribution: the idle part is the node's standing cost, paid whether or not it has work, so the
scheduler charges it to the power mode, not to jobs. A job is charged its marginal energy,
`(P_busy - P_idle) * share * run_s / 3600` kWh, where `share` is its part of the node's busy
capacity while it ran (1.0 alone, 0.5 with one other job at equal weight). The sum over jobs is
then the node's energy above idle. The meter also integrates the node's total draw over time from
an injected clock, for heartbeats. Measuring real utilisation (NVML, /proc) is the caller's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.core.clock import Clock

_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class GpuPowerReading:
    at_s: float
    utilisation: float  # 0..1
    draw_kw: float
    energy_kwh: float  # cumulative since the meter started
    busy_energy_kwh: float  # the part above idle: what jobs are charged in total


def _clamp_unit(value: float) -> float:
    if math.isnan(value):
        raise ValueError("utilisation is NaN")
    return min(1.0, max(0.0, value))


def job_energy_kwh(idle_power_kw: float, busy_power_kw: float, run_s: float, share: float) -> float:
    """Marginal energy of one job: its share of the busy-above-idle power over its run time.

    Example: a 1.0 kW idle, 1.4 kW busy node running one job alone for 90 s charges it
    (1.4 - 1.0) * 1.0 * 90 / 3600 = 0.01 kWh.
    """
    if run_s < 0:
        raise ValueError(f"run_s must be >= 0, got {run_s}")
    return (busy_power_kw - idle_power_kw) * _clamp_unit(share) * run_s / _SECONDS_PER_HOUR


class GpuPowerMeter:
    def __init__(self, idle_power_kw: float, busy_power_kw: float, clock: Clock) -> None:
        if not 0 <= idle_power_kw <= busy_power_kw or not math.isfinite(busy_power_kw):
            raise ValueError(
                f"need 0 <= idle_power_kw <= busy_power_kw, got {idle_power_kw}, {busy_power_kw}"
            )
        self.idle_power_kw = idle_power_kw
        self.busy_power_kw = busy_power_kw
        self._clock = clock
        self._utilisation = 0.0
        self._since_s = clock.now_s()
        self._energy_kw_s = 0.0
        self._busy_energy_kw_s = 0.0

    def draw_kw(self, utilisation: float) -> float:
        u = _clamp_unit(utilisation)
        return self.idle_power_kw + (self.busy_power_kw - self.idle_power_kw) * u

    def job_energy_kwh(self, run_s: float, share: float = 1.0) -> float:
        return job_energy_kwh(self.idle_power_kw, self.busy_power_kw, run_s, share)

    def set_utilisation(self, utilisation: float) -> None:
        """Utilisation from now on; the time until now is counted at the previous value."""
        self._advance()
        self._utilisation = _clamp_unit(utilisation)

    def read(self) -> GpuPowerReading:
        now = self._advance()
        return GpuPowerReading(
            at_s=now,
            utilisation=self._utilisation,
            draw_kw=self.draw_kw(self._utilisation),
            energy_kwh=self._energy_kw_s / _SECONDS_PER_HOUR,
            busy_energy_kwh=self._busy_energy_kw_s / _SECONDS_PER_HOUR,
        )

    def _advance(self) -> float:
        now = self._clock.now_s()
        elapsed_s = now - self._since_s
        if elapsed_s < 0:
            raise ValueError(f"clock went backwards: {now} < {self._since_s}")
        self._energy_kw_s += self.draw_kw(self._utilisation) * elapsed_s
        self._busy_energy_kw_s += (
            (self.busy_power_kw - self.idle_power_kw) * self._utilisation * elapsed_s
        )
        self._since_s = now
        return now
