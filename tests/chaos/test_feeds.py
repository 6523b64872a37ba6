"""Market feed faults: missing, stale, NaN, negative-where-impossible and spiking values. The
planner's documented safe fallback engages (see `scheduler.core.planner`) and the alert metric
`hashserve_site_feed_fallback` (the `SiteOnFeedFallback` rule in deploy/prometheus) shows it.

Tested live, through the whole path: a JSON market endpoint served from this test (the HTTP feed
the scheduler polls, `scheduler.feeds.http_json`), the scheduler (`SchedulerApp` in this process,
its market replay set past the end of the shipped data so the endpoint is the only source), its
power controller (`scheduler.control.power`), its Prometheus endpoint scraped over HTTP, and the
admin API's GetMarket / ListSites. The clock is compressed (1 s per market hour) so a price goes
stale after 2 s, as two missed hourly updates would.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from hashserve.v1 import admin_pb2, admin_pb2_grpc
from scheduler.core.planner import PowerPlan
from scheduler.fleet import default_fleet_path, load_fleet
from tests.chaos.harness import InProcessScheduler, bearer

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

FLEET = load_fleet(default_fleet_path())
ZONES = sorted(FLEET.price_zones)
SITES_BY_ZONE = {z: [s.name for s in FLEET.sites if s.price_zone == z] for z in ZONES}
GOOD_PRICE_USD_PER_MWH = 40.0


def good_market() -> dict[str, Any]:
    # Mid-2024 Bitcoin facts (BTC ~$60k, difficulty ~8.8e13, ~0.3 BTC fees a block).
    return {
        "prices": dict.fromkeys(ZONES, GOOD_PRICE_USD_PER_MWH),
        "btc_usd": 60_000.0,
        "difficulty": 8.8e13,
        "fees_btc_per_block": 0.3,
    }


class MarketEndpoint:
    """A JSON market endpoint whose document the test changes at will."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = good_market()
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with endpoint.lock:
                    body = json.dumps(endpoint.doc).encode()  # NaN goes out as `NaN`
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/market"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def set(self, change: Callable[[dict[str, Any]], None]) -> None:
        with self.lock:
            doc = good_market()
            change(doc)
            self.doc = doc


@pytest.fixture(scope="module")
def market() -> Iterator[MarketEndpoint]:
    endpoint = MarketEndpoint()
    endpoint.thread.start()
    try:
        yield endpoint
    finally:
        endpoint.server.shutdown()


@pytest.fixture(scope="module")
def sched(
    tmp_path_factory: pytest.TempPathFactory, market: MarketEndpoint
) -> Iterator[InProcessScheduler]:
    with InProcessScheduler(
        Path(tmp_path_factory.mktemp("feeds")),
        metrics_port=0,
        market_http_url=market.url,
        market_http_interval_s=0.1,
        market_replay_start="2030-01-01T00:00:00Z",  # past the shipped files: HTTP only
        market_replay_loop=False,
        market_seconds_per_hour=1.0,
        plan_interval_s=0.1,
    ) as s:
        yield s


def plan(sched: InProcessScheduler) -> PowerPlan:
    p = sched.on_loop(lambda app: app.power.plan)
    assert p is not None
    return p


def fallback_metric(sched: InProcessScheduler) -> dict[str, float]:
    """hashserve_site_feed_fallback per site, scraped from the scheduler's /metrics."""
    port = sched.on_loop(lambda app: app.metrics_port)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("hashserve_site_feed_fallback{"):
            labels, value = line.rsplit(" ", 1)
            site = labels.split('site="', 1)[1].split('"', 1)[0]
            out[site] = float(value)
    return out


