"""Live prices from the journal as a price file the backtester reads."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hashserve.cli import app
from scheduler.backtest.build import price_columns
from scheduler.backtest.inputs import load_prices
from scheduler.core.market import ZoneHourPrice
from scheduler.feeds.export import write_price_file
from scheduler.journal import open_journal

H0 = 1_764_547_200.0  # 2025-12-01T00:00Z


def rows() -> list[ZoneHourPrice]:
    return [
        ZoneHourPrice("US-TEX-ERCO@HB_WEST", H0 + 3600, -12.5, "ercot", 4),
        ZoneHourPrice("US-TEX-ERCO@HB_WEST", H0, 20.25, "ercot", 4),
        ZoneHourPrice("DE-LU", H0, 95.0, "entsoe"),
        ZoneHourPrice("DE-LU", H0 + 7200, 80.0, "entsoe"),
    ]


def test_the_file_has_one_row_an_hour_and_a_column_a_zone() -> None:
    out = io.StringIO()
    assert write_price_file(rows(), out) == (3, 2)
    assert out.getvalue().splitlines() == [
        "timestamp_utc,DE-LU__USD_per_MWh,US-TEX-ERCO@HB_WEST__USD_per_MWh",
        "2025-12-01T00:00:00Z,95,20.25",
        "2025-12-01T01:00:00Z,,-12.5",
        "2025-12-01T02:00:00Z,80,",
    ]


def test_the_backtester_reads_an_exported_file(tmp_path: Path) -> None:
    journal_path = tmp_path / "journal.db"
    journal = open_journal(f"sqlite:///{journal_path}")
    journal.put_market_prices(rows())
    journal.close()
    out = tmp_path / "live.csv"
    result = CliRunner().invoke(app, ["export-prices", "--journal", f"sqlite:///{journal_path}",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 hours of 2 zones" in result.output
    # A site on HB_WEST reads its own column; a site on the plain zone would read the zone's.
    columns = price_columns(out, ["US-TEX-ERCO@HB_WEST", "DE-LU"])
    assert columns == {"US-TEX-ERCO@HB_WEST": "US-TEX-ERCO@HB_WEST__USD_per_MWh",
                       "DE-LU": "DE-LU__USD_per_MWh"}
    table = load_prices(out, list(columns.values()), H0, 3, lookback_h=0)
    west = table.native_per_mwh["US-TEX-ERCO@HB_WEST__USD_per_MWh"]
    assert list(west[:2]) == [20.25, -12.5]
    assert list(table.native_per_mwh["DE-LU__USD_per_MWh"]) == [95.0, 95.0, 80.0]  # gap filled


def test_an_empty_journal_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export-prices", "--journal",
                                      f"sqlite:///{tmp_path / 'j.db'}", "--out",
                                      str(tmp_path / "x.csv")])
    assert result.exit_code == 1
    assert "no live prices" in result.output


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01"])
def test_a_bad_time_is_refused(tmp_path: Path, bad: str) -> None:
    result = CliRunner().invoke(app, ["export-prices", "--out", str(tmp_path / "x.csv"),
                                      "--start", bad])
    assert result.exit_code == 2
