"""Market state as the core sees it, and the rules that decide which quoted values may be used.

A feed (`scheduler.feeds`) turns files, an HTTP endpoint or ops' admin calls into `MarketQuotes`:
raw values with their currency, source and time. `assemble_snapshot` (pure) picks, field by field,
the highest-priority quote that passes validation, converts it to USD and returns a
`MarketSnapshot`. Whatever it refuses is written into `problems`, and a price zone with no usable
price is put into `stale_zones`, so the planner can fall back (see `scheduler.core.planner`)
instead of acting on a bad number. This module decides what "usable" means; what to do without a
usable value is the planner's decision.

A value is refused when it is missing, not finite, older than its maximum age (or past its
`valid_until_s`), stamped in the future, in a currency with no FX rate, or absurd: a power price
above 20,000 or below -1,000 USD/MWh, a Bitcoin price or difficulty that is not positive, fees
below zero or above 50 BTC a block. Why those bounds: the highest price in the shipped data is
ERCOT's $8,995/MWh (Feb 2021), the AEMO market price cap is AUD 17,500/MWh (~$11,000) for 2024-25,
and the lowest floors are AEMO's AUD -1,000 and the EU day-ahead's EUR -500; the highest daily fee
level in the shipped data is 8.7 BTC a block (the 2024 halving day).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.core.economics import block_subsidy_btc, hashprice_usd_per_phs_day

# The 12 price zones of the shipped price file (elec_prices_hourly_12regions_2020_2024.csv.gz, from
# HewlettPackard/green-dcc) and the currency each is quoted in (the column suffix).
PRICE_ZONE_CURRENCY: Mapping[str, str] = {
    "US-TEX-ERCO": "USD",
    "US-MIDA-PJM": "USD",
    "US-NY-NYIS": "USD",
    "US-CAL-CISO": "USD",
    "CA-ON": "CAD",
    "BR": "BRL",
    "DE-LU": "EUR",
    "FR": "EUR",
    "ES": "EUR",
    "NL": "EUR",
    "AU-NSW": "AUD",
    "JP-TK": "JPY",
}

# USD per unit: the fixed rates HewlettPackard/green-dcc used for the same price data (listed in
# the shared data README). The fleet file carries its own copy; these are only the default.
DEFAULT_FX_USD_PER_UNIT: Mapping[str, float] = {
    "USD": 1.0,
    "EUR": 1.07764,
    "CAD": 0.70067,
    "BRL": 0.17488,
    "AUD": 0.63056,
    "JPY": 0.00665,
}

# Field names used in `problems` and `sources`.
BTC_USD = "btc_usd"
DIFFICULTY = "difficulty"
FEES = "fees_btc_per_block"
SUBSIDY = "subsidy_btc"
HASHPRICE = "hashprice_usd_per_phs_day"


def price_field(zone: str) -> str:
    return f"price[{zone}]"


@dataclass(frozen=True)
class ZoneHourPrice:
    """A zone's price for one market hour as a live source gave it (kept in the journal, where
    the outlook and later backtests read it): the mean of the distinct quotes seen in the hour."""

    zone: str
    hour_start_s: float
    price_usd_per_mwh: float
    source: str
    quotes: int = 1  # how many distinct quotes the mean is over (15-minute intervals: up to 4)


@dataclass(frozen=True)
class Quote:
    """One quoted value. `as_of_s` is when it was true, on the scheduler's clock.

    `valid_until_s`, when set, replaces the age limit: the value is good until then (ops values).
    """

    value: float
    as_of_s: float
    source: str = ""
    currency: str = "USD"
    valid_until_s: float | None = None


@dataclass(frozen=True)
class MarketQuotes:
    """What one source says now. Absent keys / None mean the source has nothing for that field.

    `market_time_s` is the time in the market's own timeline (history, for a replay); `problems`
    are the source's own troubles (a failed poll, a gap in a file).
    """

    prices_by_zone: Mapping[str, Quote] = field(default_factory=dict)
    btc_usd: Quote | None = None
    difficulty: Quote | None = None
    fees_btc_per_block: Quote | None = None
    subsidy_btc: Quote | None = None
    # A hashprice quoted directly (ops, an index provider); used instead of the computed one.
    hashprice_usd_per_phs_day: Quote | None = None
    market_time_s: float | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class MarketLimits:
    """Maximum ages (seconds on the scheduler's clock) and plausible ranges of market values."""

    max_price_age_s: float = 2 * 3600.0  # hourly markets: one missed update is tolerated
    max_btc_age_s: float = 2 * 86400.0  # daily data: one missed day is tolerated
    max_difficulty_age_s: float = 3 * 86400.0  # changes every ~2 weeks
    max_fees_age_s: float = 3 * 86400.0
    max_future_s: float = 300.0  # clock skew allowed before a value "from the future" is refused
    min_price_usd_per_mwh: float = -1000.0
    max_price_usd_per_mwh: float = 20000.0
    max_btc_usd: float = 10_000_000.0
    max_difficulty: float = 1e18  # ~1.1e14 in 2025
    max_fees_btc_per_block: float = 50.0
    max_hashprice_usd_per_phs_day: float = 10_000.0  # the 2020-25 high was $415 (2021-08-13)

    def scaled(self, speedup: float) -> MarketLimits:
        """The same limits on a clock running `speedup` times faster than the market's (a replay
        on a compressed clock): every age is divided by `speedup`; the value bounds stay."""
        return MarketLimits(
            max_price_age_s=self.max_price_age_s / speedup,
            max_btc_age_s=self.max_btc_age_s / speedup,
            max_difficulty_age_s=self.max_difficulty_age_s / speedup,
            max_fees_age_s=self.max_fees_age_s / speedup,
            max_future_s=self.max_future_s / speedup,
            min_price_usd_per_mwh=self.min_price_usd_per_mwh,
            max_price_usd_per_mwh=self.max_price_usd_per_mwh,
            max_btc_usd=self.max_btc_usd,
            max_difficulty=self.max_difficulty,
            max_fees_btc_per_block=self.max_fees_btc_per_block,
            max_hashprice_usd_per_phs_day=self.max_hashprice_usd_per_phs_day,
        )


DEFAULT_MARKET_LIMITS = MarketLimits()


@dataclass(frozen=True)
class MarketSnapshot:
    """The market at `t_s` (scheduler clock), in USD, with what could not be trusted.

    A zone in `stale_zones` has no usable price and is absent from `price_usd_per_mwh_by_zone`.
    A None Bitcoin field could not be used; `hashprice_usd_per_phs_day` is None when the Bitcoin
    price or difficulty is unusable (and no direct hashprice quote is usable). Missing fees count
    as 0 (a `problems` entry says so), which understates hashprice by the fee share (about 1-5% in
    2024-25). `sources` and `as_of_s` are keyed by field name (`price[ZONE]`, `btc_usd`, ...).
    """

    t_s: float
    price_usd_per_mwh_by_zone: Mapping[str, float]
    btc_usd: float | None
    difficulty: float | None
    fees_btc_per_block: float | None
    hashprice_usd_per_phs_day: float | None
    problems: tuple[str, ...] = ()
    stale_zones: frozenset[str] = frozenset()
    sources: Mapping[str, str] = field(default_factory=dict)
    market_time_s: float | None = None
    subsidy_btc: float | None = None
    as_of_s: Mapping[str, float] = field(default_factory=dict)

    def usable_price(self, zone: str) -> float | None:
        """The zone's USD/MWh price, or None when it is missing or stale."""
        if zone in self.stale_zones:
            return None
        return self.price_usd_per_mwh_by_zone.get(zone)


def _check(
    name: str,
    quote: Quote,
    now_s: float,
    max_age_s: float,
    max_future_s: float,
    fx_usd_per_unit: Mapping[str, float],
    low: float,
    high: float,
    low_inclusive: bool,
) -> tuple[float | None, str | None]:
    """(USD value, None) if the quote is usable, else (None, problem)."""
    who = f"{name}: {quote.source or 'unknown source'}"
    if not math.isfinite(quote.value):
        return None, f"{who}: not a number ({quote.value!r})"
    if not math.isfinite(quote.as_of_s):
        return None, f"{who}: no valid timestamp"
    if quote.as_of_s > now_s + max_future_s:
        return None, f"{who}: stamped {quote.as_of_s - now_s:.0f} s in the future"
    if quote.valid_until_s is not None:
        if now_s > quote.valid_until_s:
            return None, f"{who}: stale (expired {now_s - quote.valid_until_s:.0f} s ago)"
    elif now_s - quote.as_of_s > max_age_s:
        age = now_s - quote.as_of_s
        return None, f"{who}: stale (age {age:.0f} s > max {max_age_s:.0f} s)"
    rate = fx_usd_per_unit.get(quote.currency)
    if rate is None or not math.isfinite(rate) or rate <= 0.0:
        return None, f"{who}: no FX rate for {quote.currency!r}"
    usd = quote.value * rate
    too_low = usd < low if low_inclusive else usd <= low
    if too_low or usd > high:
        bound = ">=" if low_inclusive else ">"
        return None, f"{who}: absurd value {usd:g} USD (must be {bound} {low:g} and <= {high:g})"
    return usd, None


def _pick(
    name: str,
    candidates: Sequence[Quote | None],
    now_s: float,
    max_age_s: float,
    limits: MarketLimits,
    fx_usd_per_unit: Mapping[str, float],
    bounds: tuple[float, float, bool],
    problems: list[str],
) -> tuple[float, Quote] | None:
    """The first usable candidate (highest priority first) in USD; refusals go into `problems`.

    `bounds` is (low, high, low inclusive).
    """
    low, high, low_inclusive = bounds
    for quote in candidates:
        if quote is None:
            continue
        value, problem = _check(
            name, quote, now_s, max_age_s, limits.max_future_s, fx_usd_per_unit, low, high,
            low_inclusive,
        )
        if problem is not None or value is None:
            problems.append(problem or f"{name}: refused")
            continue
        return value, quote
    return None


class _Assembler:
    """Collects the picked values, their sources and times, and the problems of one snapshot."""

    def __init__(
        self,
        now_s: float,
        layers: Sequence[MarketQuotes],
        fx_usd_per_unit: Mapping[str, float],
        limits: MarketLimits,
    ) -> None:
        self.now_s = now_s
        self.layers = layers
        self.fx = fx_usd_per_unit
        self.limits = limits
        self.problems: list[str] = [p for layer in layers for p in layer.problems]
        self.sources: dict[str, str] = {}
        self.as_of: dict[str, float] = {}

    def pick(
        self,
        name: str,
        candidates: Sequence[Quote | None],
        max_age_s: float,
        bounds: tuple[float, float, bool],
        report_missing: bool = True,
    ) -> float | None:
        picked = _pick(
            name, candidates, self.now_s, max_age_s, self.limits, self.fx, bounds, self.problems
        )
        if picked is None:
            if report_missing and all(c is None for c in candidates):
                self.problems.append(f"{name}: missing")
            return None
        value, quote = picked
        self.sources[name] = quote.source
        self.as_of[name] = quote.as_of_s
        return value


def assemble_snapshot(
    now_s: float,
    layers: Sequence[MarketQuotes],
    zones: Iterable[str],
    fx_usd_per_unit: Mapping[str, float] = DEFAULT_FX_USD_PER_UNIT,
    limits: MarketLimits = DEFAULT_MARKET_LIMITS,
) -> MarketSnapshot:
    """Merge sources (highest priority first) into a validated USD snapshot at `now_s`.

    `zones` are the zones the caller needs; each without a usable price is reported and put into
    `stale_zones`. Zones a source quotes beyond those are validated and kept too. A hashprice
    quoted directly by any layer (first usable in priority order) is used as is; otherwise it is
    computed from the Bitcoin price, difficulty, fees and the subsidy of the market's day.
    """
    lim = limits
    asm = _Assembler(now_s, layers, fx_usd_per_unit, lim)

    wanted = list(dict.fromkeys(zones))
    quoted = [z for layer in layers for z in layer.prices_by_zone if z not in wanted]
    prices: dict[str, float] = {}
    stale: set[str] = set()
    price_bounds = (lim.min_price_usd_per_mwh, lim.max_price_usd_per_mwh, True)
    for zone in dict.fromkeys(wanted + quoted):
        candidates = [layer.prices_by_zone.get(zone) for layer in layers]
        value = asm.pick(price_field(zone), candidates, lim.max_price_age_s, price_bounds)
        if value is None:
            stale.add(zone)
        else:
            prices[zone] = value

    btc_usd = asm.pick(
        BTC_USD, [q.btc_usd for q in layers], lim.max_btc_age_s, (0.0, lim.max_btc_usd, False)
    )
    difficulty = asm.pick(
        DIFFICULTY,
        [q.difficulty for q in layers],
        lim.max_difficulty_age_s,
        (0.0, lim.max_difficulty, False),
    )
    fees = asm.pick(
        FEES,
        [q.fees_btc_per_block for q in layers],
        lim.max_fees_age_s,
        (0.0, lim.max_fees_btc_per_block, True),
        report_missing=False,
    )
    direct_candidates = [q.hashprice_usd_per_phs_day for q in layers]
    direct_hashprice = asm.pick(
        HASHPRICE,
        direct_candidates,
        lim.max_btc_age_s,
        (0.0, lim.max_hashprice_usd_per_phs_day, False),
        report_missing=False,
    )

    market_time_s = next(
        (layer.market_time_s for layer in layers if layer.market_time_s is not None), None
    )
    subsidy_quote = next((layer.subsidy_btc for layer in layers if layer.subsidy_btc), None)
    if subsidy_quote is not None and math.isfinite(subsidy_quote.value):
        subsidy_btc = subsidy_quote.value
        asm.sources[SUBSIDY] = subsidy_quote.source
    else:
        # The subsidy follows from the calendar; in a replay the market's own time is the date.
        day_t_s = market_time_s if market_time_s is not None else now_s
        subsidy_btc = block_subsidy_btc(dt.datetime.fromtimestamp(day_t_s, tz=dt.UTC).date())

    hashprice: float | None = direct_hashprice
    if hashprice is None and btc_usd is not None and difficulty is not None:
        if fees is None:
            asm.problems.append(f"{FEES}: missing or refused, hashprice counts the subsidy only")
        hashprice = hashprice_usd_per_phs_day(btc_usd, difficulty, fees or 0.0, subsidy_btc)

    return MarketSnapshot(
        t_s=now_s,
        price_usd_per_mwh_by_zone=prices,
        btc_usd=btc_usd,
        difficulty=difficulty,
        fees_btc_per_block=fees,
        hashprice_usd_per_phs_day=hashprice,
        problems=tuple(asm.problems),
        stale_zones=frozenset(stale),
        sources=asm.sources,
        market_time_s=market_time_s,
        subsidy_btc=subsidy_btc,
        as_of_s=asm.as_of,
    )
