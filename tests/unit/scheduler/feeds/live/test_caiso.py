"""California's prices through gridstatus's CAISO client, against a local server.

OASIS answers `GET /oasisapi/SingleZip?queryname=...&resultformat=6` with a zip of one CSV
(`Content-Disposition: inline; filename=<name>.csv.zip`), in the shape of its interface
specification: `INTERVALSTARTTIME_GMT`, `INTERVALENDTIME_GMT`, `OPR_DT`, `OPR_HR`, `NODE`,
`MARKET_RUN_ID`, `LMP_TYPE` (LMP, MCE, MCC, MCL, MGHG) and the price (`VALUE` for the
real-time `PRC_INTVL_LMP`, `MW` for the day-ahead `PRC_LMP`). gridstatus has the OASIS address
built in, so its requests are sent to the local server instead.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from scheduler.feeds.live import SourceError
from scheduler.feeds.live.caiso_prices import PACIFIC, CaisoNodalPrices
from tests.unit.scheduler.feeds.live.stub_server import Reply, Request, StubServer, serve

UTC = dt.UTC
COMPONENTS = {"LMP": 1.0, "MCE": 0.9, "MCC": 0.05, "MCL": 0.05, "MGHG": 0.0}


def oasis_zip(name: str, price_column: str, rows: list[tuple[dt.datetime, int, str, float]]
              ) -> bytes:
    header = ("INTERVALSTARTTIME_GMT,INTERVALENDTIME_GMT,OPR_DT,OPR_HR,OPR_INTERVAL,NODE_ID_XML,"
              f"NODE_ID,NODE,MARKET_RUN_ID,LMP_TYPE,XML_DATA_ITEM,PNODE_RESMRID,GRP_TYPE,POS,"
              f"{price_column},GROUP")
    lines = [header]
    for start, minutes, node, lmp in rows:
        end = start + dt.timedelta(minutes=minutes)
        local = start.astimezone(PACIFIC)
        for kind, share in COMPONENTS.items():
            lines.append(",".join([
                start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S-00:00"),
                end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S-00:00"),
                local.strftime("%Y-%m-%d"), str(local.hour + 1), "1", node, node, node,
                "RTM" if minutes == 5 else "DAM", kind, f"LMP_{kind}_PRC", node, "ALL", "1",
                f"{lmp * share:.5f}", "1",
            ]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, "\n".join(lines) + "\n")
    return buffer.getvalue()


def oasis(now: dt.datetime, nodes: dict[str, float]) -> Callable[[Request], Reply]:
    def answer(request: Request) -> Reply:
        query = request.query["queryname"][0]
        wanted = request.query["node"][0].split(",")
        if query == "PRC_INTVL_LMP":
            start = now.replace(minute=0, second=0, microsecond=0)
            rows = [(start + dt.timedelta(minutes=5 * k), 5, n, nodes[n] + k)
                    for k in range(now.minute // 5 + 1) for n in wanted if n in nodes]
            name, column = "PRC_INTVL_LMP_RTM_v3.csv", "VALUE"
        else:
            day = now.astimezone(PACIFIC).replace(hour=0, minute=0, second=0, microsecond=0)
            rows = [(day + dt.timedelta(hours=h), 60, n, nodes[n] * 2 + h)
                    for h in range(48) for n in wanted if n in nodes]
            name, column = "PRC_LMP_DAM_v12.csv", "MW"
        body = oasis_zip(name, column, rows)
        return Reply(200, body, "application/x-zip-compressed",
                     (("Content-Disposition", f"inline; filename={name}.zip;"),))

    return answer


def redirect(real_get: Callable[..., requests.Response], base: str
             ) -> Callable[..., requests.Response]:
    def to_stub(url: str, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.pop("verify", None)
        return real_get(url.replace("https://oasis.caiso.com", base), *args, **kwargs)

    return to_stub


@pytest.fixture()
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubServer]:
    import gridstatus.caiso.caiso as api

    for server in serve():
        monkeypatch.setattr(api.requests, "get", redirect(requests.get, server.url))
        monkeypatch.setattr(api.time, "sleep", lambda s: None)  # OASIS's retry pauses
        yield server


def test_a_site_prices_on_its_node(stub: StubServer) -> None:
    now = dt.datetime(2026, 12, 1, 10, 17, tzinfo=PACIFIC)
    stub.routes["/oasisapi/SingleZip"] = oasis(now, {"TH_NP15_GEN-APND": 40.0,
                                                      "TH_SP15_GEN-APND": 50.0})
    source = CaisoNodalPrices(["US-CAL-CISO", "US-CAL-CISO@TH_SP15_GEN-APND", "DE-LU"])
    assert source.nodes == {"US-CAL-CISO": "TH_NP15_GEN-APND",
                            "US-CAL-CISO@TH_SP15_GEN-APND": "TH_SP15_GEN-APND"}
    fetched = source.fetch(now.timestamp())
    np15 = fetched.prices_by_zone["US-CAL-CISO"]
    assert (np15.value, np15.currency) == (pytest.approx(43.0), "USD")  # 10:15 is interval 3
    assert np15.as_of_s == dt.datetime(2026, 12, 1, 10, 15, tzinfo=PACIFIC).timestamp()
    assert fetched.prices_by_zone["US-CAL-CISO@TH_SP15_GEN-APND"].value == pytest.approx(53.0)
    published = fetched.ahead_by_zone["US-CAL-CISO"].by_hour_start_s
    eleven_s = dt.datetime(2026, 12, 1, 11, tzinfo=PACIFIC).timestamp()
    assert min(published) == eleven_s and published[eleven_s] == pytest.approx(91.0)
    assert len(published) == 48 - 11


def test_an_unavailable_oasis_fails_the_poll(stub: StubServer) -> None:
    stub.routes["/oasisapi/SingleZip"] = Reply(503, "busy", "text/plain")
    with pytest.raises(SourceError, match="caiso: REAL_TIME_5_MIN"):
        CaisoNodalPrices(["US-CAL-CISO"]).fetch(
            dt.datetime(2026, 12, 1, 10, 17, tzinfo=PACIFIC).timestamp())
