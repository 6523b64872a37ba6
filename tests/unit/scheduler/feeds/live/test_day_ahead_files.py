"""JEPX's spot summary and CCEE's hourly PLD, against a local server.

Replies in the shape each publisher documents: JEPX's yearly `spot_summary_<year>.csv`
(Shift-JIS, a Japanese header row, then per date and half-hour slot: bids, volume, the system
price and the nine area prices in JPY/kWh); CCEE's open-data portal, a CKAN `datastore_search`
answer with `MES_REFERENCIA`, `SUBMERCADO`, `DIA`, `HORA` and `PLD_HORA` (BRL/MWh).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator

import pytest

from scheduler.feeds.live import SourceError
from scheduler.feeds.live.day_ahead_files import BRT, JST, CceePld, JepxSpot
from tests.unit.scheduler.feeds.live.stub_server import Reply, Request, StubServer, serve

HEADER = ("受渡日,時刻コード,売り入札量(kWh),買い入札量(kWh),約定総量(kWh),"
          "システムプライス(円/kWh),"
          "エリアプライス北海道(円/kWh),エリアプライス東北(円/kWh),エリアプライス東京(円/kWh),"
          "エリアプライス中部(円/kWh),エリアプライス北陸(円/kWh),エリアプライス関西(円/kWh),"
          "エリアプライス中国(円/kWh),エリアプライス四国(円/kWh),エリアプライス九州(円/kWh)")


def spot_summary(days: list[dt.date]) -> bytes:
    lines = [HEADER]
    for day in days:
        for slot in range(1, 49):
            tokyo = 10 + slot / 10  # JPY/kWh
            areas = [9.0, 9.5, tokyo, 9.8, 9.1, 9.2, 9.3, 9.4, 9.6]
            lines.append(",".join([day.strftime("%Y/%m/%d"), str(slot), "1000", "1000", "900",
                                   "9.9", *(f"{a:.2f}" for a in areas)]))
    return ("\r\n".join(lines) + "\r\n").encode("shift_jis")


@pytest.fixture()
def stub() -> Iterator[StubServer]:
    yield from serve()


NOW_JST = dt.datetime(2026, 12, 1, 10, 40, tzinfo=JST)


def test_jepx_tokyo_now_and_tomorrow(stub: StubServer) -> None:
    days = [dt.date(2026, 11, 30), dt.date(2026, 12, 1), dt.date(2026, 12, 2)]
    stub.routes["/spot_summary_2026.csv"] = Reply(200, spot_summary(days), "text/csv")
    source = JepxSpot(["JP-TK", "DE-LU"], stub.url + "/spot_summary_{year}.csv")
    assert source.columns == {"JP-TK": 8}
    fetched = source.fetch(NOW_JST.timestamp())
    hour_s = dt.datetime(2026, 12, 1, 10, tzinfo=JST).timestamp()
    quote = fetched.prices_by_zone["JP-TK"]
    # 10:00-10:30 is slot 21, 10:30-11:00 slot 22: (12.1 + 12.2) / 2 JPY/kWh = 12,150 JPY/MWh.
    assert (quote.value, quote.as_of_s, quote.currency) == (pytest.approx(12_150.0), hour_s, "JPY")
    published = fetched.ahead_by_zone["JP-TK"]
    assert min(published.by_hour_start_s) == hour_s + 3600
    assert len(published.by_hour_start_s) == 13 + 24  # the rest of today, and tomorrow


def test_jepx_before_the_day_is_published(stub: StubServer) -> None:
    stub.routes["/spot_summary_2026.csv"] = Reply(
        200, spot_summary([dt.date(2026, 11, 30)]), "text/csv")
    fetched = JepxSpot(["JP-TK"], stub.url + "/spot_summary_{year}.csv").fetch(
        NOW_JST.timestamp())
    assert fetched.prices_by_zone == {}
    assert fetched.problems == ("jepx: no spot price for JP-TK this hour",)


def test_jepx_on_new_years_eve_reads_both_years(stub: StubServer) -> None:
    stub.routes["/spot_summary_2026.csv"] = Reply(
        200, spot_summary([dt.date(2026, 12, 31)]), "text/csv")
    stub.routes["/spot_summary_2027.csv"] = Reply(
        200, spot_summary([dt.date(2027, 1, 1)]), "text/csv")
    now = dt.datetime(2026, 12, 31, 23, 10, tzinfo=JST).timestamp()
    fetched = JepxSpot(["JP-TK"], stub.url + "/spot_summary_{year}.csv").fetch(now)
    assert "JP-TK" in fetched.prices_by_zone
    assert len(fetched.ahead_by_zone["JP-TK"].by_hour_start_s) == 24


MALFORMED = (HEADER + "\n2026/12/01,21," + ",".join(["x"] * 13) + "\n").encode("shift_jis")


@pytest.mark.parametrize(
    ("reply", "message"),
    [(Reply(404, "not found", "text/plain"), "answered 404"),
     (Reply(200, MALFORMED, "text/csv"), "malformed price")],
    ids=["missing", "malformed"],
)
def test_jepx_bad_files(stub: StubServer, reply: Reply, message: str) -> None:
    stub.routes["/spot_summary_2026.csv"] = reply
    with pytest.raises(SourceError, match=message):
        JepxSpot(["JP-TK"], stub.url + "/spot_summary_{year}.csv").fetch(NOW_JST.timestamp())


def ckan(records: list[dict[str, object]]) -> Callable[[Request], Reply]:
    def answer(request: Request) -> Reply:
        filters = json.loads(request.query["filters"][0])
        rows = [r for r in records if r["SUBMERCADO"] == filters["SUBMERCADO"]
                and r["MES_REFERENCIA"] == filters["MES_REFERENCIA"]]
        return Reply(200, json.dumps({"help": "datastore_search", "success": True,
                                      "result": {"records": rows, "total": len(rows)}}))
    return answer


def pld_day(day: dt.date, submarket: str, base: float) -> list[dict[str, object]]:
    return [{"_id": h, "MES_REFERENCIA": int(day.strftime("%Y%m")), "SUBMERCADO": submarket,
             "DIA": day.day, "HORA": h, "PLD_HORA": base + h} for h in range(24)]


def test_pld_southeast_now_and_ahead(stub: StubServer) -> None:
    records = (pld_day(dt.date(2026, 12, 1), "SUDESTE", 60.0)
               + pld_day(dt.date(2026, 12, 2), "SUDESTE", 70.0)
               + pld_day(dt.date(2026, 12, 1), "SUL", 0.0))
    stub.routes["/api/3/action/datastore_search"] = ckan(records)
    source = CceePld(["BR"], stub.url + "/api/3/action/datastore_search", "pld-horario-2026")
    now = dt.datetime(2026, 12, 1, 14, 20, tzinfo=BRT).timestamp()
    fetched = source.fetch(now)
    quote = fetched.prices_by_zone["BR"]
    assert (quote.value, quote.currency) == (74.0, "BRL")
    assert quote.as_of_s == dt.datetime(2026, 12, 1, 14, tzinfo=BRT).timestamp()
    assert len(fetched.ahead_by_zone["BR"].by_hour_start_s) == 9 + 24
    assert stub.requests[0].query["resource_id"] == ["pld-horario-2026"]


@pytest.mark.parametrize(
    ("reply", "message"),
    [(Reply(200, json.dumps({"success": False, "error": {"message": "Not found"}})),
      "datastore_search failed"),
     (Reply(200, "<html>", "text/html"), "not JSON"),
     (Reply(200, json.dumps({"success": True, "result": {"records": [{"DIA": 1}]}})),
      "malformed record")],
    ids=["ckan-error", "not-json", "malformed"],
)
def test_pld_bad_replies(stub: StubServer, reply: Reply, message: str) -> None:
    stub.routes["/ds"] = reply
    with pytest.raises(SourceError, match=message):
        CceePld(["BR"], stub.url + "/ds", "r").fetch(NOW_JST.timestamp())
