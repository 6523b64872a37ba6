"""Replay of the real historical market files on a real or compressed clock.

`history_time = start_s + (now_s - origin_s) * speedup`: the scheduler's clock, from `origin_s`
on, walks through history from `start_s`, `speedup` times faster (3600: an hour of history a
second). With `speedup=1` and `origin_s=start_s` (the default without a clock) scheduler time is
history time, which is what the backtester wants.

What a replay knows at a history time `h` (no look-ahead):
- a zone's price for the hour containing `h`; in a gap, the last earlier price, for at most
  `max_price_age_s` of history after its hour started (then the zone is missing);
- the Bitcoin price: the previous UTC day's close (known at 00:00), at most `max_btc_age_s` old;
- the difficulty in force at 00:00 UTC of `h`'s day, at most `max_difficulty_age_s` old (the
  shipped data stop on 2025-03-22, after which hashprice is unknown);
- fees: the previous day's total / 144 per block, at most `max_fees_age_s` old (the shipped data
  cover 2023-04-30..2024-04-27 only; elsewhere hashprice counts the subsidy only);
- the block subsidy of `h`'s day.
Times in the quotes are mapped back onto the scheduler's clock, and each quote carries
`valid_until_s` from the ages above, so staleness is judged in history time whatever the speedup.

With `loop=True` the replay never runs dry: past the end of the price file, history time goes on
(the ledger books 2025's hours as 2025's), but every value is read from the same point of a loop
from `start` to the file's end, as if that stretch of history repeated. `loops(now_s)` says how
many times it has wrapped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from scheduler.core.clock import Clock
from scheduler.core.economics import BLOCKS_PER_DAY, block_subsidy_btc
from scheduler.core.fleet import market_zone
from scheduler.core.market import (
    DEFAULT_FX_USD_PER_UNIT,
    DEFAULT_MARKET_LIMITS,
    MarketLimits,
    MarketQuotes,
    MarketSnapshot,
    Quote,
    assemble_snapshot,
)
from scheduler.core.power_step import PriceHistory
from scheduler.feeds.history import (
    DAY_S,
    BtcDaily,
    PriceTable,
    load_btc_daily,
    load_price_table,
    parse_utc_s,
)


def _iso(t_s: float) -> str:
    return dt.datetime.fromtimestamp(t_s, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_s(start: float | str | dt.datetime) -> float:
    if isinstance(start, dt.datetime):
        return (start if start.tzinfo else start.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(start, str):
        return parse_utc_s(start)
    return float(start)


class ReplayFeed:
    """Historical prices and Bitcoin facts, replayed (see the module docstring)."""

    def __init__(
        self,
        prices_path: Path | str | None = None,
        btc_path: Path | str | None = None,
        fees_path: Path | str | None = None,
        start: float | str | dt.datetime | None = None,
        speedup: float = 1.0,
        clock: Clock | None = None,
        *,
        origin_s: float | None = None,
        zones: Iterable[str] | None = None,
        fx_usd_per_unit: Mapping[str, float] = DEFAULT_FX_USD_PER_UNIT,
        limits: MarketLimits = DEFAULT_MARKET_LIMITS,
        max_price_age_s: float = 2 * 3600.0,
        max_btc_age_s: float = 2 * DAY_S,
        max_difficulty_age_s: float = 3 * DAY_S,
        max_fees_age_s: float = 3 * DAY_S,
        prices: PriceTable | None = None,
        btc: BtcDaily | None = None,
        name: str = "replay",
        loop: bool = False,
        data_start: float | str | dt.datetime | None = None,
    ) -> None:
        """Defaults: the shipped price and Bitcoin files, from the first hour of the price file.

        `prices`/`btc` take already loaded tables (a backtest sharing them between feeds).
        `origin_s`: the scheduler time at which the replay is at `start`; default `clock.now_s()`
        when a clock is given, else `start` itself. `data_start`: where in the files the replay
        reads at `start` (default `start`): beside live sources market time is the real time and
        the files' history is laid under it from `data_start`. `limits` should have its ages
        divided by `speedup` (`MarketLimits.scaled`) on a compressed clock.
        """
        if speedup <= 0.0:
            raise ValueError(f"speedup must be > 0, got {speedup!r}")
        if prices is None or btc is None:
            from scheduler import data

            if prices is None:
                prices = load_price_table(prices_path or data.price_file())
            if btc is None:
                btc = load_btc_daily(btc_path or data.btc_facts_file(), fees_path)
        self.prices = prices
        self.btc = btc
        self.name = name
        self.speedup = float(speedup)
        self.start_s = _to_s(start) if start is not None else float(prices.t_s[0])
        if origin_s is not None:
            self.origin_s = float(origin_s)
        elif clock is not None:
            self.origin_s = clock.now_s()
        else:
            self.origin_s = self.start_s
        self.zones: tuple[str, ...] = tuple(zones) if zones is not None else prices.zones
        self._columns = [(zone, prices.zone_index(market_zone(zone))) for zone in self.zones]
        self.fx_usd_per_unit = fx_usd_per_unit
        self.limits = limits
        self.max_price_age_s = max_price_age_s
        self.max_btc_age_s = max_btc_age_s
        self.max_difficulty_age_s = max_difficulty_age_s
        self.max_fees_age_s = max_fees_age_s
        self.loop = loop
        self.data_start_s = _to_s(data_start) if data_start is not None else self.start_s
        # The loop: from the data start to the end of the price file (the Bitcoin file covers it).
        self.loop_end_s = (
            float(prices.t_s[-1]) + prices.step_s if prices.hours else self.data_start_s
        )
        if loop and self.loop_end_s - self.data_start_s < DAY_S:
            raise ValueError(
                f"{name}: a looping replay needs at least a day of prices after its start "
                f"{_iso(self.data_start_s)}; the price file ends at {_iso(self.loop_end_s)}"
            )

    @property
    def loop_span_s(self) -> float:
        return self.loop_end_s - self.data_start_s

    def history_time(self, now_s: float) -> float:
        """The market time the scheduler is at (it goes on past the file's end when looping)."""
        return self.start_s + (now_s - self.origin_s) * self.speedup

    def loops(self, now_s: float) -> int:
        """How many times a looping replay has gone back to its start by `now_s`."""
        elapsed_s = self.history_time(now_s) - self.start_s
        if not self.loop or self.data_start_s + elapsed_s < self.loop_end_s:
            return 0
        return int(elapsed_s // self.loop_span_s)

    def _data_offset_s(self, now_s: float) -> float:
        """What to subtract from the history time of `now_s` to find its values in the files."""
        return self.start_s - self.data_start_s + self.loops(now_s) * self.loop_span_s

    def scheduler_time(self, history_s: float) -> float:
        return self.origin_s + (history_s - self.start_s) / self.speedup

    def price_history(
        self, now_s: float, zones: Iterable[str], fx_usd_per_unit: Mapping[str, float],
        past_hours: int,
    ) -> dict[str, PriceHistory]:
        """Each zone's last `past_hours` hourly prices in USD up to the hour of `now_s` (what the
        price outlook is built from), with when the next hour starts on the scheduler's clock."""
        table = self.prices
        offset_s = self._data_offset_s(now_s)
        row = table.row_at(self.history_time(now_s) - offset_s)
        if row is None:
            return {}
        hour_start_hist_s = float(table.t_s[row]) + offset_s
        next_start_s = self.scheduler_time(hour_start_hist_s + table.step_s)
        hour_s = self.scheduler_time(hour_start_hist_s + 2 * table.step_s) - next_start_s
        history = {}
        for zone in zones:
            column = table.zone_index(market_zone(zone))
            rate = fx_usd_per_unit.get(table.currencies[column], math.nan)
            past = [
                float(v) * rate
                for v in table.prices[max(row - past_hours + 1, 0) : row + 1, column]
            ]
            history[zone] = PriceHistory(past, next_start_s, hour_s)
        return history

    def _quote(
        self, value: float, as_of_data_s: float, max_age_s: float, currency: str, offset_s: float
    ) -> Quote:
        as_of_hist_s = as_of_data_s + offset_s
        return Quote(
            value=value,
            as_of_s=self.scheduler_time(as_of_hist_s),
            source=self.name,
            currency=currency,
            valid_until_s=self.scheduler_time(as_of_hist_s + max_age_s),
        )

    def quotes(self, now_s: float) -> MarketQuotes:
        offset_s = self._data_offset_s(now_s)
        h = self.history_time(now_s) - offset_s  # where the files are read
        problems: list[str] = []
        prices: dict[str, Quote] = {}
        table = self.prices
        row = table.row_at(h)
        if row is None:
            end = float(table.t_s[-1]) + table.step_s if table.hours else h
            first = float(table.t_s[0]) if table.hours else h
            problems.append(
                f"{self.name}: history time {_iso(h)} outside the price file "
                f"({_iso(first)} to {_iso(end)})"
            )
        else:
            for zone, j in self._columns:
                k = int(table.last_valid[row, j])
                if k < 0:
                    continue
                prices[zone] = self._quote(
                    float(table.prices[k, j]), float(table.t_s[k]), self.max_price_age_s,
                    table.currencies[j], offset_s,
                )

        btc = self.btc
        day = btc.row_at(h)
        btc_usd = difficulty = fees = None
        if day is None:
            problems.append(f"{self.name}: history time {_iso(h)} outside the Bitcoin file")
        else:
            # The close of day k is known at the end of day k (00:00 of day k+1).
            k = int(btc.last_close[day - 1]) if day >= 1 else -1
            if k >= 0:
                btc_usd = self._quote(
                    float(btc.close_usd[k]), float(btc.day_start_s[k]) + DAY_S,
                    self.max_btc_age_s, "USD", offset_s,
                )
            k = int(btc.last_difficulty[day])
            if k >= 0:
                difficulty = self._quote(
                    float(btc.difficulty[k]), float(btc.day_start_s[k]),
                    self.max_difficulty_age_s, "USD", offset_s,
                )
            k = int(btc.last_fees[day - 1]) if day >= 1 else -1
            if k >= 0:
                fees = self._quote(
                    float(btc.fees_btc_per_day[k]) / BLOCKS_PER_DAY,
                    float(btc.day_start_s[k]) + DAY_S, self.max_fees_age_s, "USD", offset_s,
                )
        subsidy = Quote(
            block_subsidy_btc(dt.datetime.fromtimestamp(h, tz=dt.UTC).date()),
            as_of_s=now_s,
            source=self.name,
        )
        return MarketQuotes(
            prices_by_zone=prices,
            btc_usd=btc_usd,
            difficulty=difficulty,
            fees_btc_per_block=fees,
            subsidy_btc=subsidy,
            market_time_s=h + offset_s,
            problems=tuple(problems),
        )

    def snapshot(self, now_s: float) -> MarketSnapshot:
        return assemble_snapshot(
            now_s, [self.quotes(now_s)], self.zones, self.fx_usd_per_unit, self.limits
        )
