"""ENTSO-E day-ahead prices through entsoe-py, against a local server.

The replies are built in the shape of the Transparency Platform's API guide, as entsoe-py's parser
reads them: a `Publication_MarketDocument` (document type A44) whose `TimeSeries` hold `Period`s
with a `resolution` (PT60M, or PT15M since the single day-ahead coupling moved to 15-minute
products on 2025-10-01) and `Point`s of `position` and `price.amount`; and, for a query with no
data, the `Acknowledgement_MarketDocument` the platform answers with HTTP 200 and the reason text
"No matching data found".
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator

import pytest

from scheduler.core.clock import ManualClock
from scheduler.feeds.live import PolledSource, SourceError
from scheduler.feeds.live.entsoe_prices import EntsoeDayAhead, entsoe_area
from tests.unit.scheduler.feeds.live.stub_server import Reply, Request, StubServer, serve

TOKEN = "0d6f6e5e-token-never-logged"
DE_LU = "10Y1001A1001A82H"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC).timestamp()


def iso(t_s: float) -> str:
    return dt.datetime.fromtimestamp(t_s, tz=dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def a44(area: str, start_s: float, prices: list[float], resolution_min: int) -> str:
    """A day-ahead price document: one TimeSeries, one Period, one Point per `prices` entry."""
    end_s = start_s + len(prices) * resolution_min * 60
    points = "".join(
        f"<Point><position>{i + 1}</position><price.amount>{p}</price.amount></Point>"
        for i, p in enumerate(prices)
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<Publication_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3">
  <mRID>f5d9a4e6c1</mRID><revisionNumber>1</revisionNumber><type>A44</type>
  <sender_MarketParticipant.mRID codingScheme="A01">10X1001A1001A450</sender_MarketParticipant.mRID>
  <sender_MarketParticipant.marketRole.type>A32</sender_MarketParticipant.marketRole.type>
  <receiver_MarketParticipant.mRID codingScheme="A01">10X1001A1001A450\
</receiver_MarketParticipant.mRID>
  <receiver_MarketParticipant.marketRole.type>A33</receiver_MarketParticipant.marketRole.type>
  <createdDateTime>2026-11-30T12:00:00Z</createdDateTime>
  <period.timeInterval><start>{iso(start_s)}</start><end>{iso(end_s)}</end></period.timeInterval>
  <TimeSeries>
    <mRID>1</mRID><auction.type>A01</auction.type><businessType>A62</businessType>
    <in_Domain.mRID codingScheme="A01">{area}</in_Domain.mRID>
    <out_Domain.mRID codingScheme="A01">{area}</out_Domain.mRID>
    <contract_MarketAgreement.type>A01</contract_MarketAgreement.type>
    <currency_Unit.name>EUR</currency_Unit.name>
    <price_Measure_Unit.name>MWH</price_Measure_Unit.name>
    <curveType>A03</curveType>
    <Period>
      <timeInterval><start>{iso(start_s)}</start><end>{iso(end_s)}</end></timeInterval>
      <resolution>PT{resolution_min}M</resolution>
      {points}
    </Period>
  </TimeSeries>
</Publication_MarketDocument>"""


NO_DATA = """<?xml version="1.0" encoding="UTF-8"?>
<Acknowledgement_MarketDocument
    xmlns="urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0">
  <mRID>1f6e0b</mRID><createdDateTime>2026-11-30T12:00:00Z</createdDateTime>
  <Reason><code>999</code>
    <text>No matching data found for Data item Day-ahead Prices</text></Reason>
</Acknowledgement_MarketDocument>"""


@pytest.fixture()
def stub() -> Iterator[StubServer]:
    yield from serve()


def platform(documents: dict[str, str]) -> Callable[[Request], Reply]:
    """The API: a token is required; offset 0 gets the area's document, later pages none."""

    def answer(request: Request) -> Reply:
        if request.query.get("securityToken") != [TOKEN]:
            return Reply(401, "<html><body>Unauthorized</body></html>", "text/html")
        if request.query.get("documentType") != ["A44"]:
            return Reply(400, NO_DATA, "application/xml")
        area = request.query["in_Domain"][0]
        if request.query.get("offset", ["0"]) != ["0"] or area not in documents:
            return Reply(200, NO_DATA, "application/xml")
        return Reply(200, documents[area], "application/xml")

    return answer


# 2026-12-01 09:30 UTC: quarter-hour products; the document covers the day before to the day after.
NOW_S = utc(2026, 12, 1, 9, 30)
DAY0_S = utc(2026, 11, 30, 23)  # the delivery day starts at midnight CET


