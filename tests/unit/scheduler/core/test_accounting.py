"""Accounting per site and hour, on hand-worked numbers."""

from __future__ import annotations

import math

import pytest

from scheduler.core.accounting import Accounting, account_interval
from scheduler.core.market import MarketSnapshot
from scheduler.core.planner import SitePowerPlan

HOUR0 = 1_700_002_800.0  # 2023-11-14 23:00:00 UTC, a multiple of 3600
ZONE = "US-TEX-ERCO"


def make_plan(
    site: str = "s1",
    mining_mw: float = 10.0,
    ai_mw: float = 2.0,
    idle_gpu_mw: float = 0.5,
    curtailed_mw: float = 4.0,
    price_usd_per_mwh: float = 50.0,
    r_mine_usd_per_mwh: float = 95.0,
) -> SitePowerPlan:
    return SitePowerPlan(
        site=site,
        mining_mw=mining_mw,
        ai_mw=ai_mw,
        idle_gpu_mw=idle_gpu_mw,
        curtailed_mw=curtailed_mw,
        price_usd_per_mwh=price_usd_per_mwh,
        r_mine_usd_per_mwh=r_mine_usd_per_mwh,
        opportunity_price_usd_per_mwh=price_usd_per_mwh,
        at_cap=False,
        mode_changed_at_s=HOUR0,
        reasons=(),
        fallback=False,
        price_zone=ZONE,
    )


def make_market(price: float | None, t_s: float = HOUR0) -> MarketSnapshot:
    return MarketSnapshot(
        t_s=t_s,
        price_usd_per_mwh_by_zone={ZONE: price} if price is not None else {},
        btc_usd=None, difficulty=None, fees_btc_per_block=None, hashprice_usd_per_phs_day=None,
        stale_zones=frozenset() if price is not None else frozenset({ZONE}),
    )


def test_one_hour_worked_example() -> None:
    # 10 MW mining + 2 MW AI + 0.5 MW idle GPUs for 1 h at $50/MWh, R_mine $95/MWh, $3,000 AI:
    # mining earns 10 * 95 = $950; power costs 12.5 * 50 = $625; profit 950 + 3000 - 625 = $3,325.
    row = account_interval(make_plan(), make_market(50.0), 3600.0, 3000.0)
    assert (row.mining_mwh, row.ai_mwh, row.idle_mwh, row.curtailed_mwh) == (10.0, 2.0, 0.5, 4.0)
    assert row.mining_revenue_usd == pytest.approx(950.0)
    assert row.power_cost_usd == pytest.approx(625.0)
    assert row.profit_usd == pytest.approx(3325.0)
    assert row.start_s == HOUR0


def test_market_price_is_used_and_negative_prices_pay() -> None:
    # Market at -$20/MWh although the plan decided at $50: cost 12.5 * -20 = -$250 (paid).
    row = account_interval(make_plan(), make_market(-20.0), 3600.0, 0.0)
    assert row.power_cost_usd == pytest.approx(-250.0)
    assert row.profit_usd == pytest.approx(950.0 + 250.0)


def test_stale_market_falls_back_to_the_plans_price_unless_given_one() -> None:
    plan = make_plan(price_usd_per_mwh=1000.0)
    assert account_interval(plan, make_market(None), 3600.0, 0.0).power_cost_usd == 12_500.0
    given = account_interval(plan, make_market(None), 3600.0, 0.0, price_usd_per_mwh=40.0)
    assert given.power_cost_usd == pytest.approx(500.0)


def test_measured_ai_energy_overrides_the_plan() -> None:
    # 15 minutes: 10 MW mining = 2.5 MWh; AI measured 0.3 MWh; idle 0.125 MWh.
    row = account_interval(make_plan(), make_market(50.0), 900.0, 100.0, ai_mwh=0.3)
    assert row.mining_mwh == pytest.approx(2.5)
    assert row.ai_mwh == 0.3
    assert row.power_cost_usd == pytest.approx((2.5 + 0.3 + 0.125) * 50.0)


def test_interval_across_an_hour_boundary_is_split_by_time() -> None:
    ledger = Accounting()
    # 30 minutes from 23:45: 15 minutes in each hour, so each gets half.
    ledger.add(account_interval(make_plan(), None, 1800.0, 200.0, start_s=HOUR0 + 2700.0,
                                price_usd_per_mwh=50.0))
    first = ledger.row("s1", HOUR0)
    second = ledger.row("s1", HOUR0 + 3600.0)
    assert first is not None and second is not None
    assert first.mining_mwh == pytest.approx(2.5) and second.mining_mwh == pytest.approx(2.5)
    assert first.ai_revenue_usd == pytest.approx(100.0)
    assert first.covered_s == pytest.approx(900.0)


def test_ledger_sums_per_site_and_hour_and_in_total() -> None:
    ledger = Accounting()
    for quarter in range(4):
        start_s = HOUR0 + quarter * 900.0
        for site in ("a", "b"):
            ledger.add(account_interval(make_plan(site=site), make_market(50.0, start_s), 900.0,
                                        750.0))
    row = ledger.row("a", HOUR0)
    assert row is not None
    assert row.mining_mwh == pytest.approx(10.0)  # four quarters of 2.5 MWh
    assert row.profit_usd == pytest.approx(3325.0)  # as the one-hour example
    assert row.covered_s == pytest.approx(3600.0)
    assert [r.site for r in ledger.rows()] == ["a", "b"]
    total = ledger.totals()
    assert total.site == "*" and math.isnan(total.hour_start_s)
    assert total.profit_usd == pytest.approx(2 * 3325.0)
    assert set(ledger.totals_by_site()) == {"a", "b"}
    records = ledger.as_records()
    assert records[0]["profit_usd"] == pytest.approx(3325.0)


def test_zero_and_negative_durations() -> None:
    ledger = Accounting()
    ledger.add(account_interval(make_plan(), make_market(50.0), 0.0, 0.0))
    assert ledger.rows() == []
    with pytest.raises(ValueError):
        account_interval(make_plan(), make_market(50.0), -1.0, 0.0)


def test_forget_before_drops_only_older_hours() -> None:
    from scheduler.core.accounting import Accounting, IntervalAccount

    ledger = Accounting()
    for hour in range(3):
        ledger.add(
            IntervalAccount(
                site="s", start_s=hour * 3600.0, duration_s=3600.0, mining_mwh=1.0, ai_mwh=0.0,
                idle_mwh=0.0, curtailed_mwh=0.0, mining_revenue_usd=1.0, ai_revenue_usd=0.0,
                power_cost_usd=0.0,
            )
        )
    assert ledger.forget_before(7200.0) == 2
    assert [r.hour_start_s for r in ledger.rows()] == [7200.0]


def test_the_hours_an_interval_touches() -> None:
    from scheduler.core.accounting import Accounting, IntervalAccount

    def interval(start_s: float, duration_s: float) -> IntervalAccount:
        return IntervalAccount("s", start_s, duration_s, 0, 0, 0, 0, 0, 0, 0)

    ledger = Accounting()
    assert ledger.hours_of(interval(0.0, 3600.0)) == [0.0]
    assert ledger.hours_of(interval(3000.0, 1200.0)) == [0.0, 3600.0]
    assert ledger.hours_of(interval(3600.0, 7300.0)) == [3600.0, 7200.0, 10800.0]
    assert ledger.hours_of(interval(10.0, 0.0)) == []
