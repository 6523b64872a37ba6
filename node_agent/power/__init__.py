"""Power adapters: how the agent applies the scheduler's power mode to a site's equipment."""

from node_agent.power.adapter import AppliedPower, PowerAdapter, PowerReading, SitePowerTarget
from node_agent.power.asic_fleet import SimulatedAsicFleet, fleet_power_mw
from node_agent.power.gpu_meter import GpuPowerMeter, GpuPowerReading, job_energy_kwh

__all__ = [
    "AppliedPower",
    "GpuPowerMeter",
    "GpuPowerReading",
    "PowerAdapter",
    "PowerReading",
    "SimulatedAsicFleet",
    "SitePowerTarget",
    "fleet_power_mw",
    "job_energy_kwh",
]
