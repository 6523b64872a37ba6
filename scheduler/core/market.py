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


def price_field(zone: str) -> str:
    return f"price[{zone}]"


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


DEFAULT_MARKET_LIMITS = MarketLimits()


@dataclass(frozen=True)
class MarketSnapshot:
    """The market at `t_s` (scheduler clock), in USD, with what could not be trusted.

    A zone in `stale_zones` has no usable price and is absent from `price_usd_per_mwh_by_zone`.
    A None Bitcoin field could not be used; `hashprice_usd_per_phs_day` is None when the Bitcoin
    price or difficulty is unusable. Missing fees count as 0 (a `problems` entry says so), which
    understates hashprice by the fee share (about 1-5% in 2024-25).
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
    low: float,
    high: float,
    low_inclusive: bool,
    problems: list[str],
) -> tuple[float | None, str | None]:
    """The first usable candidate (highest priority first); refusals go into `problems`."""
    for quote in candidates:
        if quote is None:
            continue
        value, problem = _check(
            name, quote, now_s, max_age_s, limits.max_future_s, fx_usd_per_unit, low, high,
            low_inclusive,
        )
        if problem is not None:
            problems.append(problem)
            continue
        return value, quote.source
    return None, None


def assemble_snapshot(
    now_s: float,
    layers: Sequence[MarketQuotes],
    zones: Iterable[str],
    fx_usd_per_unit: Mapping[str, float] = DEFAULT_FX_USD_PER_UNIT,
    limits: MarketLimits = DEFAULT_MARKET_LIMITS,
) -> MarketSnapshot:
    """Merge sources (highest priority first) into a validated USD snapshot at `now_s`.

    `zones` are the zones the caller needs; each without a usable price is reported missing and
    put into `stale_zones`. Zones a source quotes beyond those are validated and kept too.
    """
    problems: list[str] = []
    for layer in layers:
        problems.extend(layer.problems)
    sources: dict[str, str] = {}

    wanted = list(dict.fromkeys(zones))
    quoted = [z for layer in layers for z in layer.prices_by_zone if z not in wanted]
    prices: dict[str, float] = {}
    stale: set[str] = set()
    for zone in list(dict.fromkeys(wanted + quoted)):
        name = price_field(zone)
        value, source = _pick(
            name,
            [layer.prices_by_zone.get(zone) for layer in layers],
            now_s,
            limits.max_price_age_s,
            limits,
            fx_usd_per_unit,
            limits.min_price_usd_per_mwh,
            limits.max_price_usd_per_mwh,
            True,
            problems,
        )
        if value is None:
            stale.add(zone)
            if all(zone not in layer.prices_by_zone for layer in layers):
                problems.append(f"{name}: missing")
            continue
        prices[zone] = value
        sources[name] = source or ""

    def pick_btc(name: str, attr: str, max_age_s: float, high: float) -> float | None:
        candidates = [getattr(layer, attr) for layer in layers]
        value, source = _pick(
            name, candidates, now_s, max_age_s, limits, fx_usd_per_unit, 0.0, high, False,
            problems,
        )
        if value is None:
            if all(c is None for c in candidates):
                problems.append(f"{name}: missing")
            return None
        sources[name] = source or ""
        return value

    btc_usd = pick_btc(BTC_USD, "btc_usd", limits.max_btc_age_s, limits.max_btc_usd)
    difficulty = pick_btc(
        DIFFICULTY, "difficulty", limits.max_difficulty_age_s, limits.max_difficulty
    )
    fee_candidates = [layer.fees_btc_per_block for layer in layers]
    fees, fee_source = _pick(
        FEES, fee_candidates, now_s, limits.max_fees_age_s, limits, fx_usd_per_unit, 0.0,
        limits.max_fees_btc_per_block, True, problems,
    )
    if fees is not None:
        sources[FEES] = fee_source or ""

    market_time_s = next(
        (layer.market_time_s for layer in layers if layer.market_time_s is not None), None
    )
    subsidy_quote = next((layer.subsidy_btc for layer in layers if layer.subsidy_btc), None)
    if subsidy_quote is not None and math.isfinite(subsidy_quote.value):
        subsidy_btc = subsidy_quote.value
        sources[SUBSIDY] = subsidy_quote.source
    else:
        # The subsidy follows from the calendar; in a replay the market's own time is the date.
        day_t_s = market_time_s if market_time_s is not None else now_s
        subsidy_btc = block_subsidy_btc(dt.datetime.fromtimestamp(day_t_s, tz=dt.UTC).date())

    hashprice: float | None = None
    if btc_usd is not None and difficulty is not None:
        if fees is None:
            problems.append(f"{FEES}: missing or refused, hashprice counts the subsidy only")
        hashprice = hashprice_usd_per_phs_day(btc_usd, difficulty, fees or 0.0, subsidy_btc)

    return MarketSnapshot(
        t_s=now_s,
        price_usd_per_mwh_by_zone=prices,
        btc_usd=btc_usd,
        difficulty=difficulty,
        fees_btc_per_block=fees,
        hashprice_usd_per_phs_day=hashprice,
        problems=tuple(problems),
        stale_zones=frozenset(stale),
        sources=sources,
        market_time_s=market_time_s,
        subsidy_btc=subsidy_btc,
    )
