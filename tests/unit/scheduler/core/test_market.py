"""Which quoted market values `assemble_snapshot` accepts, converts, refuses and reports."""

from __future__ import annotations

import math

import pytest

from scheduler.core.economics import hashprice_usd_per_phs_day
from scheduler.core.market import (
    MarketLimits,
    MarketQuotes,
    Quote,
    assemble_snapshot,
)

NOW = 1_718_000_000.0  # 2024-06-10, subsidy 3.125 BTC
FX = {"USD": 1.0, "EUR": 1.07764, "JPY": 0.00665}


def q(value: float, age_s: float = 60.0, currency: str = "USD", source: str = "t") -> Quote:
    return Quote(value, NOW - age_s, source, currency)


def test_prices_are_converted_to_usd() -> None:
    prices = {"DE-LU": q(100.0, currency="EUR"), "JP-TK": q(10_000.0, currency="JPY")}
    s = assemble_snapshot(NOW, [MarketQuotes(prices)], ["DE-LU", "JP-TK"], FX)
    assert s.price_usd_per_mwh_by_zone["DE-LU"] == pytest.approx(107.764)
    assert s.price_usd_per_mwh_by_zone["JP-TK"] == pytest.approx(66.5)
    assert s.stale_zones == frozenset()
    assert s.usable_price("DE-LU") == pytest.approx(107.764)


@pytest.mark.parametrize(
    ("quote", "problem"),
    [
        (q(math.nan), "not a number"),
        (q(80.0, age_s=7201.0), "stale (age 7201 s > max 7200 s)"),
        (q(25_000.0), "absurd value"),
        (q(-1_500.0), "absurd value"),
        (q(80.0, age_s=-600.0), "in the future"),
        (q(80.0, currency="GBP"), "no FX rate for 'GBP'"),
        (Quote(80.0, NOW - 10, "ops", valid_until_s=NOW - 5), "expired 5 s ago"),
    ],
)
def test_bad_prices_are_refused_and_reported(quote: Quote, problem: str) -> None:
    s = assemble_snapshot(NOW, [MarketQuotes({"DE-LU": quote})], ["DE-LU"], FX)
    assert "DE-LU" in s.stale_zones
    assert s.usable_price("DE-LU") is None
    assert any(p.startswith("price[DE-LU]: ") and problem in p for p in s.problems), s.problems


def test_extreme_but_real_prices_pass() -> None:
    # ERCOT's $8,995/MWh (Feb 2021) and Germany's -EUR 500 floor are real values.
    s = assemble_snapshot(
        NOW, [MarketQuotes({"US-TEX-ERCO": q(8995.3), "DE-LU": q(-500.0, currency="EUR")})],
        ["US-TEX-ERCO", "DE-LU"], FX,
    )
    assert s.stale_zones == frozenset()
    assert s.usable_price("DE-LU") == pytest.approx(-538.82)


def test_a_valid_until_replaces_the_age_limit() -> None:
    quote = Quote(80.0, NOW - 86_000.0, "ops", valid_until_s=NOW + 1.0)
    s = assemble_snapshot(NOW, [MarketQuotes({"DE-LU": quote})], ["DE-LU"], FX)
    assert s.usable_price("DE-LU") == 80.0


def test_missing_zone_is_stale_and_reported() -> None:
    s = assemble_snapshot(NOW, [MarketQuotes({})], ["DE-LU"], FX)
    assert s.stale_zones == frozenset({"DE-LU"})
    assert "price[DE-LU]: missing" in s.problems


def test_priority_falls_through_to_the_next_usable_source() -> None:
    ops = MarketQuotes({"DE-LU": q(math.nan, source="ops")})
    http = MarketQuotes({"DE-LU": q(90.0, source="http")})
    replay = MarketQuotes({"DE-LU": q(70.0, source="replay")})
    s = assemble_snapshot(NOW, [ops, http, replay], ["DE-LU"], FX)
    assert s.usable_price("DE-LU") == 90.0
    assert s.sources["price[DE-LU]"] == "http"
    assert s.as_of_s["price[DE-LU]"] == NOW - 60.0
    assert any(p.startswith("price[DE-LU]: ops: not a number") for p in s.problems)


def test_hashprice_from_btc_difficulty_fees_and_subsidy() -> None:
    s = assemble_snapshot(
        NOW, [MarketQuotes(btc_usd=q(60_000.0), difficulty=q(8e13), fees_btc_per_block=q(0.2))],
        [], FX,
    )
    assert s.subsidy_btc == 3.125
    assert s.hashprice_usd_per_phs_day == pytest.approx(
        hashprice_usd_per_phs_day(60_000.0, 8e13, 0.2, 3.125)
    )
    assert s.problems == ()


def test_missing_fees_count_as_zero_and_say_so() -> None:
    s = assemble_snapshot(NOW, [MarketQuotes(btc_usd=q(60_000.0), difficulty=q(8e13))], [], FX)
    assert s.hashprice_usd_per_phs_day == pytest.approx(
        hashprice_usd_per_phs_day(60_000.0, 8e13, 0.0, 3.125)
    )
    assert any("hashprice counts the subsidy only" in p for p in s.problems)


@pytest.mark.parametrize(
    "layer",
    [
        MarketQuotes(btc_usd=q(-5.0), difficulty=q(8e13)),
        MarketQuotes(btc_usd=q(0.0), difficulty=q(8e13)),
        MarketQuotes(btc_usd=q(60_000.0), difficulty=q(-1.0)),
        MarketQuotes(btc_usd=q(math.inf), difficulty=q(8e13)),
        MarketQuotes(btc_usd=q(60_000.0, age_s=3 * 86_400.0), difficulty=q(8e13)),
        MarketQuotes(difficulty=q(8e13)),
    ],
)
def test_unusable_bitcoin_values_leave_hashprice_unknown(layer: MarketQuotes) -> None:
    s = assemble_snapshot(NOW, [layer], [], FX)
    assert s.hashprice_usd_per_phs_day is None
    assert s.problems


def test_a_direct_hashprice_quote_wins() -> None:
    s = assemble_snapshot(
        NOW,
        [MarketQuotes(hashprice_usd_per_phs_day=q(48.0)),
         MarketQuotes(btc_usd=q(60_000.0), difficulty=q(8e13))],
        [], FX,
    )
    assert s.hashprice_usd_per_phs_day == 48.0
    assert s.sources["hashprice_usd_per_phs_day"] == "t"


def test_subsidy_follows_the_markets_own_time_in_a_replay() -> None:
    # Scheduler time is 2024-06 but the replayed market is in 2023: 6.25 BTC.
    layer = MarketQuotes(btc_usd=q(30_000.0), difficulty=q(5e13), fees_btc_per_block=q(0.0),
                         market_time_s=1_686_830_400.0)  # 2023-06-15
    s = assemble_snapshot(NOW, [layer], [], FX)
    assert s.subsidy_btc == 6.25
    assert s.market_time_s == 1_686_830_400.0


def test_scaled_limits_divide_ages_only() -> None:
    limits = MarketLimits().scaled(360.0)
    assert limits.max_price_age_s == pytest.approx(20.0)
    assert limits.max_price_usd_per_mwh == 20_000.0
