"""Several market sources as one feed: ops values over the HTTP endpoint over the replay.

Field by field (each zone's price, the Bitcoin price, difficulty, fees, a direct hashprice), the
highest-priority source with a usable value wins; a refused value from a higher source is
reported in `problems` and the next source is tried. A zone no source can price is in
`stale_zones`, and the planner falls back. The priority and the validation are decided here and
in `assemble_snapshot`; each source only reports what it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from scheduler.core.market import (
    DEFAULT_FX_USD_PER_UNIT,
    DEFAULT_MARKET_LIMITS,
    MarketLimits,
    MarketQuotes,
    MarketSnapshot,
    assemble_snapshot,
)
from scheduler.feeds.base import QuoteSource


class LayeredFeed:
    """`sources` in priority order, highest first (use `LayeredFeed.standard` for the usual one)."""

    def __init__(
        self,
        sources: Sequence[QuoteSource],
        zones: Iterable[str],
        fx_usd_per_unit: Mapping[str, float] = DEFAULT_FX_USD_PER_UNIT,
        limits: MarketLimits = DEFAULT_MARKET_LIMITS,
    ) -> None:
        if not sources:
            raise ValueError("a LayeredFeed needs at least one source")
        self.sources = tuple(sources)
        self.zones = tuple(zones)
        self.fx_usd_per_unit = fx_usd_per_unit
        self.limits = limits

    @classmethod
    def standard(
        cls,
        zones: Iterable[str],
        ops: QuoteSource | None = None,
        http: QuoteSource | None = None,
        replay: QuoteSource | None = None,
        fx_usd_per_unit: Mapping[str, float] = DEFAULT_FX_USD_PER_UNIT,
        limits: MarketLimits = DEFAULT_MARKET_LIMITS,
    ) -> LayeredFeed:
        """Ops overrides > HTTP endpoint > replay, skipping the ones not given."""
        sources = [s for s in (ops, http, replay) if s is not None]
        return cls(sources, zones, fx_usd_per_unit, limits)

    def quotes(self, now_s: float) -> list[MarketQuotes]:
        return [source.quotes(now_s) for source in self.sources]

    def snapshot(self, now_s: float) -> MarketSnapshot:
        return assemble_snapshot(
            now_s, self.quotes(now_s), self.zones, self.fx_usd_per_unit, self.limits
        )
