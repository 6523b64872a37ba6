"""A live market source polled on its own schedule: timeouts, retries with backoff, staleness.

Each adapter (`bitcoin.py`, `entsoe_prices.py`) only knows how to ask its service once and turn
the reply into quotes (`fetch`). This module decides what the scheduler needs around that:
- it polls every `interval_s` in a daemon thread; a failed poll is retried after `backoff_s`,
  doubling up to `interval_s`, so a service that is down is not hammered and one that comes back
  is heard from within a backoff;
- every value keeps its own time (`Quote.as_of_s`): a poll that fails changes nothing, so the last
  good values go stale on their own and the planner's fallback takes over at their age limit;
- the reasons of the last failure are in `problems`, worded for the operator, never with a
  credential (adapters must raise `SourceError` with text that has none);
- `health()` (polls, errors, last success) is what the metrics export per source.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scheduler.core.clock import Clock, SystemClock
from scheduler.core.market import MarketQuotes, Quote

log = logging.getLogger("hashserve.feeds")

DEFAULT_BACKOFF_S = 1.0


class SourceError(Exception):
    """A poll that did not give usable values; the message is for the operator's log."""


@dataclass(frozen=True)
class PublishedPrices:
    """A zone's prices published for later hours (a day-ahead auction): by hour start on the
    scheduler's clock, in `currency` per MWh."""

    currency: str
    by_hour_start_s: Mapping[float, float]


@dataclass(frozen=True)
class Fetched:
    """What one poll learnt. Fields left empty keep their previous quote."""

    prices_by_zone: Mapping[str, Quote] = field(default_factory=dict)
    btc_usd: Quote | None = None
    difficulty: Quote | None = None
    fees_btc_per_block: Quote | None = None
    subsidy_btc: Quote | None = None
    hashprice_usd_per_phs_day: Quote | None = None
    # Prices published for later hours (a day-ahead market), by zone.
    ahead_by_zone: Mapping[str, PublishedPrices] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # what was wrong with part of the reply (the rest is used)


class Adapter(Protocol):
    name: str

    def fetch(self, now_s: float) -> Fetched:
        """Ask the service once; raise `SourceError` when nothing usable came back."""
        ...


@dataclass(frozen=True)
class SourceHealth:
    source: str
    polls: int
    errors: int
    last_ok_s: float | None
    last_error: str | None


def get_bytes(
    url: str, timeout_s: float, source: str, params: Mapping[str, str] | None = None,
    follow_redirects: bool = True,
) -> bytes:
    """One GET for an adapter: the body, or a `SourceError` naming the status or the failure
    (the URL is in it: never put a credential in one)."""
    import httpx

    try:
        response = httpx.get(url, params=params, timeout=timeout_s,
                             follow_redirects=follow_redirects)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise SourceError(f"{source}: {url} answered {exc.response.status_code}") from None
    except httpx.HTTPError as exc:
        raise SourceError(f"{source}: {url}: {type(exc).__name__}: {exc}") from None
    return response.content


