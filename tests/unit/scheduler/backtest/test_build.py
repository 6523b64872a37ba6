"""Building the world from the example fleet and the shipped data (two days, no Ray)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scheduler.backtest.build import (
    MarketData,
    OutlookMode,
    build_world,
    generation_model,
    load_market,
    make_workload,
    week_hour_of_day_mean,
)
from scheduler.backtest.cli import app
from scheduler.backtest.inputs import (
    default_btc_paths,
    default_prices_path,
    default_trace_paths,
    load_trace,
)
from scheduler.backtest.workload import parse_tier_mix
from scheduler.core.economics import (
    block_subsidy_btc,
    hashprice_usd_per_phs_day,
    mining_revenue_usd_per_mwh,
)
from scheduler.core.fleet import Fleet
from scheduler.core.outlook import hour_of_day_outlook
from scheduler.fleet import default_fleet_path, load_fleet


@pytest.fixture(scope="module")
def market_and_fleet() -> tuple[Fleet, MarketData]:
    fleet = load_fleet(default_fleet_path())
    btc, fees = default_btc_paths()
    market = load_market(fleet, default_prices_path(), btc, fees, date(2024, 7, 1),
                         date(2024, 7, 2))
    return fleet, market


def test_prices_in_usd_and_r_mine_from_the_core(market_and_fleet: tuple[Fleet, MarketData]) -> None:
    fleet, market = market_and_fleet
    world = build_world(fleet, market)
    assert world.hours == 48 and world.sites == len(fleet.sites)
    s = next(i for i, site in enumerate(fleet.sites) if site.price_zone == "DE-LU")
    column = market.zone_column["DE-LU"]
    native = market.prices.period(column)
    np.testing.assert_allclose(world.price_usd_per_mwh[s], native * fleet.fx_usd_per_unit["EUR"])
    site = fleet.sites[s]
    btc = market.btc
    hashprice = hashprice_usd_per_phs_day(
        btc.btc_usd[0], btc.difficulty[0], btc.fees_btc_per_block[0],
        block_subsidy_btc(date(2024, 7, 1)),
    )
    expected = mining_revenue_usd_per_mwh(
        hashprice, site.asic.efficiency_j_per_th, site.asic.pool_fee
    )
    assert world.r_mine_usd_per_mwh[s, 0] == pytest.approx(expected)
    assert world.gpu_busy_mw_by_site().sum() == pytest.approx(
        sum(site.gpu_busy_mw for site in fleet.sites)
    )


def test_real_time_zones_forecast_yesterday(market_and_fleet: tuple[Fleet, MarketData]) -> None:
    fleet, market = market_and_fleet
    world = build_world(fleet, market, outlook=OutlookMode.MARKET)
    pjm = next(i for i, s in enumerate(fleet.sites) if s.price_zone == "US-MIDA-PJM")
    ercot = next(i for i, s in enumerate(fleet.sites) if s.price_zone == "US-TEX-ERCO")
    assert world.forecast_usd_per_mwh is not None
    np.testing.assert_allclose(world.forecast_usd_per_mwh[pjm, 24:],
                               world.price_usd_per_mwh[pjm, :24])
    np.testing.assert_allclose(world.forecast_usd_per_mwh[ercot], world.price_usd_per_mwh[ercot])


def test_default_rate_loads_the_gpus(market_and_fleet: tuple[Fleet, MarketData]) -> None:
    fleet, market = market_and_fleet
    world = build_world(fleet, market)
    traces = [load_trace(p) for p in default_trace_paths()]
    model = generation_model(fleet)
    work, _rate = make_workload(world, traces, model, parse_tier_mix("interactive=1"),
                                gpu_load=0.5)
    capacity_mtok_per_h = sum(p.gpus * p.mtok_per_gpu_hour(model.name) for p in world.pools)
    assert work.mtok[:, 0].sum() == pytest.approx(0.5 * capacity_mtok_per_h)


def test_cli_reports_a_bad_input_file(tmp_path: Path) -> None:
    bad = tmp_path / "prices.csv"
    bad.write_text("timestamp_utc,US-TEX-ERCO__USD_per_MWh\n2024-07-01T00:00:00Z,12\n")
    result = CliRunner().invoke(
        app, ["--prices", str(bad), "--start", "2024-07-01", "--end", "2024-07-01", "--no-ray"]
    )
    assert result.exit_code == 2
    assert "prices.csv" in result.output and "no price column for zone" in result.output


def test_live_outlook_is_the_core_forecast() -> None:
    # The live scheduler's forecast for hour t + a (a = 1..12), made at hour t from the week up
    # to t, must equal the vectorised table the backtest precomputes for hour t + a.
    rng = np.random.default_rng(7)
    lookback, hours = 168, 60
    native = rng.uniform(-20, 300, size=lookback + hours)
    table = week_hour_of_day_mean(native, lookback, hours)
    for t in (0, 5, 23, 40):
        now = lookback + t
        past = native[now - 167 : now + 1].tolist()
        expected = hour_of_day_outlook(past, 12)
        np.testing.assert_allclose(table[t + 1 : t + 13], expected[: hours - t - 1])


def test_the_file_outlook_reads_a_zones_day_ahead_column(tmp_path: Path) -> None:
    # Two days (plus the loader's week of lookback) of an ERCOT column and its day-ahead column
    # in EUR; DE-LU has no day-ahead column, so its outlook stays the live one.
    from scheduler.backtest.build import OutlookMode

    fleet = load_fleet(default_fleet_path()).subset(["tx-odessa", "de-leipzig"])
    start = datetime(2024, 6, 23, tzinfo=UTC)
    lines = ["timestamp_utc,US-TEX-ERCO__USD_per_MWh,DE-LU__EUR_per_MWh,"
             "US-TEX-ERCO:day_ahead__EUR_per_MWh"]
    for h in range(24 * 10):
        stamp = (start + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{stamp},{30 + h % 24},{60 + h % 24},{h}")
    path = tmp_path / "prices.csv"
    path.write_text("\n".join(lines) + "\n")
    btc, fees = default_btc_paths()
    market = load_market(fleet, path, btc, fees, date(2024, 7, 1), date(2024, 7, 2),
                         day_ahead=True)
    assert market.day_ahead_column == {"US-TEX-ERCO": "US-TEX-ERCO:day_ahead__EUR_per_MWh"}
    world = build_world(fleet, market, outlook=OutlookMode.FILE)
    tx = world.site_names.index("tx-odessa")
    de = world.site_names.index("de-leipzig")
    first = 24 * 8  # 2024-07-01T00:00 is hour 192 of the file
    forecast = world.forecast_usd_per_mwh
    assert forecast is not None
    expected = np.arange(first, first + 48, dtype=float) * fleet.fx_usd_per_unit["EUR"]
    np.testing.assert_allclose(forecast[tx], expected)
    live = build_world(fleet, market, outlook=OutlookMode.LIVE).forecast_usd_per_mwh
    assert live is not None
    np.testing.assert_allclose(forecast[de], live[de])
