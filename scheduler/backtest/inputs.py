"""Reading the backtest's input files: hourly prices, daily Bitcoin facts and request traces.

What it decides: which rows of each file fall in the backtested period, how short price gaps are
filled (carried forward, up to a limit) and what counts as malformed. Every problem is an
`InputError` naming the file, the row (1-based line number, header = 1) and the column, so an
operator can open the file at the right place. What it leaves to others: what the numbers mean
(FX conversion and economics belong to the fleet and scheduler.core.economics), and how a trace
becomes hourly work (scheduler.backtest.workload).

Only the rows of the period are checked for numbers (plus the week before it, which the price
outlooks read); a malformed value elsewhere in a five-year file does not stop a one-week run.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

S_PER_H = 3600
S_PER_DAY = 86_400
BLOCKS_PER_DAY = 144  # one block per 600 s target spacing (Bitcoin consensus rule)
PRICE_LOOKBACK_H = 7 * 24  # the outlooks read up to a week of past prices

PRICE_FILE = "elec_prices_hourly_12regions_2020_2024.csv.gz"
BTC_FILE = "btc_daily_price_hashrate_2020_2026.csv"
BTC_FEES_FILE = "btc_blockchaincom_fees_revenue_2023_2024.csv"
TRACE_FILES = ("azure_llm_2023_code.csv", "azure_llm_2023_conv.csv")


class InputError(ValueError):
    """A missing or malformed input: which file, which row, which column, and what is wrong."""

    def __init__(
        self, path: Path | str, message: str, row: int | None = None, column: str | None = None
    ) -> None:
        self.path = str(path)
        self.row = row
        self.column = column
        self.message = message
        where = self.path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------- where the default files live


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    env = os.environ.get("HASHSERVE_SHARED_DATA")
    return Path(env) if env else repo_root().parent / "shared" / "data"


def default_data_file(name: str) -> Path:
    """The copy shipped in scheduler/data if there is one, else the shared data folder's."""
    from scheduler import data as shipped

    try:
        return shipped.data_path(name)
    except FileNotFoundError:
        return shared_data_dir() / name


def default_prices_path() -> Path:
    return default_data_file(PRICE_FILE)


def default_btc_paths() -> tuple[Path, Path | None]:
    """(daily facts, extra fees file or None): the shipped facts carry fees already."""
    from scheduler import data as shipped

    try:
        return shipped.btc_facts_file(), None
    except FileNotFoundError:
        folder = shared_data_dir()
        return folder / BTC_FILE, folder / BTC_FEES_FILE


def default_trace_paths() -> tuple[Path, ...]:
    return tuple(default_data_file(name) for name in TRACE_FILES)


# ---------------------------------------------------------------- CSV plumbing


def _open_text(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _read_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]], io.TextIOBase]:
    handle = _open_text(path)
    reader = csv.reader(handle)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        handle.close()
        raise InputError(path, "empty file, expected a header row", row=1) from None
    except (csv.Error, UnicodeDecodeError, OSError) as exc:
        handle.close()
        raise InputError(path, f"unreadable: {exc}", row=1) from None
    return header, ((i + 2, row) for i, row in enumerate(reader)), handle


def read_header(path: Path) -> list[str]:
    """The header row of a CSV file (names stripped)."""
    header, _rows, handle = _read_rows(Path(path))
    handle.close()
    return header


def _column(path: Path, header: Sequence[str], name: str) -> int:
    try:
        return header.index(name)
    except ValueError:
        raise InputError(
            path, f"missing column; the header has {', '.join(header)}", row=1, column=name
        ) from None


def _first_column(path: Path, header: Sequence[str], names: Sequence[str]) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise InputError(
        path, f"missing column (one of {', '.join(names)}); the header has {', '.join(header)}",
        row=1, column=names[0],
    )


def _cell(path: Path, row: list[str], line: int, index: int, column: str) -> str:
    if index >= len(row):
        raise InputError(path, f"row has {len(row)} cells, expected a value here", line, column)
    return row[index].strip()


def _float(path: Path, text: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"not a number: {text!r}", line, column) from None
    if not math.isfinite(value):
        raise InputError(path, f"not a finite number: {text!r}", line, column)
    return value


