"""New York's zonal prices from NYISO's postings, via gridstatus (`NYISO`).

A site prices on its NYISO load zone (`settlement_point: NORTH` in the fleet file, else
`default_zone`). Each poll reads:
- the latest real-time 5-minute zonal prices (one small `current.csv`): the price now;
- the day-ahead hourly zonal prices of today and of tomorrow once posted (about 11:00 ET): the
  published outlook.
gridstatus's umbrella `get_lmp` is the one call that reads the latest-interval file alone; it is
deprecated in favour of per-dataset methods that read whole days of every generator, which a
poll every few minutes does not need, so its deprecation warning is silenced here.
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

NYISO_ZONE = "US-NY-NYIS"
EASTERN = ZoneInfo("America/New_York")
HOUR_S = 3600.0
MAX_INTERVAL_AGE_S = 3 * 300.0


class NyisoZonalPrices:
    def __init__(self, zones: Iterable[str], default_zone: str = "NORTH",
                 postings_url: str | None = None, name: str = "nyiso") -> None:
        import gridstatus.nyiso as api

        self.locations = {
            z: settlement_point(z) or default_zone for z in zones if market_zone(z) == NYISO_ZONE
        }
        if not self.locations:
            raise ValueError(f"{name}: the fleet has no site in {NYISO_ZONE}")
        if postings_url is not None:
            # gridstatus builds the postings' URLs from this module attribute at call time.
            api.OASIS_POSTINGS_URL = postings_url.rstrip("/")
        self.client = api.NYISO()
        self.name = name

    def _rows(self, date: Any, market: Any) -> list[dict[str, Any]]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                frame = self.client.get_lmp(
                    date=date, market=market, locations=sorted(set(self.locations.values())),
                    location_type="zone",
                )
        except Exception as exc:  # gridstatus raises its own and bare exceptions
            raise library_error(self.name, str(getattr(market, "value", market)), exc) from None
        return [dict(r) for r in frame.to_dict("records")]

    def fetch(self, now_s: float) -> Fetched:
        import pandas as pd
        from gridstatus import Markets

        latest = newest(
            ((str(r["Location"]), float(r["Interval Start"].timestamp()), float(r["LMP"]))
             for r in self._rows("latest", Markets.REAL_TIME_5_MIN)),
            now_s,
        )
        prices, problems = recent_prices(self.locations, latest, now_s, MAX_INTERVAL_AGE_S,
                                         self.name, "USD")
        hour_s = math.floor(now_s / HOUR_S) * HOUR_S
        today = dt.datetime.fromtimestamp(now_s, tz=EASTERN).date()
        day_ahead: list[dict[str, Any]] = []
        for day in (today, today + dt.timedelta(days=1)):
            try:
                rows = self._rows(pd.Timestamp(day, tz=EASTERN), Markets.DAY_AHEAD_HOURLY)
            except SourceError as exc:
                if day == today:
                    problems.append(str(exc))
                continue  # tomorrow's is not posted yet
            day_ahead += rows
        ahead = published_after(day_ahead, hour_s, self.locations, "USD")
        return Fetched(prices_by_zone=prices, ahead_by_zone=ahead, problems=tuple(problems))
