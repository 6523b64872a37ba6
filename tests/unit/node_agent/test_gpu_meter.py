"""GpuPowerMeter: linear draw in utilisation, node energy over time, per-job marginal energy."""

from __future__ import annotations

import pytest

from node_agent.power import GpuPowerMeter, job_energy_kwh
from scheduler.core.clock import ManualClock

# A node idling at 1.0 kW and drawing 1.4 kW flat out.
IDLE_KW, BUSY_KW = 1.0, 1.4


def make_meter() -> tuple[GpuPowerMeter, ManualClock]:
    clock = ManualClock()
    return GpuPowerMeter(IDLE_KW, BUSY_KW, clock), clock


@pytest.mark.parametrize(
    ("utilisation", "draw_kw"),
    [(0.0, 1.0), (0.5, 1.2), (1.0, 1.4), (1.7, 1.4), (-0.2, 1.0)],  # clamped to [0, 1]
)
def test_draw_is_linear_in_utilisation(utilisation: float, draw_kw: float) -> None:
    meter, _ = make_meter()
    assert meter.draw_kw(utilisation) == pytest.approx(draw_kw)


def test_energy_integrates_over_time() -> None:
    meter, clock = make_meter()
    meter.set_utilisation(1.0)
    clock.advance(1800)
    meter.set_utilisation(0.25)
    clock.advance(3600)
    r = meter.read()
    # Half an hour at 1.4 kW = 0.7 kWh; one hour at 1.0 + 0.4 * 0.25 = 1.1 kW = 1.1 kWh.
    assert r.energy_kwh == pytest.approx(1.8)
    # Above idle: 0.4 * 0.5 h + 0.1 * 1 h = 0.3 kWh.
    assert r.busy_energy_kwh == pytest.approx(0.3)
    assert r.draw_kw == pytest.approx(1.1)
    assert r.utilisation == 0.25


def test_job_energy_is_its_share_of_busy_above_idle() -> None:
    meter, _ = make_meter()
    # Alone for 90 s: 0.4 kW * 90 s / 3600 = 0.01 kWh. Sharing half the node: 0.005 kWh.
    assert meter.job_energy_kwh(90.0) == pytest.approx(0.01)
    assert meter.job_energy_kwh(90.0, share=0.5) == pytest.approx(0.005)
    assert job_energy_kwh(IDLE_KW, BUSY_KW, 0.0, 1.0) == 0.0


def test_jobs_sum_to_the_busy_energy() -> None:
    # Two jobs run together for an hour at full utilisation, half the node each.
    meter, clock = make_meter()
    meter.set_utilisation(1.0)
    clock.advance(3600)
    jobs_kwh = 2 * meter.job_energy_kwh(3600.0, share=0.5)
    assert jobs_kwh == pytest.approx(meter.read().busy_energy_kwh)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        GpuPowerMeter(2.0, 1.0, ManualClock())
    meter, clock = make_meter()
    with pytest.raises(ValueError):
        meter.job_energy_kwh(-1.0)
    with pytest.raises(ValueError):
        meter.set_utilisation(float("nan"))
    clock.advance(-10)
    with pytest.raises(ValueError, match="backwards"):
        meter.read()
