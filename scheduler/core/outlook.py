"""Expected power prices in the hours ahead, from the recent past only (never foresight).

The forecast for an hour ahead is the mean price at the same hour of day over the past week: a
day-of-week-blind seasonal naive forecast. It is what the placer weighs when it decides whether a
flex job should wait for cheaper power; a wrong forecast costs a little waiting, and the deadline
margin bounds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
