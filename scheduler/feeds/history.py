"""Reading the historical market files into arrays: hourly zone prices and daily Bitcoin facts.

What it decides: how the files' columns are recognised, what a missing cell becomes (NaN), and
how "the last value known at time t" is found quickly (precomputed last-valid indices). What it
leaves to others: currency conversion (`scheduler.core.market`), what counts as stale (the replay
feed and `assemble_snapshot`), and economics.

Formats read:
- Prices: `timestamp_utc` (ISO-8601 hour start, UTC) then one `<ZONE>__<CUR>_per_MWh` column per
  zone, native currency; `.csv` or `.csv.gz`. Rows must be in time order.
- Bitcoin: `date_utc` and any of `btc_usd_close`, `difficulty`, `fees_btc_per_day` (the shipped
  facts file, or the shared `btc_daily_price_hashrate_*.csv`); fees may come from a second file
  with `date_utc` and `fees_btc_per_day` (the shared Blockchain.com export).
No pandas: the csv module and numpy (five years of 12 zones load in well under a second).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scheduler.core.market import PRICE_ZONE_CURRENCY

DAY_S = 86_400


def _no_rows() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


class HistoryFileError(ValueError):
    """A history file that cannot be read as expected; names the file, line and column."""


@contextmanager
def _open_csv(path: Path) -> Iterator[Iterator[list[str]]]:
    if not path.is_file():
        raise HistoryFileError(f"{path}: file not found")
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        yield csv.reader(text)


def _float(cell: str) -> float:
    return float(cell) if cell else math.nan


def _last_valid_index(values: np.ndarray) -> np.ndarray:
    """For each row (and column), the index of the last row <= it with a finite value, or -1."""
    rows = np.arange(values.shape[0]).reshape((-1,) + (1,) * (values.ndim - 1))
    marked = np.where(np.isfinite(values), rows, -1)
    result: np.ndarray = np.maximum.accumulate(marked, axis=0)
    return result


def parse_utc_s(text: str) -> float:
    """ISO-8601 (a trailing Z or an offset; naive means UTC) to Unix seconds."""
    stamp = dt.datetime.fromisoformat(text.strip())
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


@dataclass(frozen=True, eq=False)
class PriceTable:
    """Hourly prices: `prices[i, j]` is zone `zones[j]` in `currencies[j]` per MWh for the hour
    starting at `t_s[i]` (NaN where missing)."""

    t_s: np.ndarray  # float64 hour starts, increasing
    zones: tuple[str, ...]
    currencies: tuple[str, ...]
    prices: np.ndarray  # float64 (hours, zones)
    last_valid: np.ndarray  # int64 (hours, zones): last row <= i with a value, -1 if none
    path: str = ""
    step_s: float = 3600.0

    @property
    def hours(self) -> int:
        return int(self.t_s.shape[0])

    def zone_index(self, zone: str) -> int:
        try:
            return self.zones.index(zone)
        except ValueError:
            raise KeyError(f"{zone!r} not in {self.path or 'price table'}: {self.zones}") from None

    def row_at(self, t_s: float) -> int | None:
        """The row whose hour contains `t_s`, or None outside the table."""
        i = int(np.searchsorted(self.t_s, t_s, side="right")) - 1
        if i < 0 or t_s >= self.t_s[i] + self.step_s:
            return None
        return i

    def usd(self, fx_usd_per_unit: dict[str, float] | None = None) -> np.ndarray:
        """All prices in USD/MWh (a new array); a currency without a rate gives NaN."""
        from scheduler.core.market import DEFAULT_FX_USD_PER_UNIT

        fx = dict(DEFAULT_FX_USD_PER_UNIT if fx_usd_per_unit is None else fx_usd_per_unit)
        rates = np.array([fx.get(c, math.nan) for c in self.currencies], dtype=np.float64)
        converted: np.ndarray = self.prices * rates
        return converted


def _zone_and_currency(path: Path, column: str) -> tuple[str, str]:
    # `<ZONE>__<CUR>_per_MWh`, e.g. `DE-LU__EUR_per_MWh`.
    if "__" not in column or not column.endswith("_per_MWh"):
        raise HistoryFileError(f"{path}: line 1: column {column!r} is not <ZONE>__<CUR>_per_MWh")
    zone, rest = column.split("__", 1)
    return zone, rest[: -len("_per_MWh")]


def load_price_table(path: Path | str) -> PriceTable:
    """Read an hourly price file (see the module docstring)."""
    path = Path(path)
    times: list[float] = []
    rows: list[list[float]] = []
    with _open_csv(path) as reader:
        header = next(reader, None)
        if not header or header[0].strip() != "timestamp_utc":
            raise HistoryFileError(f"{path}: line 1: expected a first column 'timestamp_utc'")
        zones_currencies = [_zone_and_currency(path, c.strip()) for c in header[1:]]
        width = len(header)
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != width:
                raise HistoryFileError(
                    f"{path}: line {line_no}: {len(row)} cells, expected {width}"
                )
            try:
                times.append(parse_utc_s(row[0]))
                rows.append([_float(cell) for cell in row[1:]])
            except ValueError as exc:
                raise HistoryFileError(f"{path}: line {line_no}: {exc}") from None
    t_s = np.array(times, dtype=np.float64)
    if t_s.size > 1 and not bool(np.all(np.diff(t_s) > 0)):
        raise HistoryFileError(f"{path}: timestamps are not strictly increasing")
    prices = np.array(rows, dtype=np.float64).reshape(len(rows), len(zones_currencies))
    for zone, currency in zones_currencies:
        known = PRICE_ZONE_CURRENCY.get(zone)
        if known is not None and known != currency:
            raise HistoryFileError(f"{path}: zone {zone} quoted in {currency}, expected {known}")
    return PriceTable(
        t_s=t_s,
        zones=tuple(z for z, _ in zones_currencies),
        currencies=tuple(c for _, c in zones_currencies),
        prices=prices,
        last_valid=_last_valid_index(prices),
        path=str(path),
    )


@dataclass(frozen=True, eq=False)
class BtcDaily:
    """Daily Bitcoin facts by UTC day (`day_start_s`), NaN where unknown."""

    day_start_s: np.ndarray  # float64, increasing, one row per day
    close_usd: np.ndarray
    difficulty: np.ndarray  # in force at 00:00 UTC of the day
    fees_btc_per_day: np.ndarray
    path: str = ""
    # The last row <= i with a value (-1 if none): "the newest fact known on day i".
    last_close: np.ndarray = field(default_factory=_no_rows)
    last_difficulty: np.ndarray = field(default_factory=_no_rows)
    last_fees: np.ndarray = field(default_factory=_no_rows)

    @classmethod
    def build(
        cls,
        day_start_s: np.ndarray,
        close_usd: np.ndarray,
        difficulty: np.ndarray,
        fees_btc_per_day: np.ndarray,
        path: str = "",
    ) -> BtcDaily:
        return cls(
            day_start_s, close_usd, difficulty, fees_btc_per_day, path,
            _last_valid_index(close_usd), _last_valid_index(difficulty),
            _last_valid_index(fees_btc_per_day),
        )

    @property
    def days(self) -> int:
        return int(self.day_start_s.shape[0])

    def row_at(self, t_s: float) -> int | None:
        """The row of the UTC day containing `t_s`, or None outside the table."""
        i = int(np.searchsorted(self.day_start_s, t_s, side="right")) - 1
        if i < 0 or t_s >= self.day_start_s[i] + DAY_S:
            return None
        return i



def _read_dated(path: Path) -> tuple[list[str], list[list[str]]]:
    with _open_csv(path) as reader:
        header = [h.strip() for h in next(reader, [])]
        if "date_utc" not in header:
            raise HistoryFileError(f"{path}: line 1: no 'date_utc' column")
        return header, [row for row in reader if row]


def _day_start_s(path: Path, line_no: int, text: str) -> float:
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise HistoryFileError(f"{path}: line {line_no}: bad date {text!r}") from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def load_btc_daily(path: Path | str, fees_path: Path | str | None = None) -> BtcDaily:
    """Read daily Bitcoin facts; fees from `fees_path` (by date) when given, else the file's own
    `fees_btc_per_day` column if it has one."""
    path = Path(path)
    header, rows = _read_dated(path)
    col = {name: i for i, name in enumerate(header)}
    if "btc_usd_close" not in col and "difficulty" not in col:
        raise HistoryFileError(f"{path}: line 1: needs 'btc_usd_close' and/or 'difficulty'")

    def cell(row: list[str], name: str, line_no: int) -> float:
        i = col.get(name)
        if i is None or i >= len(row):
            return math.nan
        try:
            return _float(row[i].strip())
        except ValueError:
            raise HistoryFileError(f"{path}: line {line_no}: column {name!r}: {row[i]!r}") from None

    days, close, difficulty, fees = [], [], [], []
    for line_no, row in enumerate(rows, start=2):
        days.append(_day_start_s(path, line_no, row[col["date_utc"]]))
        close.append(cell(row, "btc_usd_close", line_no))
        difficulty.append(cell(row, "difficulty", line_no))
        fees.append(cell(row, "fees_btc_per_day", line_no))
    day_start = np.array(days, dtype=np.float64)
    if day_start.size > 1 and not bool(np.all(np.diff(day_start) == DAY_S)):
        raise HistoryFileError(f"{path}: dates must be consecutive days")

    fees_array = np.array(fees, dtype=np.float64)
    if fees_path is not None:
        fees_array = np.full(day_start.shape, math.nan)
        fpath = Path(fees_path)
        fheader, frows = _read_dated(fpath)
        if "fees_btc_per_day" not in fheader:
            raise HistoryFileError(f"{fpath}: line 1: no 'fees_btc_per_day' column")
        di, fi = fheader.index("date_utc"), fheader.index("fees_btc_per_day")
        first = day_start[0] if day_start.size else 0.0
        for line_no, row in enumerate(frows, start=2):
            i = round((_day_start_s(fpath, line_no, row[di]) - first) / DAY_S)
            if 0 <= i < day_start.size and fi < len(row):
                try:
                    fees_array[i] = _float(row[fi].strip())
                except ValueError:
                    raise HistoryFileError(
                        f"{fpath}: line {line_no}: column 'fees_btc_per_day': {row[fi]!r}"
                    ) from None
    return BtcDaily.build(
        day_start,
        np.array(close, dtype=np.float64),
        np.array(difficulty, dtype=np.float64),
        fees_array,
        str(path),
    )
