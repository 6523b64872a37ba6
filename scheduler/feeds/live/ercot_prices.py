"""ERCOT settlement point prices from ERCOT's public API, via gridstatus (`ErcotAPI`).

A site in Texas prices on its own settlement point when the fleet file names one
(`settlement_point: HB_WEST`, or a resource node), else on `default_point` (the hub average). In
West Texas a node differs from its hub by tens of $/MWh in many hours, which is the difference
between mining and not.

Each poll asks, for every point the fleet uses:
- the real-time 15-minute settlement point prices of today (NP6-905-CD,
  `/np6-905-cd/spp_node_zone_hub`): the latest interval is the price now, stamped with its start;
- the day-ahead hourly settlement point prices of today and tomorrow (NP4-190-CD,
  `/np4-190-cd/dam_stlmnt_pnt_prices`): the hours after this one are the published outlook.

ERCOT's API needs an account (username and password, exchanged for a token) and a subscription
key; they travel in a form body and headers, never in a URL. Times are ERCOT's (US/Central,
hour ending 1-24, `DSTFlag` "Y" on the repeated hour of the autumn change).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.core.fleet import market_zone, settlement_point
from scheduler.core.market import Quote
from scheduler.feeds.live.poller import Fetched, PublishedPrices, SourceError, library_error

ERCOT_ZONE = "US-TEX-ERCO"
CENTRAL = ZoneInfo("America/Chicago")
REAL_TIME_SPP = "/np6-905-cd/spp_node_zone_hub"
DAY_AHEAD_SPP = "/np4-190-cd/dam_stlmnt_pnt_prices"
HOUR_S = 3600.0
INTERVAL_S = 900.0
# A real-time price older than this is not the price now (the interval after it is missing).
MAX_INTERVAL_AGE_S = 2 * INTERVAL_S


def local_start_s(day: str, hour_ending: int, interval: int, repeated: bool) -> float:
    """Unix start of ERCOT's interval `interval` (1-4) of hour ending `hour_ending` on `day`."""
    wall = dt.datetime.fromisoformat(day[:10]) + dt.timedelta(
        hours=hour_ending - 1, minutes=15 * (interval - 1)
    )
    # The repeated autumn hour: its second occurrence (DSTFlag Y) is the later, standard time.
    return wall.replace(tzinfo=CENTRAL, fold=1 if repeated else 0).timestamp()


class ErcotSettlementPoints:
    def __init__(
        self,
        username: str,
        password: str,
        subscription_key: str,
        zones: Iterable[str],
        default_point: str = "HB_HUBAVG",
        base_url: str | None = None,
        token_url: str | None = None,
        name: str = "ercot",
    ) -> None:
        import gridstatus.ercot_api.ercot_api as api

        self.name = name
        self.points = {
            zone: settlement_point(zone) or default_point
            for zone in zones if market_zone(zone) == ERCOT_ZONE
        }
        if not self.points:
            raise ValueError(f"{name}: the fleet has no site in {ERCOT_ZONE}")
        if base_url is not None:
            # gridstatus reads its endpoint from a module attribute at every call.
            api.PUBLIC_BASE_URL = base_url.rstrip("/")
        # One try per poll: the poller retries with backoff.
        self.client = api.ErcotAPI(
            username=username, password=password, public_subscription_key=subscription_key,
            max_retries=0, sleep_seconds=0.0,
        )
        if token_url is not None:
            self.client.token_url = token_url

    def _rows(self, endpoint: str, point: str, day_from: str, day_to: str) -> list[dict[str, Any]]:
        try:
            frame = self.client.hit_ercot_api(
                endpoint, deliveryDateFrom=day_from, deliveryDateTo=day_to, settlementPoint=point,
            )
        except Exception as exc:  # gridstatus raises bare Exceptions (a refused token, no data)
            what = f"{endpoint} for {point}"
            if "token" in str(exc).lower():
                raise SourceError(f"{self.name}: {what}: the account was refused a token") from None
            raise library_error(self.name, what, exc) from None
        return [dict(row) for row in frame.to_dict("records")]

    def fetch(self, now_s: float) -> Fetched:
        today = dt.datetime.fromtimestamp(now_s, tz=CENTRAL).date()
        tomorrow = today + dt.timedelta(days=1)
        hour_s = math.floor(now_s / HOUR_S) * HOUR_S
        prices: dict[str, Quote] = {}
        ahead: dict[str, PublishedPrices] = {}
        problems: list[str] = []
        by_point: dict[str, tuple[Quote | None, dict[float, float]]] = {}
        for point in sorted(set(self.points.values())):
            latest: tuple[float, float] | None = None
            for row in self._rows(REAL_TIME_SPP, point, today.isoformat(), today.isoformat()):
                try:
                    start_s = local_start_s(
                        str(row["DeliveryDate"]), int(row["DeliveryHour"]),
                        int(row["DeliveryInterval"]), str(row.get("DSTFlag", "N")) == "Y",
                    )
                    value = float(row["SettlementPointPrice"])
                except (KeyError, TypeError, ValueError):
                    raise SourceError(f"{self.name}: malformed real-time row for {point}") from None
                if start_s <= now_s and (latest is None or start_s > latest[0]):
                    latest = (start_s, value)
            quote = None
            if latest is None or now_s - latest[0] > MAX_INTERVAL_AGE_S:
                problems.append(f"{self.name}: no recent real-time price for {point}")
            else:
                quote = Quote(latest[1], latest[0], self.name, "USD")
            published: dict[float, float] = {}
            for row in self._rows(DAY_AHEAD_SPP, point, today.isoformat(), tomorrow.isoformat()):
                try:
                    hour_ending = int(str(row["HourEnding"]).split(":", 1)[0])
                    start_s = local_start_s(str(row["DeliveryDate"]), hour_ending, 1,
                                            str(row.get("DSTFlag", "N")) == "Y")
                    value = float(row["SettlementPointPrice"])
                except (KeyError, TypeError, ValueError):
                    raise SourceError(f"{self.name}: malformed day-ahead row for {point}") from None
                if start_s > hour_s:
                    published[start_s] = value
            by_point[point] = (quote, published)
        for zone, point in self.points.items():
            quote, published = by_point[point]
            if quote is not None:
                prices[zone] = quote
            if published:
                ahead[zone] = PublishedPrices("USD", published)
        return Fetched(prices_by_zone=prices, ahead_by_zone=ahead, problems=tuple(problems))
