"""ERCOT settlement point prices through gridstatus's ErcotAPI, against a local server.

The replies follow ERCOT's public API (its OpenAPI file `pubapi-apim-api.json`, shipped with
gridstatus, and the report pages of NP6-905-CD and NP4-190-CD): the token endpoint answers a
password grant with an `id_token`; a report answers `{"_meta": {..., "totalPages": 1},
"report": {...}, "fields": [{"name": ...}], "data": [[...], ...]}` with one row per settlement
point and interval, in US/Central time, hour ending 1-24.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from scheduler.core.fleet import market_zone, settlement_point
from scheduler.feeds.live import SourceError
from scheduler.feeds.live.ercot_prices import CENTRAL, ErcotSettlementPoints, local_start_s
from scheduler.feeds.replay import ReplayFeed
from scheduler.fleet import default_fleet_path, load_fleet
from tests.unit.scheduler.feeds.live.stub_server import Reply, Request, StubServer, serve

SUBSCRIPTION_KEY = "sub-key-0001"
ID_TOKEN = "id-token-abc"
# 2026-12-01 10:40 US/Central (16:40 UTC).
NOW_S = dt.datetime(2026, 12, 1, 10, 40, tzinfo=CENTRAL).timestamp()
RT_FIELDS = ["deliveryDate", "deliveryHour", "deliveryInterval", "settlementPoint",
             "settlementPointType", "settlementPointPrice", "DSTFlag"]
DAM_FIELDS = ["deliveryDate", "hourEnding", "settlementPoint", "settlementPointPrice", "DSTFlag"]


def report(name: str, fields: list[str], rows: list[list[object]]) -> str:
    return json.dumps({
        "_meta": {"totalRecords": len(rows), "pageSize": 100000, "totalPages": 1,
                  "currentPage": 1},
        "report": {"reportName": name, "reportDisplayName": name, "reportId": "0",
                   "reportEMIL": name, "downloadLimit": 0},
        "fields": [{"name": f, "label": f, "cardinality": 0, "dataType": "STRING",
                    "searchable": True, "sortable": True, "hasRange": False} for f in fields],
        "data": rows,
    })


def real_time(point: str, base: float) -> list[list[object]]:
    """Today's intervals up to 10:30 (hour ending 11, interval 3): price base + hour/100."""
    rows: list[list[object]] = []
    for hour_ending in range(1, 12):
        for interval in range(1, 5):
            if (hour_ending, interval) > (11, 3):
                break
            rows.append(["2026-12-01", hour_ending, interval, point, "HU",
                         round(base + hour_ending + interval / 10, 2), "N"])
    return rows


def day_ahead(point: str, base: float) -> list[list[object]]:
    return [[day, f"{he:02d}:00", point, base + he, "N"]
            for day in ("2026-12-01", "2026-12-02") for he in range(1, 25)]


def ercot(points: dict[str, float]) -> Callable[[Request], Reply]:
    def answer(request: Request) -> Reply:
        if request.path == "/token":
            form = dict(pair.split("=", 1) for pair in request.body.split("&"))
            if form.get("username") != "miner" or form.get("password") != "pw":
                return Reply(200, json.dumps({"error": "invalid_grant"}))
            return Reply(200, json.dumps({"id_token": ID_TOKEN}))
        if (request.headers.get("Authorization") != f"Bearer {ID_TOKEN}"
                or request.headers.get("Ocp-Apim-Subscription-Key") != SUBSCRIPTION_KEY):
            return Reply(401, json.dumps({"statusCode": 401, "message": "Access denied"}))
        point = request.query["settlementPoint"][0]
        if point not in points:
            return Reply(200, report("empty", RT_FIELDS, []))
        if request.path.endswith("/np6-905-cd/spp_node_zone_hub"):
            return Reply(200, report("spp", RT_FIELDS, real_time(point, points[point])))
        if request.path.endswith("/np4-190-cd/dam_stlmnt_pnt_prices"):
            return Reply(200, report("dam", DAM_FIELDS, day_ahead(point, points[point])))
        return Reply(404, "{}")

    return answer


@pytest.fixture()
def stub() -> Iterator[StubServer]:
    for server in serve():
        server.routes["/token"] = ercot({})
        yield server


def adapter(stub: StubServer, zones: list[str], password: str = "pw") -> ErcotSettlementPoints:
    return ErcotSettlementPoints(
        "miner", password, SUBSCRIPTION_KEY, zones, base_url=stub.url + "/api/public-reports",
        token_url=stub.url + "/token",
    )


def route_all(stub: StubServer, answer: Callable[[Request], Reply]) -> None:
    stub.routes["/token"] = answer
    stub.routes["/api/public-reports/np6-905-cd/spp_node_zone_hub"] = answer
    stub.routes["/api/public-reports/np4-190-cd/dam_stlmnt_pnt_prices"] = answer