def library_error(source: str, what: str, exc: Exception) -> SourceError:
    """A failure inside a market library (gridstatus raises its own and bare exceptions) as the
    poll's `SourceError`: the HTTP status when there was one, else the exception's type. Its
    message is not used: a library's can hold a URL with its query."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    detail = f"HTTP {status}" if status is not None else type(exc).__name__
    return SourceError(f"{source}: {what}: {detail}")


def newest(
    intervals: Iterable[tuple[str, float, float]], now_s: float
) -> dict[str, tuple[float, float]]:
    """Per location, the (start, price) of its newest interval that has started by `now_s`."""
    out: dict[str, tuple[float, float]] = {}
    for location, start_s, price in intervals:
        if start_s <= now_s and (location not in out or start_s > out[location][0]):
            out[location] = (start_s, price)
    return out


def recent_prices(
    locations: Mapping[str, str], latest: Mapping[str, tuple[float, float]], now_s: float,
    max_age_s: float, source: str, currency: str,
) -> tuple[dict[str, Quote], list[str]]:
    """Each zone's quote from its location's newest interval, or a problem when that is missing
    or older than `max_age_s` (the service stopped publishing)."""
    prices: dict[str, Quote] = {}
    problems: list[str] = []
    for zone, location in locations.items():
        found = latest.get(location)
        if found is None or now_s - found[0] > max_age_s:
            problems.append(f"{source}: no recent real-time price for {location}")
        else:
            prices[zone] = Quote(found[1], found[0], source, currency)
    return prices, problems


def published_after(
    rows: Iterable[Mapping[str, Any]], hour_s: float, locations: Mapping[str, str],
    currency: str,
) -> dict[str, PublishedPrices]:
    """Each zone's published hourly prices (gridstatus's day-ahead frame: Location, Interval
    Start, LMP) for the hours after `hour_s`, in hour order; zones with none are left out."""
    published: dict[str, dict[float, float]] = {}
    for row in rows:
        start_s = float(row["Interval Start"].timestamp())
        if start_s > hour_s:
            published.setdefault(str(row["Location"]), {})[start_s] = float(row["LMP"])
    return {
        zone: PublishedPrices(currency, dict(sorted(published[location].items())))
        for zone, location in locations.items() if published.get(location)
    }


def read_secret(value: str | None, path: str | None, what: str) -> str | None:
    """A credential from a setting or from a file (a mounted secret); never logged."""
    if value:
        return value
    if not path:
        return None
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read the secret file {path}: {exc.strerror}") from None
    if not text:
        raise ValueError(f"{what}: the secret file {path} is empty")
    return text


class PolledSource:
    """`adapter` polled every `interval_s` after `start()`; a `QuoteSource` for `LayeredFeed`."""

    def __init__(
        self,
        adapter: Adapter,
        interval_s: float,
        clock: Clock | None = None,
        backoff_s: float = DEFAULT_BACKOFF_S,
    ) -> None:
        if interval_s <= 0.0:
            raise ValueError(f"{adapter.name}: interval_s must be > 0, got {interval_s!r}")
        self.adapter = adapter
        self.name = adapter.name
        self.interval_s = interval_s
        self.backoff_s = min(backoff_s, interval_s)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        self._fields: dict[str, Quote] = {}
        self._prices: dict[str, Quote] = {}
        self._ahead: dict[str, PublishedPrices] = {}
        self._problems: tuple[str, ...] = ()
        self._error: str | None = None
        self.polls = 0
        self.errors = 0
        self.last_ok_s: float | None = None
        self._failures_in_a_row = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----- polling ---------------------------------------------------------------------------

    def poll_once(self) -> bool:
        now_s = self.clock.now_s()
        try:
            fetched = self.adapter.fetch(now_s)
        except SourceError as exc:
            self._failed(str(exc))
            return False
        except Exception as exc:  # an adapter bug must not kill the poller: say so, keep going
            log.exception("%s: poll raised", self.name)
            self._failed(f"{self.name}: poll raised {type(exc).__name__}")
            return False
        with self._lock:
            self.polls += 1
            self._failures_in_a_row = 0
            if self._error is not None:
                log.info("%s: answering again", self.name)
            self._error = None
            self.last_ok_s = now_s
            self._prices.update(fetched.prices_by_zone)
            for name in ("btc_usd", "difficulty", "fees_btc_per_block", "subsidy_btc",
                         "hashprice_usd_per_phs_day"):
                quote = getattr(fetched, name)
                if quote is not None:
                    self._fields[name] = quote
            self._ahead.update(fetched.ahead_by_zone)
            self._problems = fetched.problems
        return True

    def _failed(self, reason: str) -> None:
        with self._lock:
            self.polls += 1
            self.errors += 1
            self._failures_in_a_row += 1
            first = self._error is None
            self._error = reason
        if first:
            log.warning("%s (keeping the last values until they go stale)", reason)

    def next_wait_s(self) -> float:
        """The wait before the next poll: the interval, or the backoff after failures."""
        with self._lock:
            failures = self._failures_in_a_row
        if failures == 0:
            return self.interval_s
        return min(self.backoff_s * 2 ** (failures - 1), self.interval_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.next_wait_s())

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

    # ----- what it says ----------------------------------------------------------------------

    def quotes(self, now_s: float) -> MarketQuotes:
        with self._lock:
            problems = list(self._problems)
            if self._error is not None:
                problems.insert(0, self._error)
            elif self.last_ok_s is None:
                problems.insert(0, f"{self.name}: no answer yet")
            fields = dict(self._fields)
            prices = dict(self._prices)
        return MarketQuotes(
            prices_by_zone=prices,
            btc_usd=fields.get("btc_usd"),
            difficulty=fields.get("difficulty"),
            fees_btc_per_block=fields.get("fees_btc_per_block"),
            subsidy_btc=fields.get("subsidy_btc"),
            hashprice_usd_per_phs_day=fields.get("hashprice_usd_per_phs_day"),
            problems=tuple(problems),
        )

    def published(self, zone: str) -> PublishedPrices | None:
        """The zone's prices published for later hours at the last answer, if the source has
        any (a day-ahead market's)."""
        with self._lock:
            return self._ahead.get(zone)

    def health(self) -> SourceHealth:
        with self._lock:
            return SourceHealth(self.name, self.polls, self.errors, self.last_ok_s, self._error)
