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

What it decides: how that JSON becomes quotes, and what a failed poll means (the last good values
are kept with their own times, so they go stale on their own; the failure is reported in
`problems`). Validation (NaN, absurd, stale) is `assemble_snapshot`'s. A value that is not a
number at all (a string, a list) is reported and ignored; the previous value for it stays.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from scheduler.core.clock import Clock, SystemClock
from scheduler.core.economics import BLOCKS_PER_DAY
from scheduler.core.market import (
    DEFAULT_FX_USD_PER_UNIT,
    DEFAULT_MARKET_LIMITS,
    MarketLimits,
    MarketQuotes,
    MarketSnapshot,
    Quote,
    assemble_snapshot,
)

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


class HttpJsonFeed:
    """Polls `url` every `interval_s` seconds in a daemon thread (after `start()`)."""

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
        if interval_s <= 0.0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.url = url
        self.interval_s = interval_s
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.timeout_s = timeout_s
        self.zones = tuple(zones)
        self.fx_usd_per_unit = fx_usd_per_unit
        self.limits = limits
        self.headers = dict(headers or {})
        self.name = name
        self._lock = threading.Lock()
        self._prices: dict[str, Quote] = {}
        self._fields: dict[str, Quote] = {}
        self._parse_problems: list[str] = []
        self._error: str | None = None
        self.polls = 0
        self.last_ok_s: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> bool:
        """Fetch and parse once; True when the endpoint answered with a JSON object."""
        received_s = self.clock.now_s()
        try:
            response = httpx.get(
                self.url, timeout=self.timeout_s, headers=self.headers, follow_redirects=False
            )
            response.raise_for_status()
            doc = json.loads(response.text)
        except (httpx.HTTPError, ValueError) as exc:
            with self._lock:
                self.polls += 1
                self._error = f"{self.name}: poll of {self.url} failed: {type(exc).__name__}: {exc}"
            return False
        prices, fields, problems = parse_market_json(doc, received_s, self.name)
        with self._lock:
            self.polls += 1
            ok = isinstance(doc, dict)
            self._error = None if ok else problems[0]
            self._prices.update(prices)
            self._fields.update(fields)
            self._parse_problems = problems
            if ok:
                self.last_ok_s = received_s
        return ok

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"feed-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> HttpJsonFeed:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def quotes(self, now_s: float) -> MarketQuotes:
        with self._lock:
            problems = list(self._parse_problems)
            if self._error is not None:
                problems.insert(0, self._error)
            if self.last_ok_s is None and self._error is None:
                problems.insert(0, f"{self.name}: no answer from {self.url} yet")
            prices = dict(self._prices)
            fields = dict(self._fields)
        return MarketQuotes(
            prices_by_zone=prices,
            btc_usd=fields.get("btc_usd"),
            difficulty=fields.get("difficulty"),
            fees_btc_per_block=fields.get("fees_btc_per_block"),
            subsidy_btc=fields.get("subsidy_btc"),
            hashprice_usd_per_phs_day=fields.get("hashprice_usd_per_phs_day"),
            problems=tuple(problems),
        )

    def snapshot(self, now_s: float) -> MarketSnapshot:
        return assemble_snapshot(
            now_s, [self.quotes(now_s)], self.zones, self.fx_usd_per_unit, self.limits
        )

