"""A scheduler priced by two live-style sources, end to end, on the real clock.

The scheduler (`SchedulerApp` in this process, with its gRPC admin API and Prometheus endpoint)
polls a Bitcoin Core node's JSON-RPC and a spot price for the hashprice, and the ENTSO-E platform
for the European zones' day-ahead prices. All three are served by a local server answering in the
shape each service documents (the replies of tests/unit/scheduler/feeds/live, built from the
services' references). Zones no live source covers are priced by the replay underneath.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from hashserve.v1 import admin_pb2, admin_pb2_grpc
from scheduler.core.economics import hashprice_usd_per_phs_day, opportunity_price_usd_per_mwh
from scheduler.fleet import default_fleet_path, load_fleet
from tests.chaos.harness import InProcessScheduler, bearer
from tests.unit.scheduler.feeds.live.stub_server import Reply, StubServer, serve
from tests.unit.scheduler.feeds.live.test_bitcoin import DIFFICULTY, core_rpc
from tests.unit.scheduler.feeds.live.test_entsoe import DE_LU, TOKEN, a44, platform

pytestmark = pytest.mark.integration

FLEET = load_fleet(default_fleet_path())
EUR_USD = FLEET.fx_usd_per_unit["EUR"]
BTC_USD = 97_123.45


def day_ahead_now() -> str:
    """A DE-LU document from yesterday to the day after tomorrow, hour h of it at 60 + h EUR."""
    start_s = math.floor(time.time() / 86_400) * 86_400 - 86_400
    return a44(DE_LU, start_s, [60.0 + h for h in range(96)], 60)


@pytest.fixture(scope="module")
def services() -> Iterator[StubServer]:
    for stub in serve():
        stub.routes["/rpc"] = core_rpc(tip_time_s=time.time() - 300)
        stub.routes["/spot"] = Reply(200, json.dumps(
            {"data": {"amount": str(BTC_USD), "base": "BTC", "currency": "USD"}}
        ))
        stub.routes["/api"] = platform({DE_LU: day_ahead_now()})
        # A published index per TH/s per day.
        stub.routes["/index"] = Reply(200, json.dumps({"data": {"hashprice": 0.0485}}))
        yield stub


@pytest.fixture(scope="module")
def sched(
    services: StubServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessScheduler]:
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "rpc-password").write_text("rpc-secret\n")
    (secrets / "entsoe-token").write_text(TOKEN + "\n")
    with InProcessScheduler(
        Path(tmp_path_factory.mktemp("live")),
        metrics_port=0,
        market_seconds_per_hour=3600.0,
        plan_interval_s=0.2,
        bitcoin_rpc_url=services.url + "/rpc",
        bitcoin_rpc_user="miner",
        bitcoin_rpc_password_file=str(secrets / "rpc-password"),
        btc_usd_url=services.url + "/spot",
        bitcoin_poll_interval_s=0.2,
        entsoe_token_file=str(secrets / "entsoe-token"),
        entsoe_endpoint_url=services.url + "/api",
        entsoe_poll_interval_s=0.5,
        hashprice_index_url=services.url + "/index",
        hashprice_index_field="data.hashprice",
        hashprice_index_scale=1000.0,
    ) as s:
        yield s


def market(sched: InProcessScheduler) -> admin_pb2.Market:
    with grpc.insecure_channel(sched.address) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        return admin.GetMarket(admin_pb2.GetMarketRequest(),
                               metadata=bearer(sched.credentials.admin_key))


def metrics(sched: InProcessScheduler) -> dict[str, float]:
    port = sched.on_loop(lambda app: app.metrics_port)
    out = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("hashserve_market_source") or line.startswith("hashserve_hashprice"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"never saw {what}")


def test_live_sources_price_the_market(sched: InProcessScheduler) -> None:
    def priced() -> bool:
        zones = {z.zone: z for z in market(sched).zones}
        return zones["DE-LU"].source == "entsoe" and market(sched).difficulty == DIFFICULTY

    wait_for(priced, "the live sources in the market")
    got = market(sched)
    zones = {z.zone: z for z in got.zones}
    hour_of_doc = (math.floor(time.time() / 3600) * 3600
                   - (math.floor(time.time() / 86_400) * 86_400 - 86_400)) / 3600
    assert zones["DE-LU"].price_usd_per_mwh == pytest.approx((60.0 + hour_of_doc) * EUR_USD)
    assert not zones["DE-LU"].stale
    # A zone ENTSO-E does not cover comes from the replay underneath.
    assert zones["US-TEX-ERCO"].source == "replay"
    assert got.btc_usd == BTC_USD
    fees = sum(0.02 + i * 0.0001 for i in range(12)) / 12  # the stub's last 12 blocks
    assert got.hashprice_usd_per_phs_day == pytest.approx(
        hashprice_usd_per_phs_day(BTC_USD, DIFFICULTY, fees, 3.125)
    )
    plan = sched.on_loop(lambda app: app.power.plan)
    assert plan is not None
    assert plan.sites["de-leipzig"].price_usd_per_mwh == pytest.approx(
        zones["DE-LU"].price_usd_per_mwh
    )
    assert not plan.sites["de-leipzig"].fallback
    # The flex outlook there is the published day-ahead, not last week's replayed means.
    view = sched.on_loop(lambda app: app.loop.core.site_views["de-leipzig"])
    next_hour_s = math.floor(time.time() / 3600) * 3600 + 3600
    first = view.outlook[0]
    assert first.start_s == pytest.approx(next_hour_s, abs=1.0)
    site = plan.sites["de-leipzig"]
    assert first.opportunity_price_usd_per_mwh == pytest.approx(opportunity_price_usd_per_mwh(
        (60.0 + hour_of_doc + 1) * EUR_USD, site.r_mine_usd_per_mwh, site.at_cap,
        site.block_share,
    ))
    wait_for(lambda: metrics(sched).get('hashserve_market_source_up{source="entsoe"}') == 1.0,
             "the source metrics")
    # Live prices are kept hourly in the journal, in market time, which beside live sources is
    # the real time; replayed ones are not.
    rows = sched.on_loop(lambda app: app.loop.journal.market_prices("DE-LU"))
    assert rows and rows[-1].source == "entsoe"
    assert rows[-1].hour_start_s == math.floor(time.time() / 3600) * 3600
    assert rows[-1].price_usd_per_mwh == pytest.approx(zones["DE-LU"].price_usd_per_mwh)
    assert sched.on_loop(lambda app: app.loop.journal.market_prices("US-TEX-ERCO")) == []
    wait_for(lambda: abs(metrics(sched)["hashserve_hashprice_index_usd_per_phs_day"] - 48.5)
             < 1e-9, "the index compared")
    seen = metrics(sched)
    assert seen["hashserve_hashprice_index_usd_per_phs_day"] == pytest.approx(48.5)
    assert seen["hashserve_hashprice_index_difference_usd_per_phs_day"] == pytest.approx(
        got.hashprice_usd_per_phs_day - 48.5
    )
    for source in ("bitcoin-core", "btc-spot", "entsoe", "hashprice-index"):
        assert seen[f'hashserve_market_source_up{{source="{source}"}}'] == 1.0
        assert seen[f'hashserve_market_source_errors{{source="{source}"}}'] == 0.0


def test_a_source_that_goes_down_is_seen_and_its_values_kept(
    sched: InProcessScheduler, services: StubServer
) -> None:
    wait_for(lambda: market(sched).difficulty == DIFFICULTY, "the node's difficulty")
    services.routes["/rpc"] = Reply(503, "<html>down</html>", "text/html")
    try:
        wait_for(lambda: metrics(sched).get('hashserve_market_source_up{source="bitcoin-core"}')
                 == 0.0, "the node marked down")
        seen = metrics(sched)
        assert seen['hashserve_market_source_errors{source="bitcoin-core"}'] >= 1.0
        # Its last values are minutes old, far within the difficulty's three days.
        assert market(sched).difficulty == DIFFICULTY
        # The market the admin API shows is the power tick's: the problem is in it from the
        # next tick after the poll that failed, not at once.
        wait_for(lambda: any("bitcoin-core" in p and "503" in p for p in market(sched).problems),
                 "the failure among the market's problems")
        assert market(sched).difficulty == DIFFICULTY
    finally:
        services.routes["/rpc"] = core_rpc(tip_time_s=time.time() - 300)
    wait_for(lambda: metrics(sched).get('hashserve_market_source_up{source="bitcoin-core"}')
             == 1.0, "the node back up")
