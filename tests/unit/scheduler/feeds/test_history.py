"""Loading the historical files: the real shipped ones, and small files with gaps and errors."""

from __future__ import annotations

import csv
import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest

from scheduler import data
from scheduler.feeds.history import HistoryFileError, load_btc_daily, load_price_table

REPO_ROOT = Path(__file__).resolve().parents[4]
SHARED = Path(os.environ.get("HASHSERVE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
H2020 = 1_577_836_800.0  # 2020-01-01T00:00:00Z


def test_the_shipped_price_file_loads_whole() -> None:
    table = load_price_table(data.price_file())
    assert table.hours == 43_848  # 2020-2024: 1,827 days * 24
    assert table.t_s[0] == H2020
    assert bool(np.all(np.diff(table.t_s) == 3600.0))
    assert table.zones[0] == "US-TEX-ERCO" and table.currencies[6] == "EUR"
    assert len(table.zones) == 12
    # The first rows as written in the file: CAISO 42.288 USD, DE-LU 38.6 EUR, JP-TK 6650 JPY.
    assert table.prices[0, table.zone_index("US-CAL-CISO")] == 42.288
    assert table.prices[0, table.zone_index("DE-LU")] == 38.6
    assert math.isnan(table.prices[0, table.zone_index("US-TEX-ERCO")])
    usd = table.usd()
    assert usd[0, table.zone_index("JP-TK")] == pytest.approx(6650.0 * 0.00665)


def test_price_rows_match_the_real_file_cell_by_cell() -> None:
    table = load_price_table(data.price_file())
    with gzip.open(data.price_file(), "rt", newline="") as f:
        rows = list(csv.reader(f))[1:]
    for i in (0, 1000, 20_000, 43_847):
        for j, cell in enumerate(rows[i][1:]):
            got = table.prices[i, j]
            assert (math.isnan(got) and cell == "") or got == float(cell)


def write_prices(path: Path, rows: list[str]) -> Path:
    path.write_text("timestamp_utc,DE-LU__EUR_per_MWh,US-TEX-ERCO__USD_per_MWh\n"
                    + "\n".join(rows) + "\n")
    return path


def test_last_valid_index_carries_values_over_gaps(tmp_path: Path) -> None:
    table = load_price_table(write_prices(tmp_path / "p.csv", [
        "2020-01-01T00:00:00Z,10,",
        "2020-01-01T01:00:00Z,,5",
        "2020-01-01T02:00:00Z,,",
        "2020-01-01T03:00:00Z,12,6",
    ]))
    assert table.last_valid[:, 0].tolist() == [0, 0, 0, 3]
    assert table.last_valid[:, 1].tolist() == [-1, 1, 1, 3]
    assert table.row_at(H2020 + 3599) == 0
    assert table.row_at(H2020 + 3 * 3600 + 10) == 3
    assert table.row_at(H2020 - 1) is None and table.row_at(H2020 + 4 * 3600) is None


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["2020-01-01T00:00:00Z,10"], "line 2: 2 cells, expected 3"),
        (["2020-01-01T00:00:00Z,abc,1"], "line 2:"),
        (["2020-01-01T01:00:00Z,1,1", "2020-01-01T00:00:00Z,1,1"], "not strictly increasing"),
    ],
)
def test_malformed_price_files_say_where(tmp_path: Path, rows: list[str], message: str) -> None:
    with pytest.raises(HistoryFileError, match=message):
        load_price_table(write_prices(tmp_path / "p.csv", rows))


def test_wrong_currency_for_a_known_zone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("timestamp_utc,DE-LU__USD_per_MWh\n2020-01-01T00:00:00Z,1\n")
    with pytest.raises(HistoryFileError, match="expected EUR"):
        load_price_table(path)


def test_shipped_btc_facts_match_the_shared_sources() -> None:
    btc = load_btc_daily(data.btc_facts_file())
    i = btc.row_at(1_686_830_400.0 + 5)  # 2023-06-15
    assert i is not None
    with open(SHARED / "btc_daily_price_hashrate_2020_2026.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["date_utc"] == "2023-06-15")
    assert btc.close_usd[i] == float(row["btc_usd_close"])
    assert btc.difficulty[i] == float(row["difficulty"])
    with open(SHARED / "btc_blockchaincom_fees_revenue_2023_2024.csv", newline="") as f:
        fees = next(r for r in csv.DictReader(f) if r["date_utc"] == "2023-06-15")
    assert btc.fees_btc_per_day[i] == float(fees["fees_btc_per_day"])
    # No fees known before 2023-04-30: the newest fee fact on 2022-06-01 is none at all.
    j = btc.row_at(1_654_041_600.0)
    assert j is not None and int(btc.last_fees[j]) == -1


def test_the_shared_files_load_with_a_separate_fees_file() -> None:
    btc = load_btc_daily(SHARED / "btc_daily_price_hashrate_2020_2026.csv",
                         SHARED / "btc_blockchaincom_fees_revenue_2023_2024.csv")
    shipped = load_btc_daily(data.btc_facts_file())
    assert btc.days == shipped.days
    np.testing.assert_array_equal(btc.close_usd, shipped.close_usd)
    np.testing.assert_array_equal(btc.difficulty, shipped.difficulty)
    np.testing.assert_array_equal(btc.fees_btc_per_day, shipped.fees_btc_per_day)
