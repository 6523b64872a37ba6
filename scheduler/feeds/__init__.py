"""Market feeds: power prices per zone and Bitcoin price, difficulty and fees (hence hashprice).

One interface, `MarketFeed.snapshot(now_s) -> MarketSnapshot` (validated, USD), from:
- `ReplayFeed`: the real historical files (shipped copies by default) on a real or compressed
  clock;
- `HttpJsonFeed`: a JSON endpoint polled on an interval (format in its module docstring);
- `OpsFeed`: values ops set through the admin API;
- `LayeredFeed`: those combined, ops > HTTP > replay, field by field.
Reading the files into arrays (for the backtester too) is `scheduler.feeds.history`.
What a stale, missing, NaN or absurd value is: `scheduler.core.market`; what the planner does
then: `scheduler.core.planner`.
"""

from __future__ import annotations

from scheduler.feeds.base import MarketFeed, QuoteSource
from scheduler.feeds.history import (
    BtcDaily,
    HistoryFileError,
    PriceTable,
    load_btc_daily,
    load_price_table,
)
from scheduler.feeds.http_json import HttpJsonFeed, parse_market_json
from scheduler.feeds.layered import LayeredFeed
from scheduler.feeds.ops import OpsFeed
from scheduler.feeds.replay import ReplayFeed

__all__ = [
    "BtcDaily",
    "HistoryFileError",
    "HttpJsonFeed",
    "LayeredFeed",
    "MarketFeed",
    "OpsFeed",
    "PriceTable",
    "QuoteSource",
    "ReplayFeed",
    "load_btc_daily",
    "load_price_table",
    "parse_market_json",
]
