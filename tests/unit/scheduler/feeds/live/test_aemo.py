"""The NEM's prices from AEMO's NEMWEB files, against a local server.

The files are built in the shape AEMO publishes them (its MMS Data Model report format and the
NEMWEB "Current" directories): an HTML directory listing of zips named
`PUBLIC_DISPATCHIS_<YYYYMMDDHHMM>_<id>.zip` and `PUBLIC_PREDISPATCHIS_<YYYYMMDDHHMM>_<id>.zip`,
each holding one CSV of `C` (comment), `I` (columns) and `D` (data) rows; times in NEM time
(UTC+10) at the end of their interval.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from collections.abc import Iterator

import pytest

from scheduler.feeds.live import SourceError
from scheduler.feeds.live.aemo_prices import NEM_TIME, NemPrices, nem_region
from tests.unit.scheduler.feeds.live.stub_server import Reply, StubServer, serve

# 2026-12-01 10:07 NEM time: the 10:00-10:05 interval is the newest.
NOW_S = dt.datetime(2026, 12, 1, 10, 7, tzinfo=NEM_TIME).timestamp()


def nem(t: dt.datetime) -> str:
    return t.strftime("%Y/%m/%d %H:%M:%S")


def dispatch_csv(end: dt.datetime, prices: dict[str, float]) -> str:
    lines = [
        "C,NEMP.WORLD,DISPATCHIS,AEMO,PUBLIC,2026/12/01,10:05:10,0000000412345678,DISPATCHIS,0",
        "I,DISPATCH,CASE_SOLUTION,2,SETTLEMENTDATE,RUNNO,INTERVENTION,CASESUBTYPE,SOLUTIONSTATUS",
        f'D,DISPATCH,CASE_SOLUTION,2,"{nem(end)}",1,0,,0',
        "I,DISPATCH,PRICE,5,SETTLEMENTDATE,RUNNO,REGIONID,DISPATCHINTERVAL,INTERVENTION,RRP,EEP,"
        "ROP,APCFLAG,MARKETSUSPENDEDFLAG,LASTCHANGED",
    ]
    for region, rrp in prices.items():
        lines.append(f'D,DISPATCH,PRICE,5,"{nem(end)}",1,{region},20261201121,0,{rrp},0,{rrp},0,0,'
                     f'"{nem(end)}"')
    # The intervention run's price, which is not the market price.
    lines.append(f'D,DISPATCH,PRICE,5,"{nem(end)}",1,NSW1,20261201121,1,9999,0,9999,0,0,'
                 f'"{nem(end)}"')
    lines.append("C,END OF REPORT,12")
    return "\n".join(lines) + "\n"


def predispatch_csv(start: dt.datetime, region: str, base: float) -> str:
    lines = [
        "C,NEMP.WORLD,PREDISPATCHIS,AEMO,PUBLIC,2026/12/01,09:31:00,0000000412345000,PREDISPATCHIS,0",
        "I,PREDISPATCH,REGION_PRICES,1,PREDISPATCHSEQNO,RUNNO,REGIONID,PERIODID,INTERVENTION,RRP,"
        "EEP,DATETIME,LASTCHANGED",
    ]
    for k in range(1, 13):  # six hours of half hours
        end = start + dt.timedelta(minutes=30 * k)
        lines.append(f'D,PREDISPATCH,REGION_PRICES,1,2026120121,1,{region},{k},0,{base + k},0,'
                     f'"{nem(end)}","{nem(start)}"')
    lines.append("C,END OF REPORT,14")
    return "\n".join(lines) + "\n"


def zipped(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name.replace(".zip", ".CSV"), text)
    return buffer.getvalue()


def listing(names: list[str]) -> str:
    links = "".join(f'<a href="/Reports/Current/X/{n}">{n}</a><br>' for n in names)
    return f"<html><head><title>nemweb.com.au</title></head><body><pre>{links}</pre></body></html>"


@pytest.fixture()
def stub() -> Iterator[StubServer]:
    yield from serve()


def publish(stub: StubServer, dispatch: bytes | None, predispatch: bytes | None) -> None:
    old = "PUBLIC_DISPATCHIS_202612010955_0000000412345600.zip"
    new = "PUBLIC_DISPATCHIS_202612011005_0000000412345678.zip"
    pre = "PUBLIC_PREDISPATCHIS_202612010930_0000000412345000.zip"
    stub.routes["/Reports/Current/DispatchIS_Reports/"] = Reply(
        200, listing([new, old] if dispatch is not None else []), "text/html")
    if dispatch is not None:
        stub.routes[f"/Reports/Current/DispatchIS_Reports/{new}"] = Reply(
            200, dispatch, "application/zip")
    stub.routes["/Reports/Current/PredispatchIS_Reports/"] = Reply(
        200, listing([pre] if predispatch is not None else []), "text/html")
    if predispatch is not None:
        stub.routes[f"/Reports/Current/PredispatchIS_Reports/{pre}"] = Reply(
            200, predispatch, "application/zip")


DISPATCH_END = dt.datetime(2026, 12, 1, 10, 5, tzinfo=NEM_TIME)
PRE_START = dt.datetime(2026, 12, 1, 10, 0, tzinfo=NEM_TIME)


def source(stub: StubServer) -> NemPrices:
    return NemPrices(["AU-NSW", "AU-NSW@HUNTER", "DE-LU"], stub.url)


def test_the_price_now_and_the_pre_dispatch_outlook(stub: StubServer) -> None:
    publish(stub, zipped("PUBLIC_DISPATCHIS_202612011005_0000000412345678.zip",
                         dispatch_csv(DISPATCH_END, {"NSW1": 87.5, "QLD1": 60.0})),
            zipped("PUBLIC_PREDISPATCHIS_202612010930_0000000412345000.zip",
                   predispatch_csv(PRE_START, "NSW1", 100.0)))
    nem_prices = source(stub)
    assert nem_prices.regions == {"AU-NSW": "NSW1", "AU-NSW@HUNTER": "NSW1"}
    fetched = nem_prices.fetch(NOW_S)
    quote = fetched.prices_by_zone["AU-NSW"]
    interval_start_s = dt.datetime(2026, 12, 1, 10, 0, tzinfo=NEM_TIME).timestamp()
    assert (quote.value, quote.as_of_s, quote.currency) == (87.5, interval_start_s, "AUD")
    assert fetched.prices_by_zone["AU-NSW@HUNTER"].value == 87.5
    # Half hours 10:00-10:30 (101) and 10:30-11:00 (102) are this hour; 11:00 is the next:
    # (103 + 104) / 2.
    published = fetched.ahead_by_zone["AU-NSW"]
    eleven_s = dt.datetime(2026, 12, 1, 11, tzinfo=NEM_TIME).timestamp()
    assert published.currency == "AUD"
    assert min(published.by_hour_start_s) == eleven_s
    assert published.by_hour_start_s[eleven_s] == pytest.approx(103.5)
    assert len(published.by_hour_start_s) == 5
    assert fetched.problems == ()


def test_stale_files_give_no_price_now(stub: StubServer) -> None:
    publish(stub, zipped("x.zip", dispatch_csv(DISPATCH_END, {"NSW1": 87.5})), None)
    later = source(stub).fetch(NOW_S + 3600)  # an hour on, the newest file is still 10:05
    assert later.prices_by_zone == {}
    assert later.problems[0] == "aemo: no recent dispatch price for NSW1"
    assert any("no PUBLIC_PREDISPATCHIS files" in p for p in later.problems)


@pytest.mark.parametrize(
    ("dispatch", "message"),
    [(None, "no PUBLIC_DISPATCHIS files"),
     (b"not a zip", "is not a zip file"),
     (zipped("x.zip", "C,NEMP.WORLD,DISPATCHIS\nC,END OF REPORT,2\n"), "no DISPATCH,PRICE rows")],
    ids=["empty-listing", "not-a-zip", "no-price-table"],
)
def test_bad_files(stub: StubServer, dispatch: bytes | None, message: str) -> None:
    publish(stub, dispatch, None)
    with pytest.raises(SourceError, match=message):
        source(stub).fetch(NOW_S)


def test_an_unavailable_nemweb_is_a_failed_poll(stub: StubServer) -> None:
    stub.routes["/Reports/Current/DispatchIS_Reports/"] = Reply(503, "busy", "text/plain")
    with pytest.raises(SourceError, match="answered 503"):
        source(stub).fetch(NOW_S)


def test_nem_regions() -> None:
    assert nem_region("AU-NSW") == "NSW1" and nem_region("AU-QLD@X") == "QLD1"
    assert nem_region("DE-LU") is None and nem_region("AU-XX") is None
