"""European bidding zones' day-ahead prices from the ENTSO-E Transparency Platform, via entsoe-py.

Each poll asks, per zone, for the day-ahead prices (document A44) from yesterday to the day after
tomorrow; the platform publishes the next day's auction result at about 13:00 CET. What comes
back (hourly, or 15-minute since the market's move to 15-minute products) is averaged into hours.
The hour containing now is the zone's price; the later hours are its published outlook, which the
flex deferral uses instead of last week's means.

The platform needs a security token (`entsoe_token` or `entsoe_token_file`); it travels as a
query parameter, so no URL is ever logged with it. Zones are the fleet's price zones whose name
is an entsoe-py `Area` once `-` becomes `_` (`DE-LU` is `DE_LU`), or named in `zone_areas`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.core.market import Quote
from scheduler.feeds.live.poller import Fetched, PublishedPrices, SourceError

HOUR_S = 3600.0
DAY_S = 86_400.0
DEFAULT_ENDPOINT = "https://web-api.tp.entsoe.eu/api"


def entsoe_area(zone: str) -> str | None:
    """The entsoe-py area name for a price zone, or None if the platform has no such zone."""
    from entsoe.mappings import Area

    name = zone.replace("-", "_").upper()
    return name if name in Area.__members__ else None


class EntsoeDayAhead:
    def __init__(
        self,
        token: str,
        zones: Iterable[str],
        endpoint_url: str = DEFAULT_ENDPOINT,
        timeout_s: float = 20.0,
        zone_areas: Mapping[str, str] | None = None,
        name: str = "entsoe",
    ) -> None:
        import entsoe.entsoe as api

        # entsoe-py logs every request's parameters, the token among them, at DEBUG, and urllib3
        # logs the URL with its query: neither may reach a log, whatever level the process (or a
        # test's log capture) sets later, so their own level is pinned.
        for noisy in ("entsoe.entsoe", "urllib3.connectionpool"):
            logging.getLogger(noisy).setLevel(logging.INFO)
        self.name = name
        self.areas: dict[str, str] = {}
        for zone in zones:
            area = (zone_areas or {}).get(zone) or entsoe_area(zone)
            if area is not None:
                self.areas[zone] = area
        if not self.areas:
            raise ValueError(f"{name}: none of the zones {sorted(zones)} is an ENTSO-E area")
        # entsoe-py reads its endpoint from a module attribute (or ENTSOE_ENDPOINT_URL at import).
        api.URL = endpoint_url
        self.endpoint_url = endpoint_url
        # One try per poll: the poller retries with backoff, entsoe-py's own retry would sleep.
        self.client = api.EntsoePandasClient(
            api_key=token, retry_count=1, retry_delay=0, timeout=int(max(timeout_s, 1))
        )

    def fetch(self, now_s: float) -> Fetched:
        import pandas as pd
        import requests
        from entsoe.exceptions import NoMatchingDataError

        hour_s = math.floor(now_s / HOUR_S) * HOUR_S
        start = pd.Timestamp(hour_s - DAY_S, unit="s", tz="UTC")
        end = pd.Timestamp(hour_s + 2 * DAY_S, unit="s", tz="UTC")
        prices: dict[str, Quote] = {}
        ahead: dict[str, PublishedPrices] = {}
        problems: list[str] = []
        failures = 0
        for zone, area in self.areas.items():
            try:
                with warnings.catch_warnings():
                    # entsoe-py parses the XML with bs4's HTML parser, on purpose, and bs4 warns.
                    warnings.simplefilter("ignore")
                    series = self.client.query_day_ahead_prices(area, start=start, end=end)
            except NoMatchingDataError:
                problems.append(f"{self.name}: no day-ahead prices for {zone} ({area}) yet")
                continue
            except (requests.RequestException, OSError) as exc:
                failures += 1
                problems.append(f"{self.name}: {zone}: {type(exc).__name__}: "
                                f"{_status(exc) or 'no answer'}")
                continue
            except (ValueError, KeyError, AttributeError, NotImplementedError) as exc:
                failures += 1
                problems.append(f"{self.name}: {zone}: malformed reply ({type(exc).__name__})")
                continue
            hourly = _hourly(series)
            now_value = hourly.get(hour_s)
            if now_value is None:
                problems.append(f"{self.name}: {zone}: no price for the current hour")
            else:
                prices[zone] = Quote(now_value, hour_s, self.name, "EUR")
            ahead[zone] = PublishedPrices(
                "EUR", {t: p for t, p in sorted(hourly.items()) if t > hour_s}
            )
        if failures == len(self.areas):
            raise SourceError("; ".join(problems))
        return Fetched(prices_by_zone=prices, ahead_by_zone=ahead, problems=tuple(problems))


def _hourly(series: Any) -> dict[float, float]:
    """Mean price per UTC hour start (the series may be hourly or quarter-hourly)."""
    sums: dict[float, list[float]] = {}
    for stamp, value in series.items():
        v = float(value)
        if not math.isfinite(v):
            continue
        t = math.floor(stamp.timestamp() / HOUR_S) * HOUR_S
        sums.setdefault(t, []).append(v)
    return {t: sum(vs) / len(vs) for t, vs in sums.items()}


def _status(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return f"HTTP {code}" if code is not None else ""
