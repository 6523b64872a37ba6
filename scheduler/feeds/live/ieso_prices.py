"""Ontario's prices from IESO's public reports, via gridstatus (`IESO`).

Since the market renewal of May 2025 Ontario settles on locational prices; the Ontario zonal
price is their load-weighted mean, what a site in Ontario pays. Each poll reads:
- the latest real-time report (`RealtimeOntarioZonalPrice`, the twelve 5-minute intervals of the
  hour so far): the newest interval's price is the price now;
- the latest day-ahead report (`DAHourlyOntarioZonalPrice`, the next delivery day's 24 hours):
  the hours after this one are the published outlook.
Prices are in CAD/MWh; IESO's times are EST all year.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from scheduler.core.fleet import market_zone
from scheduler.core.market import Quote
from scheduler.feeds.live.poller import Fetched, PublishedPrices, SourceError, library_error

IESO_ZONE = "CA-ON"
HOUR_S = 3600.0
MAX_INTERVAL_AGE_S = 3 * 300.0


class IesoZonalPrices:
    def __init__(self, zones: Iterable[str], reports_url: str | None = None,
                 name: str = "ieso") -> None:
        import gridstatus.ieso as api

        self.zones = [z for z in zones if market_zone(z) == IESO_ZONE]
        if not self.zones:
            raise ValueError(f"{name}: the fleet has no site in {IESO_ZONE}")
        if reports_url is not None:
            # gridstatus builds every report URL from this module attribute at call time.
            api.PUBLIC_REPORTS_URL_PREFIX = reports_url.rstrip("/")
        self.client = api.IESO()
        self.name = name

    def _frame(self, method: str) -> list[dict[str, Any]]:
        try:
            frame = getattr(self.client, method)("latest")
        except Exception as exc:  # gridstatus raises its own and bare exceptions
            raise library_error(self.name, method, exc) from None
        return [dict(r) for r in frame.to_dict("records")]

    def fetch(self, now_s: float) -> Fetched:
        latest: tuple[float, float] | None = None
        for row in self._frame("get_lmp_real_time_5_min_ontario_zonal"):
            start_s = float(row["Interval Start"].timestamp())
            if start_s <= now_s and (latest is None or start_s > latest[0]):
                latest = (start_s, float(row["LMP"]))
        problems: list[str] = []
        prices: dict[str, Quote] = {}
        if latest is None or now_s - latest[0] > MAX_INTERVAL_AGE_S:
            problems.append(f"{self.name}: no recent real-time Ontario zonal price")
        else:
            prices = {z: Quote(latest[1], latest[0], self.name, "CAD") for z in self.zones}
        hour_s = math.floor(now_s / HOUR_S) * HOUR_S
        ahead: dict[str, PublishedPrices] = {}
        try:
            rows = self._frame("get_lmp_day_ahead_hourly_ontario_zonal")
        except SourceError as exc:
            problems.append(str(exc))
            rows = []
        published = {
            float(r["Interval Start"].timestamp()): float(r["LMP"]) for r in rows
            if float(r["Interval Start"].timestamp()) > hour_s
        }
        if published:
            ahead = {z: PublishedPrices("CAD", dict(sorted(published.items()))) for z in self.zones}
        return Fetched(prices_by_zone=prices, ahead_by_zone=ahead, problems=tuple(problems))
