"""Expected power prices in the hours ahead, from the recent past only (never foresight).

The forecast for an hour ahead is the mean price at the same hour of day over the past week: a
day-of-week-blind seasonal naive forecast. It is what the placer weighs when it decides whether a
flex job should wait for cheaper power; a wrong forecast costs a little waiting, and the deadline
margin bounds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scheduler.core.market import ZoneHourPrice

HOURS_PER_DAY = 24


def hour_of_day_outlook(past_hourly: Sequence[float], horizon_h: int) -> list[float]:
    """`past_hourly[-1]` is the current hour; returns the expected price of each of the next
    `horizon_h` hours (NaN where the past has no value at that hour of day)."""
    n = len(past_hourly)
    expected: list[float] = []
    for ahead in range(1, horizon_h + 1):
        values = [
            past_hourly[i]
            for i in range(n - 1 + ahead - HOURS_PER_DAY, -1, -HOURS_PER_DAY)
            if 0 <= i < n and not math.isnan(past_hourly[i])
        ]
        expected.append(sum(values) / len(values) if values else math.nan)
    return expected


class LivePriceBook:
    """The hourly prices live sources quoted, per zone and market hour: each hour's price is the
    mean of the distinct quotes seen in it (a real-time market's 15-minute intervals). The
    journal keeps the rows (`ZoneHourPrice`); the outlook's past week reads them before the
    replay's."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, float], ZoneHourPrice] = {}
        self._quotes: dict[tuple[str, float], dict[float, float]] = {}

    def put(self, row: ZoneHourPrice) -> None:
        """A row read back (from the journal at start)."""
        self._rows[(row.zone, row.hour_start_s)] = row

    def observe(
        self, zone: str, hour_start_s: float, as_of_s: float, price_usd_per_mwh: float,
        source: str,
    ) -> ZoneHourPrice | None:
        """Take a quote seen in the hour; the hour's row when its price changed (to journal),
        else None."""
        key = (zone, hour_start_s)
        quotes = self._quotes.setdefault(key, {})
        if quotes.get(as_of_s) == price_usd_per_mwh:
            return None
        quotes[as_of_s] = price_usd_per_mwh
        before = self._rows.get(key)
        row = ZoneHourPrice(zone, hour_start_s, sum(quotes.values()) / len(quotes), source,
                            len(quotes))
        self._rows[key] = row
        # A source that stamps every poll anew repeats the same price: nothing to write.
        if before is not None and abs(before.price_usd_per_mwh - row.price_usd_per_mwh) < 1e-9:
            return None
        return row

    def price(self, zone: str, hour_start_s: float) -> float | None:
        row = self._rows.get((zone, hour_start_s))
        return row.price_usd_per_mwh if row is not None else None

    def overlay(self, zone: str, past: Sequence[float], current_hour_s: float,
                hour_s: float = 3600.0) -> list[float]:
        """`past` (its last entry the current hour) with every hour the book has replaced."""
        n = len(past)
        out = list(past)
        for k in range(n):
            value = self.price(zone, current_hour_s - (n - 1 - k) * hour_s)
            if value is not None:
                out[k] = value
        return out

    def forget_before(self, hour_start_s: float) -> None:
        for key in [k for k in self._rows if k[1] < hour_start_s]:
            del self._rows[key]
            self._quotes.pop(key, None)
