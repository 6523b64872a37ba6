"""PJM's real-time prices through gridstatus's PJM client, against a local server.

The replies follow PJM Data Miner 2's API (api.pjm.com/api/v1/<feed>, key in the
`Ocp-Apim-Subscription-Key` header): `{"totalRows": N, "items": [...]}` pages; the feeds read
are `rt_unverified_fivemin_lmps` (fields `datetime_beginning_utc`, `datetime_beginning_ept`,
`pnode_id`, `pnode_name`, `type`, `total_lmp_rt`, `congestion_price_rt`,
`marginal_loss_price_rt`, ...) and the `pnode` directory gridstatus labels them with.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator

import pytest

from scheduler.feeds.live import SourceError
from scheduler.feeds.live.pjm_prices import PjmNodalPrices
from tests.unit.scheduler.feeds.live.stub_server import Reply, Request, StubServer, serve

KEY = "pjm-key-0001"
UTC = dt.UTC
NODES = {51288: ("WESTERN HUB", "HUB"), 34497: ("AEP-DAYTON HUB", "HUB")}


def items_page(items: list[dict[str, object]]) -> Reply:
    return Reply(200, json.dumps({"totalRows": len(items), "items": items,
                                  "links": [], "searchSpecification": {}}))


def data_miner(now: dt.datetime, lmps: dict[int, float]) -> Callable[[Request], Reply]:
    def answer(request: Request) -> Reply:
        if request.headers.get("Ocp-Apim-Subscription-Key") != KEY:
            return Reply(401, json.dumps({"statusCode": 401, "message": "Access denied"}))
        if request.path.endswith("/pnode"):
            return items_page([
                {"effective_date": "2020-01-01T00:00:00", "pnode_id": pid, "pnode_name": name,
                 "pnode_subtype": kind, "pnode_type": kind, "termination_date": "9999-12-31",
                 "voltage_level": None, "zone": None}
                for pid, (name, kind) in NODES.items()
            ])
        wanted = {int(p) for p in request.query["pnode_id"][0].split(";")}
        start = now.replace(minute=0, second=0, microsecond=0)
        items = []
        for k in range(now.minute // 5 + 1):  # the intervals of this hour so far
            t = start + dt.timedelta(minutes=5 * k)
            for pid in sorted(wanted & set(lmps)):
                items.append({
                    "datetime_beginning_utc": t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "datetime_beginning_ept": t.strftime("%Y-%m-%dT%H:%M:%S"),
                    "pnode_id": pid, "pnode_name": NODES[pid][0], "type": NODES[pid][1],
                    "total_lmp_rt": lmps[pid] + k, "congestion_price_rt": 0.5,
                    "marginal_loss_price_rt": 0.25, "occ_check": 0,
                    "ref_caseid_used_multi_interval": "RTD",
                })
        return items_page(items)

    return answer


@pytest.fixture()
def stub() -> Iterator[StubServer]:
    yield from serve()


def route(stub: StubServer, answer: Callable[[Request], Reply]) -> None:
    stub.routes["/api/v1/rt_unverified_fivemin_lmps"] = answer
    stub.routes["/api/v1/pnode"] = answer


def test_a_site_prices_on_its_pnode(stub: StubServer) -> None:
    eastern = dt.timezone(dt.timedelta(hours=-5))
    now = dt.datetime(2026, 12, 1, 10, 17, tzinfo=eastern)
    route(stub, data_miner(now, {51288: 30.0, 34497: 25.0}))
    source = PjmNodalPrices(KEY, ["US-MIDA-PJM", "US-MIDA-PJM@34497", "DE-LU"],
                            data_miner_url=stub.url + "/api/v1")
    assert source.pnodes == {"US-MIDA-PJM": "51288", "US-MIDA-PJM@34497": "34497"}
    fetched = source.fetch(now.timestamp())
    hub = fetched.prices_by_zone["US-MIDA-PJM"]
    assert (hub.value, hub.currency) == (33.0, "USD")  # 10:15 is interval k=3
    assert hub.as_of_s == dt.datetime(2026, 12, 1, 10, 15, tzinfo=eastern).timestamp()
    assert fetched.prices_by_zone["US-MIDA-PJM@34497"].value == 28.0
    assert fetched.problems == ()


def test_a_refused_key_fails_the_poll(stub: StubServer) -> None:
    now = dt.datetime(2026, 12, 1, 15, 17, tzinfo=UTC)
    route(stub, data_miner(now, {51288: 30.0}))
    source = PjmNodalPrices("wrong-key", ["US-MIDA-PJM"], data_miner_url=stub.url + "/api/v1")
    with pytest.raises(SourceError, match="rt_unverified_fivemin_lmps"):
        source.fetch(now.timestamp())


def test_a_pnode_is_an_id() -> None:
    with pytest.raises(ValueError, match="pnode id"):
        PjmNodalPrices(KEY, ["US-MIDA-PJM@WESTERN_HUB"])
