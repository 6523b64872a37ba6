"""Time for the pure core. The core never reads the wall clock: it is handed a `Clock`.

The live scheduler passes `SystemClock`; the backtester and the unit tests pass `ManualClock` and
step it, so a decision made at "14:00" is the same decision in a test, a backtest and production.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now_s(self) -> float:
        """Seconds since the Unix epoch (UTC)."""
        ...


class SystemClock:
    def now_s(self) -> float:
        return time.time()


@dataclass
class ManualClock:
    """A clock that moves only when told to (tests, backtests)."""

    t_s: float = 1_700_000_000.0

    def now_s(self) -> float:
        return self.t_s

    def advance(self, seconds: float) -> float:
        self.t_s += seconds
        return self.t_s

    def set(self, t_s: float) -> None:
        self.t_s = t_s