def test_a_site_prices_on_its_own_node_and_the_rest_on_the_hub(stub: StubServer) -> None:
    route_all(stub, ercot({"HB_HUBAVG": 20.0, "HB_WEST": -10.0}))
    source = adapter(stub, ["US-TEX-ERCO", "US-TEX-ERCO@HB_WEST", "DE-LU"])
    assert source.points == {"US-TEX-ERCO": "HB_HUBAVG", "US-TEX-ERCO@HB_WEST": "HB_WEST"}
    fetched = source.fetch(NOW_S)
    latest_s = dt.datetime(2026, 12, 1, 10, 30, tzinfo=CENTRAL).timestamp()  # HE 11, interval 3
    hub = fetched.prices_by_zone["US-TEX-ERCO"]
    west = fetched.prices_by_zone["US-TEX-ERCO@HB_WEST"]
    assert (hub.value, hub.as_of_s, hub.currency) == (pytest.approx(31.3), latest_s, "USD")
    assert west.value == pytest.approx(1.3)  # the node: $30 below its hub every interval
    # Day-ahead: the hours after this one, today and tomorrow; HE 12 starts at 11:00.
    published = fetched.ahead_by_zone["US-TEX-ERCO@HB_WEST"]
    eleven_s = dt.datetime(2026, 12, 1, 11, tzinfo=CENTRAL).timestamp()
    assert min(published.by_hour_start_s) == eleven_s
    assert published.by_hour_start_s[eleven_s] == -10.0 + 12
    assert len(published.by_hour_start_s) == 48 - 11
    assert fetched.problems == ()


def test_a_point_without_recent_prices_is_a_problem(stub: StubServer) -> None:
    route_all(stub, ercot({"HB_HUBAVG": 20.0}))
    fetched = adapter(stub, ["US-TEX-ERCO", "US-TEX-ERCO@HB_PAN"]).fetch(NOW_S)
    assert "US-TEX-ERCO@HB_PAN" not in fetched.prices_by_zone
    assert fetched.problems == ("ercot: no recent real-time price for HB_PAN",)
    # An hour later the hub's last interval is stale too.
    later = adapter(stub, ["US-TEX-ERCO"]).fetch(NOW_S + 3600)
    assert later.prices_by_zone == {}


def test_a_refused_account_fails_the_poll(stub: StubServer) -> None:
    route_all(stub, ercot({"HB_HUBAVG": 20.0}))
    with pytest.raises(SourceError, match="refused a token"):
        adapter(stub, ["US-TEX-ERCO"], password="wrong").fetch(NOW_S)


@pytest.mark.parametrize(
    ("reply", "message"),
    [(Reply(401, json.dumps({"statusCode": 401})), "HTTP 401"),
     (Reply(503, "down", "text/plain"), "HTTP 503"),
     (Reply(200, report("spp", ["deliveryDate"], [["2026-12-01"]])), "malformed")],
    ids=["unauthorized", "unavailable", "malformed"],
)
def test_bad_replies(stub: StubServer, reply: Reply, message: str) -> None:
    route_all(stub, ercot({"HB_HUBAVG": 20.0}))
    stub.routes["/api/public-reports/np6-905-cd/spp_node_zone_hub"] = reply
    with pytest.raises(SourceError, match=message):
        adapter(stub, ["US-TEX-ERCO"]).fetch(NOW_S)


def test_ercot_times_across_the_autumn_change() -> None:
    # 2026-11-01: 01:00-02:00 happens twice; the second (DSTFlag Y) is an hour later.
    first = local_start_s("2026-11-01", 2, 1, repeated=False)
    second = local_start_s("2026-11-01", 2, 1, repeated=True)
    assert second - first == 3600.0


def test_a_settlement_point_in_the_fleet_file(tmp_path: Path) -> None:
    doc = yaml.safe_load(default_fleet_path().read_text())
    doc["sites"] = [s for s in doc["sites"] if s["name"] in ("tx-odessa", "tx-pecos")]
    doc["sites"][0]["settlement_point"] = "HB_WEST"
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc))
    fleet = load_fleet(path)
    odessa = fleet.site("tx-odessa")
    assert odessa.price_zone == "US-TEX-ERCO@HB_WEST"
    assert (market_zone(odessa.price_zone), settlement_point(odessa.price_zone)) == (
        "US-TEX-ERCO", "HB_WEST")
    assert fleet.site("tx-pecos").price_zone == "US-TEX-ERCO"
    # Without a live source, the replay prices the node as its zone.
    replay = ReplayFeed(start="2024-07-01T00:00:00Z", zones=sorted(fleet.price_zones))
    snap = replay.snapshot(replay.start_s + 1800)
    prices = snap.price_usd_per_mwh_by_zone
    assert prices["US-TEX-ERCO@HB_WEST"] == prices["US-TEX-ERCO"]
