"""Day-ahead markets published as files and open data: Japan's JEPX and Brazil's PLD.

No well-kept library reads either, so each is read from the format its publisher documents:
- **JEPX** (Japan Electric Power Exchange) publishes its spot (day-ahead) results as a yearly CSV
  (`spot_summary_<year>.csv`, Shift-JIS, one row per delivery date and half-hour slot 1-48):
  date, slot, sell bids, buy bids, contracted volume, the system price, then the area prices of
  Hokkaido, Tohoku, Tokyo, Chubu, Hokuriku, Kansai, Chugoku, Shikoku and Kyushu, in JPY/kWh.
  Tomorrow's results appear at about 10:00 JST.
- **PLD** (Brazil's Preço de Liquidação das Diferenças) is published hourly, a day ahead, by CCEE
  on its open-data portal (CKAN): `datastore_search` on the hourly PLD resource answers
  `{"success": true, "result": {"records": [{"MES_REFERENCIA": 202412, "SUBMERCADO": "SUDESTE",
  "DIA": 1, "HORA": 0, "PLD_HORA": 61.07}, ...]}}` in BRL/MWh.

For both, the hour containing now is the zone's price and the later hours are its outlook.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.core.fleet import market_zone
from scheduler.core.market import Quote
from scheduler.feeds.live.poller import Fetched, PublishedPrices, SourceError, get_bytes

HOUR_S = 3600.0
JST = dt.timezone(dt.timedelta(hours=9))
BRT = dt.timezone(dt.timedelta(hours=-3))  # Brasília time (no daylight saving since 2019)
DEFAULT_JEPX_URL = "https://www.jepx.jp/js/csv_read.php?dir=spot_summary&file=spot_summary_{year}.csv"
# The column of each area's price in the spot summary (0-based), by price zone.
JEPX_AREA_COLUMN = {
    "JP-HKD": 6, "JP-TH": 7, "JP-TK": 8, "JP-CB": 9, "JP-HR": 10,
    "JP-KN": 11, "JP-CG": 12, "JP-SK": 13, "JP-KY": 14,
}
KWH_PER_MWH = 1000.0
# Brazil's submarkets by price zone (the shipped data's BR zone is the Southeast).
PLD_SUBMARKET = {"BR": "SUDESTE", "BR-SE": "SUDESTE", "BR-S": "SUL", "BR-NE": "NORDESTE",
                 "BR-N": "NORTE"}


def _fetched(hourly_by_zone: Mapping[str, dict[float, list[float]]], now_s: float,
             currency: str, source: str, scale: float, what: str) -> Fetched:
    """Each zone's hour containing now as its price, its later hours as its outlook (the hours'
    means of the published prices, times `scale`)."""
    hour_s = math.floor(now_s / HOUR_S) * HOUR_S
    prices: dict[str, Quote] = {}
    ahead: dict[str, PublishedPrices] = {}
    problems: list[str] = []
    for zone, hourly in hourly_by_zone.items():
        means = {t: sum(v) / len(v) * scale for t, v in hourly.items() if v}
        if hour_s in means:
            prices[zone] = Quote(means[hour_s], hour_s, source, currency)
        else:
            problems.append(f"{source}: no {what} for {zone} this hour")
        later = {t: p for t, p in sorted(means.items()) if t > hour_s}
        if later:
            ahead[zone] = PublishedPrices(currency, later)
    return Fetched(prices_by_zone=prices, ahead_by_zone=ahead, problems=tuple(problems))


class JepxSpot:
    def __init__(self, zones: Iterable[str], url: str = DEFAULT_JEPX_URL,
                 timeout_s: float = 30.0, name: str = "jepx") -> None:
        self.columns = {z: c for z in zones if (c := JEPX_AREA_COLUMN.get(market_zone(z)))}
        if not self.columns:
            raise ValueError(f"{name}: the fleet has no site in a JEPX area")
        self.url = url
        self.timeout_s = timeout_s
        self.name = name

    def fetch(self, now_s: float) -> Fetched:
        today = dt.datetime.fromtimestamp(now_s, tz=JST).date()
        years = sorted({today.year, (today + dt.timedelta(days=1)).year})
        rows: list[list[str]] = []
        for year in years:
            raw = get_bytes(self.url.format(year=year), self.timeout_s, self.name)
            text = raw.decode("shift_jis", errors="replace")
            rows.extend(csv.reader(io.StringIO(text)))
        hourly: dict[str, dict[float, list[float]]] = {z: {} for z in self.columns}
        for row in rows:
            if len(row) < 15 or not row[1].strip().isdigit():
                continue  # the header, or a blank line
            try:
                day = dt.datetime.strptime(row[0].strip(), "%Y/%m/%d").replace(tzinfo=JST)
                start_s = (day + dt.timedelta(minutes=30 * (int(row[1]) - 1))).timestamp()
            except ValueError:
                raise SourceError(f"{self.name}: malformed row {row[:2]}") from None
            hour_s = math.floor(start_s / HOUR_S) * HOUR_S
            for zone, column in self.columns.items():
                try:
                    hourly[zone].setdefault(hour_s, []).append(float(row[column]))
                except ValueError:
                    raise SourceError(f"{self.name}: malformed price in {row[:2]}") from None
        # JPY/kWh to JPY/MWh.
        return _fetched(hourly, now_s, "JPY", self.name, KWH_PER_MWH, "spot price")


class CceePld:
    def __init__(self, zones: Iterable[str], url: str, resource_id: str,
                 timeout_s: float = 30.0, name: str = "ccee-pld") -> None:
        self.submarkets = {z: s for z in zones if (s := PLD_SUBMARKET.get(market_zone(z)))}
        if not self.submarkets:
            raise ValueError(f"{name}: the fleet has no site in a Brazilian submarket")
        self.url = url
        self.resource_id = resource_id
        self.timeout_s = timeout_s
        self.name = name

    def fetch(self, now_s: float) -> Fetched:
        today = dt.datetime.fromtimestamp(now_s, tz=BRT).date()
        months = sorted({today.strftime("%Y%m"), (today + dt.timedelta(days=1)).strftime("%Y%m")})
        records: list[dict[str, Any]] = []
        for submarket in sorted(set(self.submarkets.values())):
            for month in months:
                raw = get_bytes(self.url, self.timeout_s, self.name, {
                    "resource_id": self.resource_id, "limit": "1000",
                    "filters": json.dumps({"SUBMERCADO": submarket,
                                           "MES_REFERENCIA": int(month)}),
                    "sort": "DIA desc, HORA desc",
                })
                try:
                    doc = json.loads(raw)
                except ValueError:
                    raise SourceError(f"{self.name}: the reply is not JSON") from None
                if not isinstance(doc, dict) or doc.get("success") is not True:
                    error = doc.get("error") if isinstance(doc, dict) else None
                    raise SourceError(f"{self.name}: datastore_search failed: {error}")
                found = doc.get("result", {}).get("records")
                if not isinstance(found, list):
                    raise SourceError(f"{self.name}: no records in the reply")
                records.extend(r for r in found if isinstance(r, dict))
        hourly: dict[str, dict[float, list[float]]] = {s: {} for s in self.submarkets.values()}
        for record in records:
            try:
                month = str(int(record["MES_REFERENCIA"]))
                start = dt.datetime(int(month[:4]), int(month[4:]), int(record["DIA"]),
                                    int(record["HORA"]), tzinfo=BRT)
                submarket = str(record["SUBMERCADO"]).strip().upper()
                value = float(record["PLD_HORA"])
            except (KeyError, TypeError, ValueError):
                raise SourceError(f"{self.name}: malformed record") from None
            if submarket in hourly:
                hourly[submarket].setdefault(start.timestamp(), []).append(value)
        by_zone = {zone: hourly[submarket] for zone, submarket in self.submarkets.items()}
        return _fetched(by_zone, now_s, "BRL", self.name, 1.0, "PLD")