def quarter_prices(days: int = 3) -> list[float]:
    # Each hour h of the document: quarters h, h+0.25, h+0.5, h+0.75 (mean h + 0.375).
    return [h + q / 4 for h in range(24 * days) for q in range(4)]


def test_the_hour_now_and_the_hours_ahead_from_quarter_hours(stub: StubServer) -> None:
    stub.routes["/api"] = platform({DE_LU: a44(DE_LU, DAY0_S - 86_400, quarter_prices(), 15)})
    source = EntsoeDayAhead(TOKEN, ["DE-LU", "US-TEX-ERCO"], stub.url + "/api")
    assert source.areas == {"DE-LU": "DE_LU"}  # ERCOT is not an ENTSO-E area
    fetched = source.fetch(NOW_S)
    hour_s = utc(2026, 12, 1, 9)
    hours_into_doc = (hour_s - (DAY0_S - 86_400)) / 3600  # 34
    quote = fetched.prices_by_zone["DE-LU"]
    assert quote.value == pytest.approx(hours_into_doc + 0.375)
    assert (quote.as_of_s, quote.currency, quote.source) == (hour_s, "EUR", "entsoe")
    ahead = fetched.ahead_by_zone["DE-LU"]
    assert ahead.currency == "EUR"
    assert ahead.by_hour_start_s[hour_s + 3600] == pytest.approx(hours_into_doc + 1.375)
    assert min(ahead.by_hour_start_s) == hour_s + 3600
    assert len(ahead.by_hour_start_s) == 72 - 34 - 1  # every published hour after this one
    assert fetched.problems == ()


def test_price_zones_map_to_entsoe_areas() -> None:
    assert entsoe_area("DE-LU") == "DE_LU" and entsoe_area("NL") == "NL"
    assert entsoe_area("US-TEX-ERCO") is None


def test_a_zone_not_yet_published_is_a_problem_not_a_failure(stub: StubServer) -> None:
    fr = "10YFR-RTE------C"
    stub.routes["/api"] = platform({fr: a44(fr, DAY0_S - 86_400, [50.0] * 72, 60)})
    fetched = EntsoeDayAhead(TOKEN, ["DE-LU", "FR"], stub.url + "/api").fetch(NOW_S)
    assert fetched.prices_by_zone["FR"].value == 50.0
    assert "DE-LU" not in fetched.prices_by_zone
    assert fetched.problems == ("entsoe: no day-ahead prices for DE-LU (DE_LU) yet",)


def test_a_refused_token_fails_the_poll_without_showing_it(
    stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    stub.routes["/api"] = platform({})
    source = PolledSource(EntsoeDayAhead("wrong-token-value", ["DE-LU"], stub.url + "/api"),
                          900, ManualClock(NOW_S))
    with caplog.at_level(logging.DEBUG):
        assert not source.poll_once()
    problems = source.quotes(NOW_S).problems
    assert problems == ("entsoe: DE-LU: HTTPError: HTTP 401",)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "wrong-token-value" not in logged and "wrong-token-value" not in problems[0]


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (Reply(503, "<html>maintenance</html>", "text/html"), "HTTP 503"),
        (Reply(200, "<Publication_MarketDocument><TimeSeries><curveType>A03</curveType>"
                    "<Period><start>x</start></Period></TimeSeries></Publication_MarketDocument>",
               "application/xml"), "malformed reply"),
    ],
    ids=["unavailable", "malformed"],
)
def test_bad_replies(stub: StubServer, reply: Reply, problem: str) -> None:
    stub.routes["/api"] = reply
    with pytest.raises(SourceError, match=problem):
        EntsoeDayAhead(TOKEN, ["DE-LU"], stub.url + "/api").fetch(NOW_S)


def test_a_stale_document_has_no_price_for_now(stub: StubServer) -> None:
    # The platform still serves last week's auction only: nothing for the current hour.
    old_s = DAY0_S - 7 * 86_400
    stub.routes["/api"] = platform({DE_LU: a44(DE_LU, old_s, [40.0] * 24, 60)})
    # entsoe-py truncates to the period asked for, finds nothing left, and says there is no data.
    fetched = EntsoeDayAhead(TOKEN, ["DE-LU"], stub.url + "/api").fetch(NOW_S)
    assert "DE-LU" not in fetched.prices_by_zone
    assert fetched.problems == ("entsoe: no day-ahead prices for DE-LU (DE_LU) yet",)