def settle(sched: InProcessScheduler, ok: Callable[[PowerPlan], bool], what: str) -> PowerPlan:
    """Polls and plans run every 0.1 s: wait for the plan to reflect the endpoint."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        p = plan(sched)
        if ok(p):
            time.sleep(0.3)  # one more plan and metrics export on the same inputs
            return plan(sched)
        time.sleep(0.1)
    raise TimeoutError(f"the plan never showed {what}: {plan(sched).sites}")


def fallback_sites(p: PowerPlan) -> set[str]:
    return {s for s, sp in p.sites.items() if sp.fallback}


def test_good_market_no_fallback(sched: InProcessScheduler, market: MarketEndpoint) -> None:
    market.set(lambda d: None)
    p = settle(sched, lambda p: not fallback_sites(p), "no fallback")
    assert all(sp.price_usd_per_mwh == GOOD_PRICE_USD_PER_MWH for sp in p.sites.values())
    metric = fallback_metric(sched)
    assert set(metric) == set(p.sites) and set(metric.values()) == {0.0}


BAD_PRICES: list[tuple[str, Callable[[dict[str, Any], str], None], str]] = [
    ("NaN", lambda d, z: d["prices"].__setitem__(z, math.nan), "not a number"),
    ("stale", lambda d, z: d["prices"].__setitem__(
        z, {"value": 41.0, "as_of_s": time.time() - 60}), "stale"),
    ("missing", lambda d, z: d["prices"].pop(z), "stale"),  # the last value ages out
    ("absurd spike", lambda d, z: d["prices"].__setitem__(z, 50_000.0), "absurd value"),
    ("below the floor", lambda d, z: d["prices"].__setitem__(z, -5_000.0), "absurd value"),
    ("not a number at all", lambda d, z: d["prices"].__setitem__(z, "forty"), "stale"),
]


@pytest.mark.parametrize(
    ("change", "problem"), [c[1:] for c in BAD_PRICES], ids=[c[0] for c in BAD_PRICES]
)
def test_a_bad_zone_price_puts_its_sites_on_the_fallback_and_raises_the_alert(
    sched: InProcessScheduler, market: MarketEndpoint,
    change: Callable[[dict[str, Any], str], None], problem: str,
) -> None:
    zone = next(z for z in ZONES if SITES_BY_ZONE[z])
    sites = set(SITES_BY_ZONE[zone])
    market.set(lambda d: None)
    settle(sched, lambda p: not fallback_sites(p), "recovery from the previous case")
    market.set(lambda d: change(d, zone))
    p = settle(sched, lambda p: fallback_sites(p) == sites, f"fallback at {sorted(sites)}")
    for site in sites:
        sp = p.sites[site]
        # The documented fallback: the price is unknown, the plan prices at the fallback price
        # (so the placer sends new work elsewhere), and why is said.
        assert not sp.price_known
        assert sp.price_usd_per_mwh == 1000.0
        assert sp.opportunity_price_usd_per_mwh >= 1000.0
        assert any("fallback" in r and zone in r for r in sp.reasons), sp.reasons
    metric = fallback_metric(sched)
    assert {s for s, v in metric.items() if v == 1.0} == sites
    creds = sched.credentials
    with grpc.insecure_channel(sched.address) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        got = admin.GetMarket(admin_pb2.GetMarketRequest(), metadata=bearer(creds.admin_key))
        assert any(f"price[{zone}]" in x and problem in x for x in got.problems), got.problems
        listed = admin.ListSites(admin_pb2.ListSitesRequest(), metadata=bearer(creds.admin_key))
        assert {s.name for s in listed.sites if s.feed_fallback} == sites


def test_the_fallback_curtails_mining_after_its_hold_where_the_price_is_unseen(
    sched: InProcessScheduler, market: MarketEndpoint
) -> None:
    zone = next(z for z in ZONES if SITES_BY_ZONE[z])
    market.set(lambda d: None)
    before = settle(sched, lambda p: not fallback_sites(p), "no fallback")
    mining_before = {s: before.sites[s].mining_mw for s in SITES_BY_ZONE[zone]}
    assert any(v > 0 for v in mining_before.values()), "nothing mines at $40/MWh?"
    market.set(lambda d: d["prices"].__setitem__(zone, math.nan))
    # Held for fallback_hold_s (15 market minutes = 0.25 s here), then curtailed: no power is
    # bought at a price nobody can see.
    p = settle(
        sched,
        lambda p: all(p.sites[s].fallback and p.sites[s].mining_mw == 0.0
                      for s in SITES_BY_ZONE[zone]),
        "mining curtailed at the fallback sites",
    )
    for s in SITES_BY_ZONE[zone]:
        assert p.sites[s].ai_mw == 0.0  # nothing was running; nothing new was switched on


def test_impossible_bitcoin_values_fall_back_to_the_floor_hashprice(
    sched: InProcessScheduler, market: MarketEndpoint
) -> None:
    for field, value in (("btc_usd", -60_000.0), ("difficulty", 0.0), ("btc_usd", math.inf)):
        market.set(lambda d: None)
        settle(sched, lambda p: not fallback_sites(p), "no fallback")
        market.set(lambda d, f=field, v=value: d.__setitem__(f, v))  # type: ignore[misc]
        p = settle(sched, lambda p: fallback_sites(p) == set(p.sites), f"{field}={value}")
        # R_mine from the $30/PH/day floor hashprice, for every site (each has its own J/TH).
        assert all("hashprice unknown" in " ".join(sp.reasons) for sp in p.sites.values())
        assert set(fallback_metric(sched).values()) == {1.0}
    market.set(lambda d: None)
    settle(sched, lambda p: not fallback_sites(p), "recovery")
    assert set(fallback_metric(sched).values()) == {0.0}


def test_a_real_price_spike_is_not_a_fault_but_mining_curtails(
    sched: InProcessScheduler, market: MarketEndpoint
) -> None:
    """$9,000/MWh happened (ERCOT, Feb 2021): believed, and mining there stops."""
    zone = next(z for z in ZONES if SITES_BY_ZONE[z])
    market.set(lambda d: d["prices"].__setitem__(zone, 9_000.0))
    p = settle(
        sched, lambda p: p.sites[SITES_BY_ZONE[zone][0]].price_usd_per_mwh == 9_000.0, "spike"
    )
    for s in SITES_BY_ZONE[zone]:
        assert not p.sites[s].fallback
        assert p.sites[s].mining_mw == 0.0  # far above any site's R_mine
    assert not {s for s, v in fallback_metric(sched).items() if v == 1.0}
