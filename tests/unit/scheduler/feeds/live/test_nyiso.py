"""New York's zonal prices through gridstatus's NYISO client, against a local server.

The files are built in the shape NYISO posts them (oasis-postings.prod.nysdi.com, the CSVs that
mis.nyiso.com served before): `RT_LBMP_ZONE/CSV/current.csv`, the latest 5-minute interval, and
`DAM_LBMP_ZONE/CSV/<yyyy/mm/dd>/damlbmp_zone-<yyyymmdd>.csv`, a day's hours. Columns:
"Time Stamp" (ET; the end of a real-time interval, the start of a day-ahead hour), "Name",
"PTID", "LBMP ($/MWHr)", "Marginal Cost Losses ($/MWHr)", "Marginal Cost Congestion ($/MWHr)".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from scheduler.feeds.live import SourceError
from scheduler.feeds.live.nyiso_prices import EASTERN, NyisoZonalPrices
from tests.unit.scheduler.feeds.live.stub_server import Reply, StubServer, serve

HEADER = ('"Time Stamp","Name","PTID","LBMP ($/MWHr)","Marginal Cost Losses ($/MWHr)",'
          '"Marginal Cost Congestion ($/MWHr)"')
ZONES = {"NORTH": 61754, "N.Y.C.": 61761, "WEST": 61752}


def current_csv(end: dt.datetime, prices: dict[str, float]) -> str:
    rows = [f'"{end:%m/%d/%Y %H:%M:%S}","{z}",{ZONES[z]},{p},1.10,-0.50'
            for z, p in prices.items()]
    return "\n".join([HEADER, *rows]) + "\n"


def dam_csv(day: dt.date, base: dict[str, float]) -> str:
    rows = [f'"{day:%m/%d/%Y} {h:02d}:00","{z}",{ZONES[z]},{b + h},1.00,-0.40'
            for h in range(24) for z, b in base.items()]
    return "\n".join([HEADER, *rows]) + "\n"


@pytest.fixture()
def stub() -> Iterator[StubServer]:
    yield from serve()


def dam_path(day: dt.date) -> str:
    return f"/DAM_LBMP_ZONE/CSV/{day:%Y/%m/%d}/damlbmp_zone-{day:%Y%m%d}.csv"


def test_the_latest_interval_and_the_day_ahead_hours(stub: StubServer) -> None:
    # Now is the real time: gridstatus decides which files are today's from the clock.
    now = dt.datetime.now(tz=EASTERN).replace(second=0, microsecond=0)
    end = now.replace(minute=now.minute - now.minute % 5)
    today = now.date()
    stub.routes["/RT_LBMP_ZONE/CSV/current.csv"] = Reply(
        200, current_csv(end, {"NORTH": 18.5, "N.Y.C.": 95.0, "WEST": 30.0}), "text/csv")
    stub.routes[dam_path(today)] = Reply(200, dam_csv(today, {"NORTH": 10.0, "N.Y.C.": 50.0}),
                                         "text/csv")
    source = NyisoZonalPrices(["US-NY-NYIS", "US-NY-NYIS@N.Y.C.", "DE-LU"], "NORTH", stub.url)
    assert source.locations == {"US-NY-NYIS": "NORTH", "US-NY-NYIS@N.Y.C.": "N.Y.C."}
    fetched = source.fetch(now.timestamp())
    north = fetched.prices_by_zone["US-NY-NYIS"]
    assert (north.value, north.currency) == (18.5, "USD")
    assert north.as_of_s == (end - dt.timedelta(minutes=5)).timestamp()  # the interval's start
    assert fetched.prices_by_zone["US-NY-NYIS@N.Y.C."].value == 95.0
    ahead = fetched.ahead_by_zone.get("US-NY-NYIS@N.Y.C.")
    published = ahead.by_hour_start_s if ahead is not None else {}
    hours_left = 23 - now.hour
    assert len(published) == hours_left  # tomorrow's is not posted yet (404)
    if hours_left:
        next_hour = now.replace(minute=0) + dt.timedelta(hours=1)
        assert published[next_hour.timestamp()] == 50.0 + next_hour.hour


def test_an_unposted_latest_file_fails_the_poll(stub: StubServer) -> None:
    with pytest.raises(SourceError, match="nyiso: REAL_TIME_5_MIN"):
        NyisoZonalPrices(["US-NY-NYIS"], "NORTH", stub.url).fetch(dt.datetime.now().timestamp())
