"""Market values set by ops through the admin API (the highest-priority layer).

An ops value holds until cleared or until its time to live runs out (`ttl_s`, default a day), so
a number typed in during an incident does not silently steer the fleet for a week. Values are
kept as given (a price may be in a zone's own currency); `assemble_snapshot` converts and
validates them like any other quote, so an absurd ops value is refused and reported too.
Thread-safe: the admin API sets values while the planner's tick reads them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping

from scheduler.core.market import (
    DEFAULT_FX_USD_PER_UNIT,
    DEFAULT_MARKET_LIMITS,
    MarketLimits,
    MarketQuotes,
    MarketSnapshot,
    Quote,
    assemble_snapshot,
)

DEFAULT_OPS_TTL_S = 86_400.0


def _forgotten(quote: Quote, now_s: float) -> bool:
    if quote.valid_until_s is None:
        return False
    ttl = quote.valid_until_s - quote.as_of_s
    return now_s > quote.valid_until_s + ttl


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class OpsFeed:
    """Values set by ops; each call takes the scheduler time it happens at (`now_s`)."""

    def __init__(
        self,
        zones: Iterable[str] = (),
        fx_usd_per_unit: Mapping[str, float] = DEFAULT_FX_USD_PER_UNIT,
        limits: MarketLimits = DEFAULT_MARKET_LIMITS,
        default_ttl_s: float = DEFAULT_OPS_TTL_S,
        name: str = "ops",
    ) -> None:
        self.name = name
        self.zones = tuple(zones)
        self.fx_usd_per_unit = fx_usd_per_unit
        self.limits = limits
        self.default_ttl_s = default_ttl_s
        self._lock = threading.Lock()
        self._prices: dict[str, Quote] = {}
        self._fields: dict[str, Quote] = {}

    def _quote(self, value: float, now_s: float, ttl_s: float | None, currency: str) -> Quote:
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        return Quote(value, now_s, self.name, currency, valid_until_s=now_s + ttl)

    def set_price(
        self,
        zone: str,
        price_per_mwh: float,
        now_s: float,
        currency: str = "USD",
        ttl_s: float | None = None,
    ) -> None:
        with self._lock:
            self._prices[zone] = self._quote(price_per_mwh, now_s, ttl_s, currency)

    def _set(self, field: str, value: float, now_s: float, ttl_s: float | None) -> None:
        with self._lock:
            self._fields[field] = self._quote(value, now_s, ttl_s, "USD")

    def set_btc_usd(self, btc_usd: float, now_s: float, ttl_s: float | None = None) -> None:
        self._set("btc_usd", btc_usd, now_s, ttl_s)

    def set_difficulty(self, difficulty: float, now_s: float, ttl_s: float | None = None) -> None:
        self._set("difficulty", difficulty, now_s, ttl_s)

    def set_fees_btc_per_block(
        self, fees_btc_per_block: float, now_s: float, ttl_s: float | None = None
    ) -> None:
        self._set("fees_btc_per_block", fees_btc_per_block, now_s, ttl_s)

    def set_hashprice(
        self, hashprice_usd_per_phs_day: float, now_s: float, ttl_s: float | None = None
    ) -> None:
        """A hashprice used as is, instead of the one computed from BTC price and difficulty."""
        self._set("hashprice_usd_per_phs_day", hashprice_usd_per_phs_day, now_s, ttl_s)

    def clear(self, field: str | None = None, zone: str | None = None) -> None:
        """Drop one zone's price (`zone`), one field (`field`, e.g. "btc_usd"), or everything."""
        with self._lock:
            if zone is not None:
                self._prices.pop(zone, None)
            if field is not None:
                self._fields.pop(field, None)
            if zone is None and field is None:
                self._prices.clear()
                self._fields.clear()

    # The journal keeps the values (ops state "market:ops") so that a restarted scheduler obeys
    # them until they expire, as the one before did.

    def to_json(self) -> str:
        def row(q: Quote) -> dict[str, object]:
            return {"value": q.value, "as_of_s": q.as_of_s, "currency": q.currency,
                    "valid_until_s": q.valid_until_s}

        with self._lock:
            return json.dumps({
                "prices": {zone: row(q) for zone, q in self._prices.items()},
                "fields": {name: row(q) for name, q in self._fields.items()},
            })

    def load_json(self, text: str) -> None:
        """Values saved by `to_json`; ValueError (and nothing changed) when it is not that."""
        try:
            doc = json.loads(text)
            prices = {
                str(zone): Quote(float(r["value"]), float(r["as_of_s"]), self.name,
                                 str(r["currency"]), _optional_float(r["valid_until_s"]))
                for zone, r in doc["prices"].items()
            }
            fields = {
                str(name): Quote(float(r["value"]), float(r["as_of_s"]), self.name, "USD",
                                 _optional_float(r["valid_until_s"]))
                for name, r in doc["fields"].items()
            }
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise ValueError(f"not saved ops market values: {err}") from err
        with self._lock:
            self._prices, self._fields = prices, fields

    def quotes(self, now_s: float) -> MarketQuotes:
        # An expired value stays one more time-to-live, so `assemble_snapshot` reports it as
        # expired (ops see their value no longer counts), then it is dropped.
        with self._lock:
            for table in (self._prices, self._fields):
                for key in [k for k, q in table.items() if _forgotten(q, now_s)]:
                    del table[key]
            prices = dict(self._prices)
            fields = dict(self._fields)
        return MarketQuotes(
            prices_by_zone=prices,
            btc_usd=fields.get("btc_usd"),
            difficulty=fields.get("difficulty"),
            fees_btc_per_block=fields.get("fees_btc_per_block"),
            hashprice_usd_per_phs_day=fields.get("hashprice_usd_per_phs_day"),
        )

    def snapshot(self, now_s: float) -> MarketSnapshot:
        return assemble_snapshot(
            now_s, [self.quotes(now_s)], self.zones, self.fx_usd_per_unit, self.limits
        )
