"""The hourly book of live prices: the mean of each hour's distinct quotes, and the past week it
lays over the replay's."""

from __future__ import annotations

from scheduler.core.market import ZoneHourPrice
from scheduler.core.outlook import LivePriceBook

H0 = 1_733_040_000.0  # an hour start


def test_an_hour_is_the_mean_of_its_distinct_quotes() -> None:
    book = LivePriceBook()
    # ERCOT's real time: a new 15-minute interval every quarter, each seen at many ticks.
    assert book.observe("TX", H0, H0, 20.0, "ercot") == ZoneHourPrice("TX", H0, 20.0, "ercot", 1)
    assert book.observe("TX", H0, H0, 20.0, "ercot") is None  # the same quote again: no write
    assert book.observe("TX", H0, H0 + 900, 30.0, "ercot") == ZoneHourPrice(
        "TX", H0, 25.0, "ercot", 2)
    row = book.observe("TX", H0, H0 + 1800, 40.0, "ercot")
    assert row is not None and row.price_usd_per_mwh == 30.0 and row.quotes == 3
    assert book.price("TX", H0) == 30.0 and book.price("TX", H0 + 3600) is None
    # A source that stamps each poll anew with the same mean price: nothing new to write.
    assert book.observe("TX", H0, H0 + 2000, 30.0, "ercot") is None
    assert book.price("TX", H0) == 30.0


def test_the_book_replaces_the_replays_past_hours_it_has() -> None:
    book = LivePriceBook()
    book.put(ZoneHourPrice("DE", H0 - 7200, 5.0, "entsoe"))  # read back from the journal
    book.observe("DE", H0, H0, 99.0, "entsoe")
    replayed = [50.0, 51.0, 52.0, 53.0]  # hours H0-3h .. H0 (the current one last)
    assert book.overlay("DE", replayed, H0) == [50.0, 5.0, 52.0, 99.0]
    assert book.overlay("FR", replayed, H0) == replayed
    book.forget_before(H0)
    assert book.overlay("DE", replayed, H0) == [50.0, 51.0, 52.0, 99.0]