def parse_utc_s(text: str) -> float:
    """Seconds since the epoch of an ISO-8601 time; naive times are taken as UTC."""
    stamp = datetime.fromisoformat(text.strip())
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def day_start_s(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def utc_date(t_s: float) -> date:
    return datetime.fromtimestamp(t_s, tz=UTC).date()


# ---------------------------------------------------------------- hourly prices


@dataclass(frozen=True)
class PriceTable:
    """Hourly prices per zone column, native currency per MWh, hour-start timestamps.

    `start_s` is the first hour of the backtested period; the arrays begin `lookback_h` hours
    earlier so that the outlooks can read past prices at the first hour.
    """

    path: str
    start_s: float
    hours: int
    lookback_h: int
    native_per_mwh: dict[str, np.ndarray]  # column -> array of lookback_h + hours values
    filled_hours: dict[str, int]  # column -> gaps carried forward inside the period
    # Rows the file lacks inside the period (the spring DST hour of a file kept in local time),
    # filled like empty cells; and hours the file gives twice (the fall DST hour), averaged.
    missing_rows: int = 0
    merged_rows: int = 0

    def period(self, column: str) -> np.ndarray:
        return self.native_per_mwh[column][self.lookback_h :]


def load_prices(
    path: Path,
    columns: Sequence[str],
    start_s: float,
    hours: int,
    max_gap_h: int = 48,
    lookback_h: int = PRICE_LOOKBACK_H,
) -> PriceTable:
    """Hourly prices of `columns` for `hours` hours from `start_s` (plus `lookback_h` before).

    Empty cells are real gaps in the published series (a DST hour, a day the ISO did not post):
    they are carried forward from the previous hour, at most `max_gap_h` hours in a row; a longer
    gap, or no value at all before it, is an error naming the first empty row. A missing row
    inside the period (the spring DST hour of a series kept in local time) is such a gap; an hour
    given twice (the fall one) is merged, its values averaged. Both are counted in the table. A
    timestamp earlier than the one before it is still an error: that is a file out of order.
    """
    path = Path(path)
    header, rows, handle = _read_rows(path)
    with handle:
        ts_col = _column(path, header, "timestamp_utc")
        indices = {c: _column(path, header, c) for c in columns}
        first_s = start_s - lookback_h * S_PER_H
        total = lookback_h + hours
        values = {c: np.full(total, np.nan) for c in columns}
        lines = np.zeros(total, dtype=np.int64)
        seen = np.zeros(total, dtype=bool)
        repeats = {c: np.zeros(total, dtype=np.int64) for c in columns}
        merged = 0
        previous_s = -math.inf
        try:
            for line, row in rows:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                stamp = _cell(path, row, line, ts_col, "timestamp_utc")
                try:
                    t_s = parse_utc_s(stamp)
                except ValueError:
                    raise InputError(
                        path, f"not an ISO-8601 time: {stamp!r}", line, "timestamp_utc"
                    ) from None
                repeated = t_s == previous_s
                if t_s < previous_s:
                    raise InputError(
                        path, "timestamps must increase (this one is out of order)", line,
                        "timestamp_utc",
                    )
                previous_s = t_s
                offset = (t_s - first_s) / S_PER_H
                if offset < 0:
                    continue
                if offset >= total:
                    break
                if offset != int(offset):
                    raise InputError(path, "timestamp is not on the hour", line, "timestamp_utc")
                i = int(offset)
                seen[i] = True
                lines[i] = line
                merged += int(repeated and i >= lookback_h)
                for column, index in indices.items():
                    text = _cell(path, row, line, index, column)
                    if not text:
                        continue
                    value = _float(path, text, line, column)
                    if repeated and not math.isnan(values[column][i]):
                        # The same hour again: the running mean of its rows.
                        repeats[column][i] += 1
                        n = repeats[column][i] + 1
                        value = values[column][i] + (value - values[column][i]) / n
                    values[column][i] = value
        except csv.Error as exc:
            raise InputError(path, f"malformed CSV: {exc}") from None
    if not seen[lookback_h:].any():
        raise InputError(
            path, f"no rows in the period {_iso(start_s)} .. {_iso(start_s + hours * S_PER_H)}"
        )
    missing = np.flatnonzero(~seen[lookback_h:])
    seen_at = np.flatnonzero(seen)
    first_seen, last_seen = int(seen_at[0]), int(seen_at[-1])
    # Rows missing before the file's first one or after its last: it does not cover the period.
    # Missing rows between two rows are gaps, filled below like empty cells (within the same
    # bound).
    uncovered = [int(m) for m in missing if not first_seen <= lookback_h + int(m) <= last_seen]
    if uncovered:
        first_uncovered = uncovered[0]
        raise InputError(
            path,
            f"hour {_iso(start_s + first_uncovered * S_PER_H)} is missing: the file does not "
            f"cover the period {_iso(start_s)} .. {_iso(start_s + hours * S_PER_H)}",
            column="timestamp_utc",
        )
    filled: dict[str, int] = {}
    for column, series in values.items():
        filled[column] = _carry_forward(path, column, series, lines, lookback_h, max_gap_h)
    return PriceTable(
        str(path), start_s, hours, lookback_h, values, filled,
        missing_rows=int(missing.size), merged_rows=merged,
    )


def _carry_forward(
    path: Path, column: str, series: np.ndarray, lines: np.ndarray, lookback_h: int,
    max_gap_h: int,
) -> int:
    """Fill gaps in place; returns how many period hours were filled."""
    filled = 0
    run = 0
    last = math.nan
    for i in range(series.size):
        if math.isnan(series[i]):
            run += 1
            if i >= lookback_h:
                filled += 1
            if i >= lookback_h and (math.isnan(last) or run > max_gap_h):
                start = i - run + 1
                start_line = int(lines[max(start, lookback_h)])
                reason = (
                    "no price before this empty cell to carry forward"
                    if math.isnan(last)
                    else f"{run} empty hours in a row (more than {max_gap_h} may be filled)"
                )
                raise InputError(path, f"empty price: {reason}", start_line or None, column)
            series[i] = last
        else:
            run = 0
            last = float(series[i])
    # Lookback hours before the file's first value take the first period value: they only feed
    # the outlooks of the first week.
    head = series[:lookback_h]
    head[np.isnan(head)] = series[lookback_h]
    return filled


def _iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


# ---------------------------------------------------------------- daily Bitcoin facts


@dataclass(frozen=True)
class BtcDaily:
    """Per day of the period: BTC price, difficulty and fees per block (BTC)."""

    first_day: date
    btc_usd: np.ndarray
    difficulty: np.ndarray
    fees_btc_per_block: np.ndarray
    fee_days: int  # days whose fees came from a file; the rest are 0 (subsidy only)

    def day_index(self, t_s: float) -> int:
        return (utc_date(t_s) - self.first_day).days


_PRICE_COLUMNS = ("btc_usd_close", "btc_usd", "price_usd")
_FEE_BLOCK_COLUMNS = ("fees_btc_per_block",)
_FEE_DAY_COLUMNS = ("fees_btc_per_day",)


def load_btc_daily(
    path: Path, first_day: date, days: int, fees_path: Path | None = None
) -> BtcDaily:
    """Price and difficulty must be present for every day of the period; fees where present.

    Fees come from `path` if it has a fees column (per block, or per day / 144), else from
    `fees_path` (the Blockchain.com export), else 0: a hashprice without fees understates mining
    revenue by about 1-5% in 2024-25 (shared data README), which every policy and the optimum
    share alike.
    """
    path = Path(path)
    btc = np.full(days, np.nan)
    difficulty = np.full(days, np.nan)
    fees = np.full(days, np.nan)
    lines = np.zeros(days, dtype=np.int64)
    header, rows, handle = _read_rows(path)
    with handle:
        date_col = _column(path, header, "date_utc")
        price_col = _first_column(path, header, _PRICE_COLUMNS)
        price_name = header[price_col]
        diff_col = _column(path, header, "difficulty")
        fee_col, fee_divisor = _fee_column(header)
        try:
            for line, row in rows:
                if not row:
                    continue
                i = _day_offset(path, row, line, date_col, first_day)
                if i is None or not 0 <= i < days:
                    continue
                lines[i] = line
                btc[i] = _required(path, row, line, price_col, price_name)
                difficulty[i] = _required(path, row, line, diff_col, "difficulty")
                if difficulty[i] <= 0 or btc[i] <= 0:
                    name = "difficulty" if difficulty[i] <= 0 else price_name
                    raise InputError(path, "must be positive", line, name)
                if fee_col is not None:
                    text = _cell(path, row, line, fee_col, header[fee_col])
                    if text:
                        fees[i] = _float(path, text, line, header[fee_col]) / fee_divisor
        except csv.Error as exc:
            raise InputError(path, f"malformed CSV: {exc}") from None
    absent = np.flatnonzero(lines == 0)
    if absent.size:
        raise InputError(
            path, f"no row for {first_day + timedelta(days=int(absent[0]))} (the period needs "
            f"{first_day} .. {first_day + timedelta(days=days - 1)})", column="date_utc",
        )
    if fees_path is not None:
        _merge_fees(Path(fees_path), first_day, fees)
    fee_days = int((~np.isnan(fees)).sum())
    fees = np.where(np.isnan(fees), 0.0, fees)
    if (fees < 0).any():
        raise InputError(path, "negative fees", int(lines[np.flatnonzero(fees < 0)[0]]))
    return BtcDaily(first_day, btc, difficulty, fees, fee_days)


def _fee_column(header: Sequence[str]) -> tuple[int | None, float]:
    for name in _FEE_BLOCK_COLUMNS:
        if name in header:
            return header.index(name), 1.0
    for name in _FEE_DAY_COLUMNS:
        if name in header:
            return header.index(name), float(BLOCKS_PER_DAY)
    return None, 1.0


def _merge_fees(path: Path, first_day: date, fees: np.ndarray) -> None:
    """Fill the days `fees` lacks from a daily fees file (fees_btc_per_day or _per_block)."""
    header, rows, handle = _read_rows(path)
    with handle:
        date_col = _column(path, header, "date_utc")
        fee_col, divisor = _fee_column(header)
        if fee_col is None:
            raise InputError(
                path, "missing column (one of fees_btc_per_block, fees_btc_per_day)", 1,
                "fees_btc_per_day",
            )
        name = header[fee_col]
        for line, row in rows:
            if not row:
                continue
            i = _day_offset(path, row, line, date_col, first_day)
            if i is None or not 0 <= i < fees.size or not math.isnan(fees[i]):
                continue
            text = _cell(path, row, line, fee_col, name)
            if text:
                fees[i] = _float(path, text, line, name) / divisor


def _day_offset(
    path: Path, row: list[str], line: int, date_col: int, first_day: date
) -> int | None:
    text = _cell(path, row, line, date_col, "date_utc")
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:
        raise InputError(path, f"not a date (YYYY-MM-DD): {text!r}", line, "date_utc") from None
    return (day - first_day).days


def _required(path: Path, row: list[str], line: int, index: int, column: str) -> float:
    text = _cell(path, row, line, index, column)
    if not text:
        raise InputError(path, "empty, but the period needs it", line, column)
    return _float(path, text, line, column)


# ---------------------------------------------------------------- request traces


@dataclass(frozen=True)
class Trace:
    """Requests of one trace file: seconds after its first request, input and output tokens."""

    path: str
    offset_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    @property
    def duration_s(self) -> float:
        return float(self.offset_s[-1]) if self.offset_s.size else 0.0


def load_trace(path: Path) -> Trace:
    """An Azure LLM inference trace: TIMESTAMP, ContextTokens, GeneratedTokens."""
    path = Path(path)
    header, rows, handle = _read_rows(path)
    times: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    with handle:
        ts_col = _column(path, header, "TIMESTAMP")
        in_col = _column(path, header, "ContextTokens")
        out_col = _column(path, header, "GeneratedTokens")
        try:
            for line, row in rows:
                if not row:
                    continue
                stamp = _cell(path, row, line, ts_col, "TIMESTAMP")
                try:
                    times.append(_trace_time_s(stamp))
                except ValueError:
                    raise InputError(path, f"not a time: {stamp!r}", line, "TIMESTAMP") from None
                inputs.append(_tokens(path, row, line, in_col, "ContextTokens"))
                outputs.append(_tokens(path, row, line, out_col, "GeneratedTokens"))
        except csv.Error as exc:
            raise InputError(path, f"malformed CSV: {exc}") from None
    if not times:
        raise InputError(path, "no requests after the header", row=2)
    t = np.asarray(times)
    order = np.argsort(t, kind="stable")
    return Trace(
        str(path),
        t[order] - t[order][0],
        np.asarray(inputs, dtype=np.float64)[order],
        np.asarray(outputs, dtype=np.float64)[order],
    )


def _trace_time_s(text: str) -> float:
    # Azure writes 7 fractional digits ("18:17:03.9799600"); fromisoformat takes at most 6.
    whole, _, fraction = text.strip().partition(".")
    seconds = parse_utc_s(whole)
    return seconds + (float("0." + fraction) if fraction else 0.0)


def _tokens(path: Path, row: list[str], line: int, index: int, column: str) -> int:
    text = _cell(path, row, line, index, column)
    try:
        value = int(text)
    except ValueError:
        raise InputError(path, f"not a whole number of tokens: {text!r}", line, column) from None
    if value < 0:
        raise InputError(path, f"negative token count: {value}", line, column)
    return value
