"""The replay feed: what it knows at a history time, on a real and a compressed clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from scheduler import data
from scheduler.core.clock import ManualClock
from scheduler.core.economics import hashprice_usd_per_phs_day
from scheduler.core.market import MarketLimits
from scheduler.feeds import MarketFeed, ReplayFeed, load_btc_daily, load_price_table

JUNE_15_2023 = dt.datetime(2023, 6, 15, tzinfo=dt.UTC).timestamp()


@pytest.fixture(scope="module")
def feed() -> ReplayFeed:
    return ReplayFeed(start=JUNE_15_2023)


def test_replay_is_a_market_feed(feed: ReplayFeed) -> None:
    assert isinstance(feed, MarketFeed)


def test_prices_and_bitcoin_at_a_known_hour(feed: ReplayFeed) -> None:
    table = load_price_table(data.price_file())
    btc = load_btc_daily(data.btc_facts_file())
    t = JUNE_15_2023 + 12 * 3600 + 1800  # 12:30, inside the 12:00 hour
    s = feed.snapshot(t)  # identity clock: scheduler time is history time
    row = table.row_at(t)
    assert row is not None
    assert s.price_usd_per_mwh_by_zone["US-TEX-ERCO"] == table.prices[row, 0]
    de = table.prices[row, table.zone_index("DE-LU")]
    assert s.price_usd_per_mwh_by_zone["DE-LU"] == pytest.approx(de * 1.07764)
    day = btc.row_at(t)
    assert day is not None
    # No look-ahead: the Bitcoin price is the previous day's close, fees the previous day's.
    assert s.btc_usd == btc.close_usd[day - 1]
    assert s.difficulty == btc.difficulty[day]
    assert s.fees_btc_per_block == pytest.approx(btc.fees_btc_per_day[day - 1] / 144)
    assert s.hashprice_usd_per_phs_day == pytest.approx(hashprice_usd_per_phs_day(
        btc.close_usd[day - 1], btc.difficulty[day], btc.fees_btc_per_day[day - 1] / 144, 6.25))
    assert s.problems == () and s.stale_zones == frozenset()
    assert s.sources["price[DE-LU]"] == "replay"
    assert s.as_of_s["price[DE-LU]"] == JUNE_15_2023 + 12 * 3600


def test_a_compressed_clock_walks_through_history() -> None:
    clock = ManualClock(1_000.0)
    speedup = 3600.0  # one hour of history per second
    feed = ReplayFeed(start=JUNE_15_2023, speedup=speedup, clock=clock,
                      limits=MarketLimits().scaled(speedup))
    assert feed.history_time(clock.now_s()) == JUNE_15_2023
    s = feed.snapshot(clock.advance(10.5))  # 10.5 s later: 10:30 in history
    assert s.market_time_s == JUNE_15_2023 + 10.5 * 3600
    # The 10:00 price, stamped on the scheduler's clock at 10 s after the origin.
    assert s.as_of_s["price[US-TEX-ERCO]"] == pytest.approx(1_010.0)
    reference = ReplayFeed(start=JUNE_15_2023).snapshot(JUNE_15_2023 + 10.5 * 3600)
    assert s.price_usd_per_mwh_by_zone == reference.price_usd_per_mwh_by_zone
    assert s.hashprice_usd_per_phs_day == reference.hashprice_usd_per_phs_day
    assert s.problems == ()


def test_gaps_are_carried_two_hours_then_reported(tmp_path: Path) -> None:
    prices = tmp_path / "p.csv"
    prices.write_text(
        "timestamp_utc,US-TEX-ERCO__USD_per_MWh\n"
        "2023-06-15T00:00:00Z,30\n"
        "2023-06-15T01:00:00Z,\n"
        "2023-06-15T02:00:00Z,\n"
        "2023-06-15T03:00:00Z,\n"
        "2023-06-15T04:00:00Z,40\n"
    )
    feed = ReplayFeed(prices, data.btc_facts_file())
    assert feed.snapshot(JUNE_15_2023 + 1.5 * 3600).usable_price("US-TEX-ERCO") == 30.0
    late = feed.snapshot(JUNE_15_2023 + 2.5 * 3600)
    assert late.stale_zones == frozenset({"US-TEX-ERCO"})
    assert any("price[US-TEX-ERCO]: replay: stale" in p for p in late.problems)
    assert feed.snapshot(JUNE_15_2023 + 4 * 3600).usable_price("US-TEX-ERCO") == 40.0


def test_outside_the_files_everything_is_missing(feed: ReplayFeed) -> None:
    s = feed.snapshot(dt.datetime(2025, 6, 1, tzinfo=dt.UTC).timestamp())
    assert len(s.stale_zones) == 12
    assert s.hashprice_usd_per_phs_day is None  # difficulty data end on 2025-03-22
    assert any("outside the price file" in p for p in s.problems)


def test_before_the_bitcoin_price_starts_hashprice_is_unknown() -> None:
    s = ReplayFeed(start="2020-03-01T00:00:00Z").snapshot(
        dt.datetime(2020, 3, 1, tzinfo=dt.UTC).timestamp())
    assert s.btc_usd is None and s.hashprice_usd_per_phs_day is None
    assert "btc_usd: missing" in s.problems
    assert s.subsidy_btc == 12.5


DEC_30_2024 = dt.datetime(2024, 12, 30, tzinfo=dt.UTC).timestamp()


def test_a_looping_replay_never_runs_dry() -> None:
    # Start two days before the price file ends, one hour of history per second: after 48 s the
    # file is over; a plain replay falls back everywhere, a looping one reads its start again.
    speedup = 3600.0
    clock = ManualClock(0.0)
    limits = MarketLimits().scaled(speedup)
    plain = ReplayFeed(start=DEC_30_2024, speedup=speedup, clock=clock, limits=limits)
    looping = ReplayFeed(start=DEC_30_2024, speedup=speedup, clock=clock, limits=limits,
                         loop=True)
    assert looping.loop_span_s == 2 * 86_400.0
    first = looping.snapshot(5.5)  # 05:30 on 2024-12-30
    assert plain.snapshot(48.5 + 5).problems  # past the file: no prices
    for cycle in (1, 2, 7):
        now_s = cycle * 48.0 + 5.5
        again = looping.snapshot(now_s)
        assert looping.loops(now_s) == cycle
        # The same as the first time round (the shipped fees stop in 2024-04: stale both times).
        assert again.problems == first.problems and again.stale_zones == frozenset()
        assert set(again.price_usd_per_mwh_by_zone) == set(looping.zones)
        assert again.price_usd_per_mwh_by_zone == first.price_usd_per_mwh_by_zone
        assert again.hashprice_usd_per_phs_day == first.hashprice_usd_per_phs_day
        # Market time goes on (the ledger books new hours); the quotes are stamped in this cycle.
        assert again.market_time_s == DEC_30_2024 + now_s * 3600.0
        assert again.as_of_s["price[US-TEX-ERCO]"] == pytest.approx(cycle * 48.0 + 5.0)
        history = looping.price_history(now_s, ["US-TEX-ERCO"], {"USD": 1.0}, 24)
        assert history["US-TEX-ERCO"].next_hour_start_s == pytest.approx(cycle * 48.0 + 6.0)
    assert looping.loops(47.9) == 0


def test_a_loop_needs_a_day_of_prices_after_its_start() -> None:
    with pytest.raises(ValueError, match="at least a day of prices"):
        ReplayFeed(start=DEC_30_2024 + 36 * 3600, loop=True)
