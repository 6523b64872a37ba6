"""Input files: what is read for a period, and errors that name the file, row and column."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from scheduler.backtest.inputs import (
    InputError,
    day_start_s,
    load_btc_daily,
    load_prices,
    load_trace,
)

START_S = day_start_s(date(2024, 7, 1))
HEADER = "timestamp_utc,US-TEX-ERCO__USD_per_MWh,DE-LU__EUR_per_MWh\n"


def price_file(tmp_path: Path, rows: list[str], name: str = "prices.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def hours(day: int, values: list[tuple[str, str]]) -> list[str]:
    return [f"2024-07-{day:02d}T{h:02d}:00:00Z,{a},{b}" for h, (a, b) in enumerate(values)]


def test_reads_the_period_and_carries_short_gaps(tmp_path: Path) -> None:
    rows = hours(1, [("10", "5"), ("", "6"), ("30", ""), ("40", "8")])
    path = price_file(tmp_path, rows)
    table = load_prices(path, ["US-TEX-ERCO__USD_per_MWh", "DE-LU__EUR_per_MWh"], START_S, 4,
                        lookback_h=0)
    np.testing.assert_allclose(table.period("US-TEX-ERCO__USD_per_MWh"), [10, 10, 30, 40])
    np.testing.assert_allclose(table.period("DE-LU__EUR_per_MWh"), [5, 6, 6, 8])
    assert table.filled_hours == {"US-TEX-ERCO__USD_per_MWh": 1, "DE-LU__EUR_per_MWh": 1}


def test_gzip_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "\n".join(hours(1, [("1", "2")] * 2))).encode()))
    table = load_prices(path, ["DE-LU__EUR_per_MWh"], START_S, 2, lookback_h=0)
    np.testing.assert_allclose(table.period("DE-LU__EUR_per_MWh"), [2, 2])


@pytest.mark.parametrize(
    ("rows", "columns", "row", "column", "words"),
    [
        # a value that is not a number: line 3 (header is line 1)
        (hours(1, [("1", "2"), ("abc", "2")]), ["US-TEX-ERCO__USD_per_MWh"], 3,
         "US-TEX-ERCO__USD_per_MWh", "not a number"),
        # a timestamp that is not ISO-8601
        (["2024-07-01T00:00:00Z,1,2", "yesterday,1,2"], ["DE-LU__EUR_per_MWh"], 3,
         "timestamp_utc", "ISO-8601"),
        # a column the file does not have: the header row
        (hours(1, [("1", "2")] * 2), ["FR__EUR_per_MWh"], 1, "FR__EUR_per_MWh",
         "missing column"),
        # time going backwards
        (["2024-07-01T01:00:00Z,1,2", "2024-07-01T00:00:00Z,1,2"], ["DE-LU__EUR_per_MWh"], 3,
         "timestamp_utc", "increase"),
        # an empty first value: nothing to carry forward
        (hours(1, [("", "2"), ("1", "2")]), ["US-TEX-ERCO__USD_per_MWh"], 2,
         "US-TEX-ERCO__USD_per_MWh", "empty price"),
        # a row with too few cells
        (["2024-07-01T00:00:00Z,1"], ["DE-LU__EUR_per_MWh"], 2, "DE-LU__EUR_per_MWh",
         "cells"),
    ],
)
def test_price_errors_name_file_row_and_column(
    tmp_path: Path, rows: list[str], columns: list[str], row: int, column: str, words: str
) -> None:
    path = price_file(tmp_path, rows)
    with pytest.raises(InputError) as caught:
        load_prices(path, columns, START_S, 2, lookback_h=0)
    error = caught.value
    assert (error.path, error.row, error.column) == (str(path), row, column)
    assert words in error.message
    assert str(path) in str(error) and f"row {row}" in str(error) and column in str(error)


def test_a_long_gap_is_an_error_at_its_first_row(tmp_path: Path) -> None:
    values = [("1", "2")] + [("", "2")] * 3
    path = price_file(tmp_path, hours(1, values))
    with pytest.raises(InputError) as caught:
        load_prices(path, ["US-TEX-ERCO__USD_per_MWh"], START_S, 4, max_gap_h=2, lookback_h=0)
    assert caught.value.row == 3  # the first empty hour (line 3)
    assert "3 empty hours" in caught.value.message


def test_a_missing_row_is_filled_and_a_repeated_hour_merged(tmp_path: Path) -> None:
    # The spring DST hour (02:00) is missing; the fall hour (04:00) comes twice.
    rows = [
        "2024-07-01T00:00:00Z,10,1", "2024-07-01T01:00:00Z,20,2",
        "2024-07-01T03:00:00Z,40,4", "2024-07-01T04:00:00Z,50,5",
        "2024-07-01T04:00:00Z,70,7", "2024-07-01T05:00:00Z,60,6",
    ]
    path = price_file(tmp_path, rows)
    table = load_prices(path, ["US-TEX-ERCO__USD_per_MWh"], START_S, 6, lookback_h=0)
    assert table.period("US-TEX-ERCO__USD_per_MWh").tolist() == [10, 20, 20, 40, 60, 60]
    assert (table.missing_rows, table.merged_rows) == (1, 1)
    assert table.filled_hours == {"US-TEX-ERCO__USD_per_MWh": 1}


def test_missing_rows_longer_than_the_bound_are_an_error(tmp_path: Path) -> None:
    rows = ["2024-07-01T00:00:00Z,10,1", "2024-07-01T04:00:00Z,50,5"]
    path = price_file(tmp_path, rows)
    with pytest.raises(InputError, match="3 empty hours"):
        load_prices(path, ["DE-LU__EUR_per_MWh"], START_S, 5, max_gap_h=2, lookback_h=0)


def test_a_period_the_file_does_not_cover(tmp_path: Path) -> None:
    path = price_file(tmp_path, hours(1, [("1", "2")] * 3))
    with pytest.raises(InputError, match=r"2024-07-01T03:00Z is missing"):
        load_prices(path, ["DE-LU__EUR_per_MWh"], START_S, 5, lookback_h=0)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found") as caught:
        load_prices(tmp_path / "nope.csv", ["x"], START_S, 1)
    assert caught.value.row is None


BTC_HEADER = "date_utc,btc_usd_close,difficulty,fees_btc_per_day\n"


def test_btc_days_with_fees_per_block(tmp_path: Path) -> None:
    path = tmp_path / "btc.csv"
    path.write_text(BTC_HEADER + "2024-07-01,60000,8e13,28.8\n2024-07-02,61000,8e13,\n")
    btc = load_btc_daily(path, date(2024, 7, 1), 2)
    np.testing.assert_allclose(btc.fees_btc_per_block, [0.2, 0.0])  # 28.8 / 144; none -> 0
    assert btc.fee_days == 1


def test_btc_empty_difficulty_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "btc.csv"
    path.write_text(BTC_HEADER + "2024-07-01,60000,8e13,1\n2024-07-02,61000,,1\n")
    with pytest.raises(InputError) as caught:
        load_btc_daily(path, date(2024, 7, 1), 2)
    assert (caught.value.row, caught.value.column) == (3, "difficulty")


def test_btc_missing_day(tmp_path: Path) -> None:
    path = tmp_path / "btc.csv"
    path.write_text(BTC_HEADER + "2024-07-01,60000,8e13,1\n")
    with pytest.raises(InputError, match="no row for 2024-07-02") as caught:
        load_btc_daily(path, date(2024, 7, 1), 2)
    assert caught.value.column == "date_utc"


def test_btc_fees_from_a_second_file(tmp_path: Path) -> None:
    path = tmp_path / "btc.csv"
    path.write_text("date_utc,btc_usd_close,difficulty\n2024-07-01,60000,8e13\n")
    fees = tmp_path / "fees.csv"
    fees.write_text("date_utc,fees_btc_per_day\n2024-07-01,14.4\n")
    btc = load_btc_daily(path, date(2024, 7, 1), 1, fees)
    np.testing.assert_allclose(btc.fees_btc_per_block, [0.1])


def test_trace_reads_azure_times(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
        "2023-11-16 18:17:05.4799600,100,20\n"
    )
    trace = load_trace(path)
    np.testing.assert_allclose(trace.offset_s, [0.0, 1.5])
    np.testing.assert_allclose(trace.input_tokens, [4808, 100])


@pytest.mark.parametrize(
    ("line", "column", "words"),
    [
        ("2023-11-16 18:17:03.98,-3,10", "ContextTokens", "negative"),
        ("2023-11-16 18:17:03.98,12,ten", "GeneratedTokens", "whole number"),
        ("soon,12,10", "TIMESTAMP", "not a time"),
    ],
)
def test_trace_errors_name_row_and_column(
    tmp_path: Path, line: str, column: str, words: str
) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,1,1\n" + line)
    with pytest.raises(InputError) as caught:
        load_trace(path)
    assert (caught.value.row, caught.value.column) == (3, column)
    assert words in caught.value.message


def test_trace_without_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("time,in,out\n1,2,3\n")
    with pytest.raises(InputError, match="missing column") as caught:
        load_trace(path)
    assert (caught.value.row, caught.value.column) == (1, "TIMESTAMP")
