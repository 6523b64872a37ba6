"""SimulatedAsicFleet on a ManualClock: whole-block setpoints, linear ramps, exact energy.

The fleet in these tests: 100 PH/s at 20 J/TH = 100 * 20 / 1000 = 2.0 MW, in 0.75 MW blocks:
two full blocks (1.5 MW) and a last block of 0.5 MW.
"""

from __future__ import annotations

import pytest

from node_agent.power import PowerAdapter, SimulatedAsicFleet, SitePowerTarget, fleet_power_mw
from scheduler.core.clock import ManualClock

T0 = 1_700_000_000.0


def make_fleet(
    ramp_s: float = 600.0, start_on: bool = True
) -> tuple[SimulatedAsicFleet, ManualClock]:
    clock = ManualClock(T0)
    fleet = SimulatedAsicFleet(
        hashrate_phs=100.0,
        efficiency_j_per_th=20.0,
        curtail_block_mw=0.75,
        ramp_s=ramp_s,
        clock=clock,
        start_on=start_on,
    )
    return fleet, clock


def mine(mw: float) -> SitePowerTarget:
    return SitePowerTarget(mining_mw=mw, ai_mw=0.0, curtailed_mw=0.0)


def test_fleet_power_matches_design_formula() -> None:
    # DESIGN.md: 24 * e / 1000 MWh per PH/s per day; 17.5 J/TH -> 0.42 MWh per PH/s-day,
    # i.e. 0.0175 MW per PH/s; 100 PH/s -> 1.75 MW.
    assert fleet_power_mw(100.0, 17.5) == pytest.approx(1.75)
    assert fleet_power_mw(1.0, 17.5) * 24 == pytest.approx(24 * 17.5 / 1000)


def test_blocks() -> None:
    fleet, _ = make_fleet()
    assert fleet.full_power_mw == pytest.approx(2.0)
    assert (fleet.full_blocks, fleet.last_block_mw, fleet.block_count) == (2, pytest.approx(0.5), 3)


@pytest.mark.parametrize(
    ("target_mw", "setpoint_mw", "blocks"),
    [
        (5.0, 2.0, 3),  # above the fleet: everything on
        (2.0, 2.0, 3),
        (1.9, 1.5, 2),  # 0.75 + 0.75 beats 0.75 + 0.5
        (1.3, 1.25, 2),  # 0.75 + 0.5 beats 0.75
        (0.75, 0.75, 1),
        (0.6, 0.5, 1),  # only the small block fits
        (0.4, 0.0, 0),
        (0.0, 0.0, 0),
    ],
)
def test_setpoint_is_largest_block_set_under_target(
    target_mw: float, setpoint_mw: float, blocks: int
) -> None:
    fleet, _ = make_fleet()
    got_mw, got_blocks = fleet.setpoint_for(target_mw)
    assert got_mw == pytest.approx(setpoint_mw)
    assert got_blocks == blocks


def test_apply_reports_rounding_as_curtailment() -> None:
    fleet, _ = make_fleet()
    applied = fleet.apply(SitePowerTarget(mining_mw=1.0, ai_mw=3.0, curtailed_mw=0.5))
    # 1.0 MW asked: one 0.75 MW block; the 0.25 MW left joins the 0.5 MW curtailed.
    assert applied.mining_mw == pytest.approx(0.75)
    assert applied.curtailed_mw == pytest.approx(0.75)
    assert applied.ai_mw == 3.0
    assert applied.blocks_on == 1
    assert (applied.applied_at_s, applied.settles_at_s) == (T0, T0 + 600.0)


def test_ramp_and_energy_are_exact() -> None:
    fleet, clock = make_fleet()
    fleet.apply(mine(1.0))  # 2.0 MW -> 0.75 MW over 600 s

    clock.advance(300)
    r = fleet.read()
    # Half way: 2.0 + (0.75 - 2.0) * 0.5 = 1.375 MW; energy (2.0 + 1.375) / 2 * 300 = 506.25 MW s.
    assert r.mining_mw == pytest.approx(1.375)
    assert r.mining_setpoint_mw == pytest.approx(0.75)
    assert r.hashrate_phs == pytest.approx(1.375 / 2.0 * 100)
    assert r.mining_energy_mwh == pytest.approx(506.25 / 3600)

    clock.advance(900)
    r = fleet.read()
    # Ramp done at 600 s: (2.0 + 0.75) / 2 * 600 = 825 MW s, then 600 s flat at 0.75 = 450.
    assert r.mining_mw == pytest.approx(0.75)
    assert r.hashrate_phs == pytest.approx(37.5)
    assert r.mining_energy_mwh == pytest.approx(1275 / 3600)
    # Hash work: 1275 MW s * (100 PH/s / 2 MW) = 63,750 PH s = 63,750 / 86,400 PH/s-days.
    assert r.hash_work_phs_days == pytest.approx(63_750 / 86_400)


def test_new_target_mid_ramp_starts_from_current_power() -> None:
    fleet, clock = make_fleet()
    fleet.apply(mine(1.0))
    clock.advance(300)  # at 1.375 MW on the way down
    applied = fleet.apply(mine(2.0))
    assert applied.settles_at_s == clock.now_s() + 600
    clock.advance(300)
    # Back up from 1.375 towards 2.0, half way: 1.6875 MW.
    assert fleet.read().mining_mw == pytest.approx(1.6875)
    # Energy: 506.25 (first half ramp down) + (1.375 + 1.6875) / 2 * 300 = 506.25 + 459.375.
    assert fleet.read().mining_energy_mwh == pytest.approx((506.25 + 459.375) / 3600)


def test_zero_ramp_switches_at_once_and_repeated_reads_do_not_double_count() -> None:
    fleet, clock = make_fleet(ramp_s=0.0, start_on=False)
    assert fleet.read().mining_mw == 0.0
    applied = fleet.apply(mine(2.0))
    assert applied.settles_at_s == T0
    clock.advance(1800)
    fleet.read()
    fleet.read()
    clock.advance(1800)
    # 2.0 MW for one hour = 2.0 MWh.
    assert fleet.read().mining_energy_mwh == pytest.approx(2.0)


def test_same_setpoint_settles_now() -> None:
    fleet, _ = make_fleet()
    assert fleet.apply(mine(2.0)).settles_at_s == T0


def test_clock_going_backwards_is_refused() -> None:
    fleet, clock = make_fleet()
    clock.set(T0 - 1)
    with pytest.raises(ValueError, match="backwards"):
        fleet.read()


def test_bad_targets_and_settings() -> None:
    with pytest.raises(ValueError):
        SitePowerTarget(mining_mw=-1.0, ai_mw=0.0, curtailed_mw=0.0)
    with pytest.raises(ValueError):
        SitePowerTarget(mining_mw=float("nan"), ai_mw=0.0, curtailed_mw=0.0)
    with pytest.raises(ValueError):
        SimulatedAsicFleet(0.0, 20.0, 1.0, 0.0, ManualClock())
    with pytest.raises(ValueError):
        SimulatedAsicFleet(1.0, 20.0, 1.0, -5.0, ManualClock())


def test_is_a_power_adapter() -> None:
    fleet, _ = make_fleet()
    adapter: PowerAdapter = fleet
    assert adapter.read().blocks_on == 3
