"""The one interface every market feed offers, and the raw-quote interface that feeds combine by.

`MarketFeed.snapshot(now_s)` is what the scheduler and the backtester call: a validated
`MarketSnapshot` in USD. `QuoteSource.quotes(now_s)` is the raw material (values with currency,
source and time) that `LayeredFeed` merges by priority before validating once. Every feed here
is both. Validation rules live in `scheduler.core.market.assemble_snapshot`, not in the feeds.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from scheduler.core.market import MarketQuotes, MarketSnapshot


@runtime_checkable
class MarketFeed(Protocol):
    def snapshot(self, now_s: float) -> MarketSnapshot:
        """The market at `now_s` (scheduler clock), validated, in USD."""
        ...


@runtime_checkable
class QuoteSource(Protocol):
    name: str

    def quotes(self, now_s: float) -> MarketQuotes:
        """What this source says at `now_s`, unvalidated, in its own currencies."""
        ...
