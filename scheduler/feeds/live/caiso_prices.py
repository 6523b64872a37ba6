"""California's prices from CAISO's OASIS, via gridstatus (`CAISO`).

A site prices on its CAISO pricing node (`settlement_point: TH_NP15_GEN-APND` in the fleet file),
else on `default_node` (the NP15 trading hub). Each poll reads today's real-time 5-minute LMPs
(`PRC_INTVL_LMP`) of those nodes, the newest interval being the price now, and the day-ahead
hourly LMPs (`PRC_LMP`, DAM) of today and tomorrow, published about 13:00 PT: the outlook.
gridstatus's umbrella `get_lmp` is the one call that takes a list of nodes (its per-dataset
methods read every node); its deprecation warning is silenced here. OASIS asks callers to pace
their requests: gridstatus's own pause between requests is skipped, as a poll is minutes apart.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.core.fleet import market_zone, settlement_point
from scheduler.feeds.live.poller import (
    Fetched,
    SourceError,
    library_error,
    newest,
    published_after,
    recent_prices,
)

CAISO_ZONE = "US-CAL-CISO"
PACIFIC = ZoneInfo("America/Los_Angeles")
HOUR_S = 3600.0
MAX_INTERVAL_AGE_S = 3 * 300.0
NP15_HUB = "TH_NP15_GEN-APND"


class CaisoNodalPrices:
    def __init__(self, zones: Iterable[str], default_node: str = NP15_HUB,
                 name: str = "caiso") -> None:
        import gridstatus

        self.nodes = {
            z: settlement_point(z) or default_node for z in zones if market_zone(z) == CAISO_ZONE
        }
        if not self.nodes:
            raise ValueError(f"{name}: the fleet has no site in {CAISO_ZONE}")
        self.client = gridstatus.CAISO()
        self.name = name

    def _rows(self, market: Any, start: Any, end: Any = None) -> list[dict[str, Any]]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                frame = self.client.get_lmp(
                    date=start, end=end, market=market,
                    locations=sorted(set(self.nodes.values())), sleep=0,
                )
        except Exception as exc:  # gridstatus raises its own and bare exceptions
            raise library_error(self.name, market.value, exc) from None
        return [dict(r) for r in frame.to_dict("records")]

    def fetch(self, now_s: float) -> Fetched:
        import pandas as pd
        from gridstatus import Markets

        today = dt.datetime.fromtimestamp(now_s, tz=PACIFIC).date()
        start = pd.Timestamp(today, tz=PACIFIC)
        latest = newest(
            ((str(r["Location"]), float(r["Interval Start"].timestamp()), float(r["LMP"]))
             for r in self._rows(Markets.REAL_TIME_5_MIN, start)),
            now_s,
        )
        prices, problems = recent_prices(self.nodes, latest, now_s, MAX_INTERVAL_AGE_S,
                                         self.name, "USD")
        hour_s = math.floor(now_s / HOUR_S) * HOUR_S
        try:
            rows = self._rows(Markets.DAY_AHEAD_HOURLY, start, start + pd.Timedelta(days=2))
        except SourceError as exc:
            problems.append(str(exc))
            rows = []
        ahead = published_after(rows, hour_s, self.nodes, "USD")
        return Fetched(prices_by_zone=prices, ahead_by_zone=ahead, problems=tuple(problems))
