"""The economics against hand-worked numbers and the real chain data."""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path

import pytest

from scheduler.core.economics import (
    asic_power_mw,
    block_subsidy_btc,
    fees_btc_per_block_from_daily,
    hashprice_usd_per_phs_day,
    mining_revenue_usd_per_mwh,
    network_hashrate_hs,
    opportunity_price_usd_per_mwh,
)

REPO_ROOT = Path(__file__).resolve().parents[4]


def shared_data_dir() -> Path:
    env = os.environ.get("HASHSERVE_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


BTC_FILE = shared_data_dir() / "btc_daily_price_hashrate_2020_2026.csv"


def test_network_hashrate_from_difficulty() -> None:
    # 1e14 * 2**32 / 600 = 1e14 * 4,294,967,296 / 600 = 7.158278826666667e20 H/s (~716 EH/s).
    assert network_hashrate_hs(1e14) == pytest.approx(7.158278826666667e20, rel=1e-12)


@pytest.mark.parametrize(
    ("day", "subsidy_btc"),
    [
        (dt.date(2016, 7, 8), 25.0),
        (dt.date(2016, 7, 9), 12.5),
        (dt.date(2020, 5, 10), 12.5),
        (dt.date(2020, 5, 11), 6.25),
        (dt.date(2024, 4, 19), 6.25),
        (dt.date(2024, 4, 20), 3.125),
        (dt.date(2026, 1, 1), 3.125),
    ],
)
def test_block_subsidy_by_day(day: dt.date, subsidy_btc: float) -> None:
    assert block_subsidy_btc(day) == subsidy_btc


def test_hashprice_hand_worked() -> None:
    # H = 715,827.88 PH/s at difficulty 1e14; 144 * 3.125 BTC * $60,000 = $27,000,000 a day;
    # / 715,827.88 = $37.7189 per PH/s-day.
    assert hashprice_usd_per_phs_day(60_000.0, 1e14, 0.0, 3.125) == pytest.approx(37.7189, 1e-5)
    # Fees of 0.3125 BTC a block add 10%: (3.125 + 0.3125) / 3.125 = 1.1.
    with_fees = hashprice_usd_per_phs_day(60_000.0, 1e14, 0.3125, 3.125)
    assert with_fees == pytest.approx(37.7189 * 1.1, 1e-5)


def test_hashprice_refuses_zero_difficulty() -> None:
    with pytest.raises(ValueError, match="difficulty"):
        hashprice_usd_per_phs_day(60_000.0, 0.0, 0.0, 3.125)


def _btc_rows() -> dict[str, dict[str, str]]:
    with open(BTC_FILE, newline="") as f:
        return {r["date_utc"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize(
    ("day", "expected_usd_per_phs_day"),
    [
        # Values of the derived column hashprice_subsidy_only_usd_per_phs_day, read by hand.
        ("2020-07-17", 66.371),
        ("2021-08-13", 414.858),
        ("2023-06-15", 61.421),
        ("2024-04-19", 92.924),  # last day at 6.25 BTC
        ("2024-04-20", 47.285),  # halving day: 3.125 BTC
        ("2024-12-31", 53.479),
    ],
)
def test_hashprice_matches_the_real_chain_data(day: str, expected_usd_per_phs_day: float) -> None:
    row = _btc_rows()[day]
    hashprice = hashprice_usd_per_phs_day(
        btc_usd=float(row["btc_usd_close"]),
        difficulty=float(row["difficulty"]),
        fees_btc_per_block=0.0,
        subsidy_btc=block_subsidy_btc(dt.date.fromisoformat(day)),
    )
    assert float(row["hashprice_subsidy_only_usd_per_phs_day"]) == expected_usd_per_phs_day
    assert hashprice == pytest.approx(expected_usd_per_phs_day, rel=0.005)


def test_hashprice_matches_every_day_of_the_real_chain_data() -> None:
    checked = 0
    for day, row in _btc_rows().items():
        derived = row["hashprice_subsidy_only_usd_per_phs_day"]
        if not derived:
            continue
        hashprice = hashprice_usd_per_phs_day(
            float(row["btc_usd_close"]),
            float(row["difficulty"]),
            0.0,
            block_subsidy_btc(dt.date.fromisoformat(day)),
        )
        assert hashprice == pytest.approx(float(derived), rel=0.005), day
        checked += 1
    assert checked > 1500  # 2020-07-12 .. 2025-03-22


def test_r_mine_of_an_s21_at_40_usd_per_phs_day() -> None:
    # DESIGN: 40 / (0.024 * 17.5) = 40 / 0.42 = $95.238/MWh.
    assert mining_revenue_usd_per_mwh(40.0, 17.5, 0.0) == pytest.approx(95.238, abs=1e-3)
    # A 2% pool fee keeps 98%: 95.238 * 0.98 = $93.333/MWh.
    assert mining_revenue_usd_per_mwh(40.0, 17.5, 0.02) == pytest.approx(93.333, abs=1e-3)
    # An S19j Pro at 29.5 J/TH earns less per MWh: 40 / 0.708 = $56.497/MWh.
    assert mining_revenue_usd_per_mwh(40.0, 29.5, 0.0) == pytest.approx(56.497, abs=1e-3)


def test_r_mine_equals_revenue_over_energy() -> None:
    # 1,000 PH/s at 17.5 J/TH draws 17.5 MW = 420 MWh a day and earns 1,000 * $40 = $40,000:
    # $40,000 / 420 MWh = $95.238/MWh.
    power_mw = asic_power_mw(1000.0, 17.5)
    assert power_mw == pytest.approx(17.5)
    assert 1000.0 * 40.0 / (power_mw * 24) == pytest.approx(mining_revenue_usd_per_mwh(40, 17.5, 0))


@pytest.mark.parametrize(
    ("price", "r_mine", "at_cap", "expected"),
    [
        (30.0, 95.0, False, 30.0),  # spare capacity: just the power price
        (30.0, 95.0, True, 95.0),  # at the cap: the MWh is taken from mining, which earns $95
        (150.0, 95.0, True, 150.0),  # mining would not run at $150; the price is the cost
        (-20.0, 95.0, False, -20.0),  # negative price with spare capacity: paid to consume
        (-20.0, 95.0, True, 95.0),  # negative price at the cap: mining's margin is forgone
        (-20.0, -30.0, True, -20.0),  # (a negative R_mine cannot happen, but max() holds)
    ],
)
def test_opportunity_price(price: float, r_mine: float, at_cap: bool, expected: float) -> None:
    assert opportunity_price_usd_per_mwh(price, r_mine, at_cap) == expected


def test_fees_per_block_from_daily_total() -> None:
    # 43.2 BTC a day over 144 blocks = 0.3 BTC a block.
    assert fees_btc_per_block_from_daily(43.2) == pytest.approx(0.3)
