"""Australia's NEM: regional prices from AEMO's published files on NEMWEB.

No library reads the current files without downloading history, so this reads AEMO's own format:
- `Reports/Current/DispatchIS_Reports/` lists one zip every 5 minutes
  (`PUBLIC_DISPATCHIS_<YYYYMMDDHHMM>_<id>.zip`); the newest holds the `DISPATCH,PRICE` table,
  whose `RRP` per `REGIONID` (NSW1, QLD1, ...) is the price now, in AUD/MWh;
- `Reports/Current/PredispatchIS_Reports/` lists the 30-minute pre-dispatch runs; the newest
  holds the `PREDISPATCH,REGION_PRICES` table: the expected `RRP` of each half hour ahead, the
  published outlook (averaged into hours).

The files are AEMO's MMS CSV: `C` rows are comments, an `I` row names the columns of the table
after it, `D` rows are its data. Times are NEM time (UTC+10, no daylight saving), and
`SETTLEMENTDATE` / `DATETIME` end their interval.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
import zipfile
from collections.abc import Iterable, Iterator

from scheduler.core.fleet import market_zone
from scheduler.core.market import Quote
from scheduler.feeds.live.poller import Fetched, PublishedPrices, SourceError, get_bytes

DEFAULT_BASE_URL = "https://nemweb.com.au"
DISPATCH_DIR = "/Reports/Current/DispatchIS_Reports/"
PREDISPATCH_DIR = "/Reports/Current/PredispatchIS_Reports/"
NEM_TIME = dt.timezone(dt.timedelta(hours=10))
DISPATCH_INTERVAL_S = 300.0
PREDISPATCH_INTERVAL_S = 1800.0
HOUR_S = 3600.0
# A dispatch price older than this is not the price now (files stopped being published).
MAX_DISPATCH_AGE_S = 3 * DISPATCH_INTERVAL_S


def nem_region(zone: str) -> str | None:
    """AEMO's region for a price zone: `AU-NSW` is `NSW1`; None outside the NEM."""
    market = market_zone(zone)
    if not market.startswith("AU-"):
        return None
    state = market[3:]
    return f"{state}1" if state in ("NSW", "QLD", "VIC", "SA", "TAS") else None


def nem_time_s(text: str) -> float:
    """`2026/12/01 10:05:00` in NEM time, as Unix seconds."""
    stamp = dt.datetime.strptime(text.strip().strip('"'), "%Y/%m/%d %H:%M:%S")
    return stamp.replace(tzinfo=NEM_TIME).timestamp()


def mms_tables(text: str, wanted: tuple[str, str]) -> Iterator[dict[str, str]]:
    """The rows of one table of an MMS CSV file, as dicts by column name."""
    columns: list[str] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        kind = row[0]
        if kind == "I":
            columns = row[4:] if (row[1], row[2]) == wanted else None
        elif kind == "D" and columns is not None and (row[1], row[2]) == wanted:
            yield dict(zip(columns, row[4:], strict=False))


class NemPrices:
    def __init__(
        self, zones: Iterable[str], base_url: str = DEFAULT_BASE_URL, timeout_s: float = 20.0,
        name: str = "aemo",
    ) -> None:
        self.regions = {z: r for z in zones if (r := nem_region(z)) is not None}
        if not self.regions:
            raise ValueError(f"{name}: the fleet has no site in the NEM")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.name = name

    def _get(self, path: str) -> bytes:
        return get_bytes(self.base_url + path, self.timeout_s, self.name)

    def _newest(self, directory: str, prefix: str) -> str:
        """The newest zip of a NEMWEB directory listing (names sort by their timestamp)."""
        listing = self._get(directory).decode("utf-8", "replace")
        names = re.findall(rf"({prefix}_\d{{12,14}}_\d+\.zip)", listing, flags=re.IGNORECASE)
        if not names:
            raise SourceError(f"{self.name}: no {prefix} files in {directory}")
        return max(names)

    def _table(self, directory: str, prefix: str, table: tuple[str, str]) -> list[dict[str, str]]:
        name = self._newest(directory, prefix)
        try:
            with zipfile.ZipFile(io.BytesIO(self._get(directory + name))) as archive:
                text = "".join(
                    archive.read(member).decode("utf-8", "replace")
                    for member in archive.namelist() if member.lower().endswith(".csv")
                )
        except zipfile.BadZipFile:
            raise SourceError(f"{self.name}: {name} is not a zip file") from None
        rows = list(mms_tables(text, table))
        if not rows:
            raise SourceError(f"{self.name}: {name} has no {','.join(table)} rows")
        return rows

    def fetch(self, now_s: float) -> Fetched:
        prices: dict[str, Quote] = {}
        problems: list[str] = []
        latest: dict[str, tuple[float, float]] = {}
        for row in self._table(DISPATCH_DIR, "PUBLIC_DISPATCHIS", ("DISPATCH", "PRICE")):
            try:
                if row.get("INTERVENTION", "0").strip() != "0":
                    continue  # the intervention pricing run: the market price is the other one
                start_s = nem_time_s(row["SETTLEMENTDATE"]) - DISPATCH_INTERVAL_S
                value = float(row["RRP"])
                region = row["REGIONID"].strip()
            except (KeyError, ValueError):
                raise SourceError(f"{self.name}: malformed DISPATCH,PRICE row") from None
            if region not in latest or start_s > latest[region][0]:
                latest[region] = (start_s, value)
        for zone, region in self.regions.items():
            found = latest.get(region)
            if found is None or now_s - found[0] > MAX_DISPATCH_AGE_S:
                problems.append(f"{self.name}: no recent dispatch price for {region}")
                continue
            prices[zone] = Quote(found[1], found[0], self.name, "AUD")
        ahead: dict[str, PublishedPrices] = {}
        try:
            rows = self._table(PREDISPATCH_DIR, "PUBLIC_PREDISPATCHIS",
                               ("PREDISPATCH", "REGION_PRICES"))
        except SourceError as exc:
            problems.append(str(exc))
            rows = []
        halves: dict[tuple[str, float], list[float]] = {}
        hour_s = math.floor(now_s / HOUR_S) * HOUR_S
        for row in rows:
            try:
                if row.get("INTERVENTION", "0").strip() != "0":
                    continue
                start_s = nem_time_s(row["DATETIME"]) - PREDISPATCH_INTERVAL_S
                key = (row["REGIONID"].strip(), math.floor(start_s / HOUR_S) * HOUR_S)
                halves.setdefault(key, []).append(float(row["RRP"]))
            except (KeyError, ValueError):
                problems.append(f"{self.name}: malformed PREDISPATCH,REGION_PRICES row")
                break
        for zone, region in self.regions.items():
            hours = {
                t: sum(v) / len(v) for (r, t), v in halves.items() if r == region and t > hour_s
            }
            if hours:
                ahead[zone] = PublishedPrices("AUD", dict(sorted(hours.items())))
        return Fetched(prices_by_zone=prices, ahead_by_zone=ahead, problems=tuple(problems))
