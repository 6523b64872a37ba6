"""Ontario's zonal price through gridstatus's IESO client, against a local server.

The reports are built in the shape IESO publishes them under reports-public.ieso.ca/public (the
market-renewal schema, namespace http://www.ieso.ca/schema): `RealtimeOntarioZonalPrice` with a
`DeliveryDate`, a `DeliveryHour` (1-24, EST) and one `ZonalPrice` per 5-minute `Interval`
(`LmpCap`, `LossPriceCap`, `CongPriceCap`); `DAHourlyOntarioZonalPrice` with `CreatedAt`, a
`DeliveryDate` and `HourlyPriceComponents` (`PricingHour`, `ZonalPrice`, `LossPriceCapped`,
`CongestionPriceCapped`). Prices in CAD/MWh.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from scheduler.feeds.live import SourceError
from scheduler.feeds.live.ieso_prices import IesoZonalPrices
from tests.unit.scheduler.feeds.live.stub_server import Reply, StubServer, serve

EST = dt.timezone(dt.timedelta(hours=-5))
# 2026-12-01 10:17 EST: delivery hour 11, intervals 1-3 published (10:00, 10:05, 10:10).
NOW_S = dt.datetime(2026, 12, 1, 10, 17, tzinfo=EST).timestamp()


def realtime(day: str, hour: int, lmps: list[float]) -> str:
    intervals = "".join(
        f"<ZonalPrice><Interval>{i}</Interval><LmpCap>{p}</LmpCap>"
        f"<LossPriceCap>0.4</LossPriceCap><CongPriceCap>0.1</CongPriceCap></ZonalPrice>"
        for i, p in enumerate(lmps, start=1)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Document xmlns="http://www.ieso.ca/schema">'
        "<DocHeader><DocTitle>Realtime Ontario Zonal Price Report</DocTitle>"
        "<CreatedAt>2026-12-01T10:15:30</CreatedAt></DocHeader>"
        f"<DocBody><DeliveryDate>{day}</DeliveryDate><DeliveryHour>{hour}</DeliveryHour>"
        f"{intervals}</DocBody></Document>"
    )


def day_ahead(day: str, base: float) -> str:
    hours = "".join(
        f"<HourlyPriceComponents><PricingHour>{h}</PricingHour><ZonalPrice>{base + h}"
        "</ZonalPrice><LossPriceCapped>0.5</LossPriceCapped>"
        "<CongestionPriceCapped>0.0</CongestionPriceCapped></HourlyPriceComponents>"
        for h in range(1, 25)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Document xmlns="http://www.ieso.ca/schema">'
        "<DocHeader><DocTitle>Day-Ahead Hourly Ontario Zonal Price Report</DocTitle>"
        "<CreatedAt>2026-11-30T13:30:00</CreatedAt></DocHeader>"
        f"<DocBody><DeliveryDate>{day}</DeliveryDate>{hours}</DocBody></Document>"
    )


RT_PATH = "/public/RealtimeOntarioZonalPrice/PUB_RealtimeOntarioZonalPrice.xml"
DA_PATH = "/public/DAHourlyOntarioZonalPrice/PUB_DAHourlyOntarioZonalPrice.xml"


@pytest.fixture()
def stub() -> Iterator[StubServer]:
    yield from serve()


def test_the_newest_interval_now_and_the_day_ahead_hours(stub: StubServer) -> None:
    stub.routes[RT_PATH] = Reply(200, realtime("2026-12-01", 11, [40.0, 42.5, 47.25]), "text/xml")
    stub.routes[DA_PATH] = Reply(200, day_ahead("2026-12-01", 30.0), "text/xml")
    source = IesoZonalPrices(["CA-ON", "DE-LU"], stub.url + "/public")
    fetched = source.fetch(NOW_S)
    quote = fetched.prices_by_zone["CA-ON"]
    assert (quote.value, quote.currency) == (47.25, "CAD")
    assert quote.as_of_s == dt.datetime(2026, 12, 1, 10, 10, tzinfo=EST).timestamp()
    published = fetched.ahead_by_zone["CA-ON"].by_hour_start_s
    eleven_s = dt.datetime(2026, 12, 1, 11, tzinfo=EST).timestamp()
    assert min(published) == eleven_s and published[eleven_s] == 42.0  # hour ending 12
    assert len(published) == 13
    assert fetched.problems == ()


def test_an_old_report_gives_no_price_now(stub: StubServer) -> None:
    stub.routes[RT_PATH] = Reply(200, realtime("2026-12-01", 8, [40.0] * 12), "text/xml")
    stub.routes[DA_PATH] = Reply(200, day_ahead("2026-12-01", 30.0), "text/xml")
    fetched = IesoZonalPrices(["CA-ON"], stub.url + "/public").fetch(NOW_S)
    assert fetched.prices_by_zone == {}
    assert fetched.problems == ("ieso: no recent real-time Ontario zonal price",)


def test_a_missing_report_fails_the_poll(stub: StubServer) -> None:
    # gridstatus does not retry a 404 (it retries other failures with sleeps of its own).
    with pytest.raises(SourceError, match="get_lmp_real_time_5_min_ontario_zonal"):
        IesoZonalPrices(["CA-ON"], stub.url + "/public").fetch(NOW_S)


def test_a_malformed_report_fails_the_poll(stub: StubServer) -> None:
    stub.routes[RT_PATH] = Reply(200, "<Document><DocBody></DocBody>", "text/xml")
    with pytest.raises(SourceError, match=r"ParseError|AttributeError"):
        IesoZonalPrices(["CA-ON"], stub.url + "/public").fetch(NOW_S)
