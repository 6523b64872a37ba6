"""Live prices from the journal as a price file in the shipped format, for later backtests.

`timestamp_utc,<zone>__USD_per_MWh,...`, one row per market hour that has a price in any zone,
empty cells where a zone has none (the backtester fills bounded gaps and reports them). A zone
priced on its own settlement point keeps its name (`US-TEX-ERCO@HB_WEST__USD_per_MWh`); the
backtester reads such a column for a site with that settlement point, and the market zone's
for the others.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from scheduler.core.market import ZoneHourPrice


def write_price_file(rows: Iterable[ZoneHourPrice], out: TextIO) -> tuple[int, int]:
    """Write `rows` (any order); returns (hours, zones) written."""
    by_hour: dict[float, dict[str, float]] = {}
    zones: set[str] = set()
    for row in rows:
        by_hour.setdefault(row.hour_start_s, {})[row.zone] = row.price_usd_per_mwh
        zones.add(row.zone)
    ordered = sorted(zones)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp_utc", *(f"{z}__USD_per_MWh" for z in ordered)])
    for hour_s in sorted(by_hour):
        stamp = dt.datetime.fromtimestamp(hour_s, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        prices = by_hour[hour_s]
        writer.writerow([stamp, *(_cell(prices.get(z)) for z in ordered)])
    return len(by_hour), len(ordered)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def export_prices(
    journal_url: str, path: Path, zones: Iterable[str] = (), start_s: float | None = None,
    end_s: float | None = None,
) -> tuple[int, int]:
    from scheduler.journal import open_journal

    journal = open_journal(journal_url)
    try:
        wanted = set(zones)
        rows = [
            r for r in journal.market_prices(
                start_s=start_s if start_s is not None else float("-inf"),
                end_s=end_s if end_s is not None else float("inf"),
            )
            if not wanted or r.zone in wanted
        ]
    finally:
        journal.close()
    with path.open("w", encoding="utf-8", newline="") as out:
        return write_price_file(rows, out)
