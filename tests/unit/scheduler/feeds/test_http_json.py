"""The HTTP JSON feed against a real http.server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scheduler.core.clock import ManualClock
from scheduler.feeds import HttpJsonFeed, MarketFeed, parse_market_json

NOW = 1_718_000_000.0


class MarketServer:
    """A loopback server answering GET with `body` (a JSON-able object or raw text)."""

    def __init__(self) -> None:
        self.body: Any = {}
        self.status = 200
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                raw = server.body if isinstance(server.body, str) else json.dumps(server.body)
                payload = raw.encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/market"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[MarketServer]:
    s = MarketServer()
    yield s
    s.close()


def make_feed(server: MarketServer, clock: ManualClock) -> HttpJsonFeed:
    return HttpJsonFeed(server.url, interval_s=0.05, clock=clock, zones=("US-TEX-ERCO", "DE-LU"))


def test_a_poll_gives_a_validated_usd_snapshot(server: MarketServer) -> None:
    server.body = {
        "as_of_s": NOW - 30,
        "prices": {"US-TEX-ERCO": 31.5,
                   "DE-LU": {"value": 100.0, "currency": "EUR", "as_of_s": NOW - 600}},
        "btc_usd": 65_000.0,
        "difficulty": 8.8e13,
        "fees_btc_per_day": 43.2,
    }
    clock = ManualClock(NOW)
    feed = make_feed(server, clock)
    assert isinstance(feed, MarketFeed)
    assert feed.poll_once()
    s = feed.snapshot(NOW)
    assert s.price_usd_per_mwh_by_zone == {"US-TEX-ERCO": 31.5,
                                           "DE-LU": pytest.approx(107.764)}
    assert s.as_of_s["price[DE-LU]"] == NOW - 600
    assert s.fees_btc_per_block == pytest.approx(0.3)
    assert s.hashprice_usd_per_phs_day is not None
    assert s.problems == ()
    assert s.sources["btc_usd"] == "http"


def test_nan_and_absurd_values_are_refused(server: MarketServer) -> None:
    # Python's json writes NaN as a bare NaN, which the feed's parser reads back as a float.
    server.body = {"prices": {"US-TEX-ERCO": float("nan"), "DE-LU": 99_999.0},
                   "btc_usd": -3.0, "difficulty": 8.8e13}
    feed = make_feed(server, ManualClock(NOW))
    feed.poll_once()
    s = feed.snapshot(NOW)
    assert s.stale_zones == frozenset({"US-TEX-ERCO", "DE-LU"})
    assert s.btc_usd is None and s.hashprice_usd_per_phs_day is None
    assert any("price[US-TEX-ERCO]: http: not a number" in p for p in s.problems)
    assert any("price[DE-LU]: http: absurd value" in p for p in s.problems)
    assert any("btc_usd: http: absurd value" in p for p in s.problems)


def test_a_failing_endpoint_keeps_old_values_until_they_go_stale(server: MarketServer) -> None:
    server.body = {"prices": {"US-TEX-ERCO": 31.5, "DE-LU": 50.0}}
    clock = ManualClock(NOW)
    feed = make_feed(server, clock)
    assert feed.poll_once()  # stamped with the poll time, NOW
    server.status = 503
    clock.advance(3600.0)
    assert not feed.poll_once()
    s = feed.snapshot(clock.now_s())
    assert s.usable_price("US-TEX-ERCO") == 31.5  # an hour old: still usable
    assert any("poll of" in p and "503" in p for p in s.problems)
    clock.advance(3601.0)
    s = feed.snapshot(clock.now_s())
    assert s.stale_zones == frozenset({"US-TEX-ERCO", "DE-LU"})


def test_garbage_is_reported_not_used(server: MarketServer) -> None:
    server.body = "this is not json"
    feed = make_feed(server, ManualClock(NOW))
    assert not feed.poll_once()
    assert any("failed" in p for p in feed.snapshot(NOW).problems)
    server.body = ["a", "list"]
    assert not feed.poll_once()
    assert any("not a JSON object" in p for p in feed.snapshot(NOW).problems)


def test_an_unreachable_endpoint_is_reported() -> None:
    s = MarketServer()
    url = s.url
    s.close()
    feed = HttpJsonFeed(url, interval_s=1.0, clock=ManualClock(NOW), timeout_s=1.0,
                        zones=("DE-LU",))
    assert not feed.poll_once()
    snapshot = feed.snapshot(NOW)
    assert snapshot.stale_zones == frozenset({"DE-LU"})
    assert any("ConnectError" in p for p in snapshot.problems)


def test_the_thread_polls_on_its_interval(server: MarketServer) -> None:
    server.body = {"prices": {"DE-LU": 50.0}}
    clock = ManualClock(NOW)
    with make_feed(server, clock) as feed:
        deadline = time.monotonic() + 10.0
        while server.requests < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert server.requests >= 3
    assert feed.snapshot(NOW).usable_price("DE-LU") == 50.0
    seen = server.requests
    time.sleep(0.2)
    assert server.requests == seen  # stopped


def test_parse_reports_fields_that_are_not_numbers() -> None:
    prices, fields, problems = parse_market_json(
        {"prices": {"FR": "cheap", "ES": {"value": 20.0, "as_of_s": "yesterday"}},
         "btc_usd": [1], "difficulty": True}, NOW)
    assert prices == {} and fields == {}
    assert len(problems) == 4
