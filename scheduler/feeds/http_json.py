"""Market values from an HTTP endpoint returning JSON, polled on an interval in a thread.

The endpoint answers `GET <url>` with a JSON object (every key optional):

    {
      "as_of_s": 1718000000.0,          # Unix seconds the values are as of; default: poll time
      "prices": {                       # USD/MWh as a bare number, or an object:
        "US-TEX-ERCO": 31.5,
        "DE-LU": {"value": 80.1, "currency": "EUR", "as_of_s": 1717999200.0}
      },
      "btc_usd": 65000.0,               # a number or {"value": ..., "as_of_s": ...}
      "difficulty": 8.8e13,
      "fees_btc_per_block": 0.3,        # or "fees_btc_per_day": 43.2 (divided by 144)
      "subsidy_btc": 3.125,             # default: from the calendar
      "hashprice_usd_per_phs_day": 48.0 # optional: used as is instead of the computed one
    }

What it decides: how that JSON becomes quotes. Polling, and what a failed poll means (the last
good values are kept with their own times, so they go stale on their own; the failure is reported
in `problems`), is the live sources' poller's. Validation (NaN, absurd, stale) is
`assemble_snapshot`'s. A value that is not a number at all (a string, a list) is reported and
ignored; the previous value for it stays.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from scheduler.core.clock import Clock
from scheduler.core.economics import BLOCKS_PER_DAY
from scheduler.core.market import (
    DEFAULT_FX_USD_PER_UNIT,
    DEFAULT_MARKET_LIMITS,
    MarketLimits,
    MarketSnapshot,
    Quote,
    assemble_snapshot,
)
from scheduler.feeds.live.poller import Fetched, PolledSource, SourceError

_SCALARS = ("btc_usd", "difficulty", "fees_btc_per_block", "subsidy_btc",
            "hashprice_usd_per_phs_day")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _quote(
    name: str, raw: Any, default_as_of_s: float, source: str, default_currency: str,
    problems: list[str],
) -> Quote | None:
    """A quote from a bare number or a {"value", "currency", "as_of_s"} object."""
    currency = default_currency
    as_of_s = default_as_of_s
    if isinstance(raw, dict):
        value = _number(raw.get("value"))
        if isinstance(raw.get("currency"), str):
            currency = raw["currency"]
        if "as_of_s" in raw:
            stamp = _number(raw["as_of_s"])
            if stamp is None:
                problems.append(f"{source}: {name}: as_of_s is not a number")
                return None
            as_of_s = stamp
    else:
        value = _number(raw)
    if value is None:
        problems.append(f"{source}: {name}: not a number ({raw!r:.60})")
        return None
    return Quote(value, as_of_s, source, currency)


def parse_market_json(
    doc: Any, received_s: float, source: str = "http"
) -> tuple[dict[str, Quote], dict[str, Quote], list[str]]:
    """(prices by zone, scalar fields by name, problems) from one response body (parsed JSON)."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        return {}, {}, [f"{source}: response is not a JSON object"]
    as_of_s = received_s
    if "as_of_s" in doc:
        stamp = _number(doc["as_of_s"])
        if stamp is None:
            problems.append(f"{source}: as_of_s is not a number")
        else:
            as_of_s = stamp
    prices: dict[str, Quote] = {}
    raw_prices = doc.get("prices", {})
    if not isinstance(raw_prices, dict):
        problems.append(f"{source}: prices is not an object")
        raw_prices = {}
    for zone, raw in raw_prices.items():
        quote = _quote(f"price[{zone}]", raw, as_of_s, source, "USD", problems)
        if quote is not None:
            prices[str(zone)] = quote
    fields: dict[str, Quote] = {}
    for name in _SCALARS:
        if name in doc:
            quote = _quote(name, doc[name], as_of_s, source, "USD", problems)
            if quote is not None:
                fields[name] = quote
    if "fees_btc_per_block" not in doc and "fees_btc_per_day" in doc:
        quote = _quote("fees_btc_per_day", doc["fees_btc_per_day"], as_of_s, source, "USD",
                       problems)
        if quote is not None:
            fields["fees_btc_per_block"] = Quote(
                quote.value / BLOCKS_PER_DAY, quote.as_of_s, source, "USD"
            )
    return prices, fields, problems


class _HttpJsonAdapter:
    """One poll of the endpoint: its JSON document as quotes (see the module docstring)."""

    def __init__(self, url: str, timeout_s: float, headers: Mapping[str, str], name: str) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.headers = dict(headers)
        self.name = name

    def fetch(self, now_s: float) -> Fetched:
        try:
            response = httpx.get(
                self.url, timeout=self.timeout_s, headers=self.headers, follow_redirects=False
            )
            response.raise_for_status()
            doc = json.loads(response.text)
        except (httpx.HTTPError, ValueError) as exc:
            raise SourceError(
                f"{self.name}: poll of {self.url} failed: {type(exc).__name__}: {exc}"
            ) from None
        prices, fields, problems = parse_market_json(doc, now_s, self.name)
        if not isinstance(doc, dict):
            raise SourceError(problems[0])
        return Fetched(
            prices_by_zone=prices,
            btc_usd=fields.get("btc_usd"),
            difficulty=fields.get("difficulty"),
            fees_btc_per_block=fields.get("fees_btc_per_block"),
            subsidy_btc=fields.get("subsidy_btc"),
            hashprice_usd_per_phs_day=fields.get("hashprice_usd_per_phs_day"),
            problems=tuple(problems),
        )


class HttpJsonFeed(PolledSource):
    """Polls `url` every `interval_s` seconds in a daemon thread (after `start()`), with the
    live sources' backoff, kept values and health (`scheduler.feeds.live.poller`)."""

    def __init__(
        self,
        url: str,
        interval_s: float = 60.0,
        clock: Clock | None = None,
        *,
        timeout_s: float = 5.0,
        zones: Iterable[str] = (),
        fx_usd_per_unit: Mapping[str, float] = DEFAULT_FX_USD_PER_UNIT,
        limits: MarketLimits = DEFAULT_MARKET_LIMITS,
        headers: Mapping[str, str] | None = None,
        name: str = "http",
    ) -> None:
        super().__init__(_HttpJsonAdapter(url, timeout_s, headers or {}, name), interval_s, clock)
        self.url = url
        self.zones = tuple(zones)
        self.fx_usd_per_unit = fx_usd_per_unit
        self.limits = limits

    def __enter__(self) -> HttpJsonFeed:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self, now_s: float) -> MarketSnapshot:
        return assemble_snapshot(
            now_s, [self.quotes(now_s)], self.zones, self.fx_usd_per_unit, self.limits
        )
