"""Bitcoin sources against a local server answering in each service's documented shape.

Replies are built from the services' own references, labelled below:
- Bitcoin Core JSON-RPC: `getblockchaininfo` and `getblockstats` results as the RPC help
  documents them (satoshi amounts for `totalfee` and `subsidy`), as a JSON-RPC 1.0 batch reply;
- mempool's REST API: `GET /api/v1/blocks`, the latest blocks with `extras.totalFees` and
  `extras.reward` in satoshis;
- Coinbase's spot price: `GET /v2/prices/BTC-USD/spot`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scheduler.core.clock import ManualClock
from scheduler.core.economics import hashprice_usd_per_phs_day
from scheduler.core.market import assemble_snapshot
from scheduler.feeds.live import PolledSource, SourceError
from scheduler.feeds.live.bitcoin import (
    BitcoinCoreRpc,
    HashpriceIndexApi,
    MempoolApi,
    SpotPriceApi,
)
from tests.unit.scheduler.feeds.live.stub_server import Reply, Request, StubServer, serve

NOW_S = 1_733_000_000.0  # 2024-11-30
TIP = 872_000
DIFFICULTY = 102_289_407_543_323.8
SUBSIDY_SATS = 312_500_000  # 3.125 BTC after the 2024 halving


@pytest.fixture()
def stub() -> Iterator[StubServer]:
    yield from serve()


def core_rpc(
    tip_time_s: float = NOW_S - 300, ibd: bool = False, fees_sats: int = 2_000_000,
    password: str = "rpc-secret",
) -> Callable[[Request], Reply]:
    """A Bitcoin Core node: basic auth, batch JSON-RPC (documented result shapes)."""

    def answer(request: Request) -> Reply:
        expected = base64.b64encode(f"miner:{password}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return Reply(401, "", "text/html")
        replies = []
        for call in json.loads(request.body):
            if call["method"] == "getblockchaininfo":
                result: object = {
                    "chain": "main", "blocks": TIP, "headers": TIP,
                    "bestblockhash": "00" * 32, "difficulty": DIFFICULTY,
                    "time": int(tip_time_s), "mediantime": int(tip_time_s) - 3000,
                    "verificationprogress": 0.9999, "initialblockdownload": ibd,
                    "chainwork": "00" * 32, "size_on_disk": 700_000_000_000, "pruned": False,
                    "warnings": "",
                }
            elif call["method"] == "getblockstats":
                height, _stats = call["params"]
                result = {
                    "height": height, "time": int(tip_time_s) - (TIP - height) * 600,
                    "totalfee": fees_sats + (TIP - height) * 10_000, "subsidy": SUBSIDY_SATS,
                }
            else:
                replies.append({"result": None, "id": call["id"],
                                "error": {"code": -32601, "message": "Method not found"}})
                continue
            replies.append({"result": result, "error": None, "id": call["id"]})
        return Reply(200, json.dumps(replies))

    return answer


def test_bitcoin_core_gives_difficulty_fees_and_subsidy(stub: StubServer) -> None:
    stub.routes["/"] = core_rpc()
    node = BitcoinCoreRpc(stub.url + "/", user="miner", password="rpc-secret", fee_blocks=4)
    fetched = node.fetch(NOW_S)
    assert fetched.difficulty is not None and fetched.difficulty.value == DIFFICULTY
    # The mean of the last 4 blocks' fees: 0.02, 0.0201, 0.0202, 0.0203 BTC.
    assert fetched.fees_btc_per_block is not None
    assert fetched.fees_btc_per_block.value == pytest.approx(0.02015)
    assert fetched.subsidy_btc is not None and fetched.subsidy_btc.value == 3.125
    assert fetched.difficulty.as_of_s == NOW_S - 300  # the tip's time
    # One batch for the chain, one for the block stats of the last 4 heights.
    batches = [json.loads(r.body) for r in stub.requests]
    assert [c["method"] for c in batches[0]] == ["getblockchaininfo"]
    assert [c["params"][0] for c in batches[1]] == [TIP, TIP - 1, TIP - 2, TIP - 3]


def test_the_hashprice_comes_from_the_live_node_and_spot_price(stub: StubServer) -> None:
    stub.routes["/"] = core_rpc()
    stub.routes["/v2/prices/BTC-USD/spot"] = Reply(
        200, json.dumps({"data": {"amount": "97123.45", "base": "BTC", "currency": "USD"}})
    )
    clock = ManualClock(NOW_S)
    node = PolledSource(BitcoinCoreRpc(stub.url + "/", "miner", "rpc-secret", fee_blocks=2), 60,
                        clock)
    spot = PolledSource(SpotPriceApi(stub.url + "/v2/prices/BTC-USD/spot"), 60, clock)
    assert node.poll_once() and spot.poll_once()
    snap = assemble_snapshot(NOW_S, [node.quotes(NOW_S), spot.quotes(NOW_S)], [], {"USD": 1.0})
    fees = (0.02 + 0.0201) / 2
    assert snap.hashprice_usd_per_phs_day == pytest.approx(
        hashprice_usd_per_phs_day(97123.45, DIFFICULTY, fees, 3.125)
    )
    assert snap.sources["difficulty"] == "bitcoin-core" and snap.sources["btc_usd"] == "btc-spot"


def test_a_cookie_file_is_read_at_every_poll(stub: StubServer, tmp_path: Path) -> None:
    cookie = tmp_path / ".cookie"
    cookie.write_text("miner:first")
    stub.routes["/"] = core_rpc(password="first")
    node = BitcoinCoreRpc(stub.url + "/", cookie_file=str(cookie), fee_blocks=1)
    node.fetch(NOW_S)
    cookie.write_text("miner:second")  # the node restarted and wrote a new cookie
    stub.routes["/"] = core_rpc(password="second")
    assert node.fetch(NOW_S).difficulty is not None


def test_refused_credentials_are_named_but_not_shown(stub: StubServer) -> None:
    stub.routes["/"] = core_rpc(password="right")
    with pytest.raises(SourceError, match="refused the RPC credentials") as err:
        BitcoinCoreRpc(stub.url + "/", "miner", "wrong-secret").fetch(NOW_S)
    assert "wrong-secret" not in str(err.value)


def test_a_syncing_node_is_not_priced_on(stub: StubServer) -> None:
    stub.routes["/"] = core_rpc(ibd=True)
    with pytest.raises(SourceError, match="still syncing"):
        BitcoinCoreRpc(stub.url + "/", "miner", "rpc-secret").fetch(NOW_S)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(500, "<html>Internal error</html>", "text/html"), "without JSON"),
        (Reply(200, "[]"), "not a reply to a batch"),
        (Reply(200, json.dumps([{"result": None, "id": 0,
                                 "error": {"code": -28, "message": "Loading block index"}}])),
         "Loading block index"),
        (Reply(200, json.dumps([{"result": {"blocks": TIP}, "error": None, "id": 0}])),
         "'difficulty' missing"),
    ],
    ids=["html-error", "empty", "rpc-error", "malformed"],
)
def test_bad_replies_from_the_node(stub: StubServer, reply: Reply, message: str) -> None:
    stub.routes["/"] = reply
    with pytest.raises(SourceError, match=message):
        BitcoinCoreRpc(stub.url + "/").fetch(NOW_S)


def test_a_stalled_node_lets_the_difficulty_go_stale(stub: StubServer) -> None:
    # The tip is four days old: the node stopped following the chain. The limit is three days.
    stub.routes["/"] = core_rpc(tip_time_s=NOW_S - 4 * 86_400)
    source = PolledSource(BitcoinCoreRpc(stub.url + "/", "miner", "rpc-secret", fee_blocks=1),
                          60, ManualClock(NOW_S))
    assert source.poll_once()
    snap = assemble_snapshot(NOW_S, [source.quotes(NOW_S)], [], {"USD": 1.0})
    assert snap.difficulty is None
    assert any("difficulty" in p and "stale" in p for p in snap.problems)


def test_an_unreachable_node_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="ConnectError"):
        BitcoinCoreRpc("http://127.0.0.1:9/", timeout_s=1.0).fetch(NOW_S)


def mempool_blocks(n: int = 15) -> list[dict[str, object]]:
    """`GET /api/v1/blocks` (mempool's REST reference): newest first."""
    return [
        {
            "id": f"{TIP - i:064x}", "height": TIP - i, "version": 0x20000000,
            "timestamp": int(NOW_S) - 600 * (i + 1), "bits": 386_053_475, "nonce": 1,
            "difficulty": DIFFICULTY, "merkle_root": "00" * 32, "tx_count": 3000,
            "size": 1_600_000, "weight": 3_993_000, "previousblockhash": f"{TIP - i - 1:064x}",
            "mediantime": int(NOW_S) - 4000,
            "extras": {"reward": SUBSIDY_SATS + 1_500_000 + i * 1000,
                       "totalFees": 1_500_000 + i * 1000, "avgFee": 500, "medianFee": 300},
        }
        for i in range(n)
    ]


def test_mempool_api_gives_difficulty_fees_and_subsidy(stub: StubServer) -> None:
    stub.routes["/api/v1/blocks"] = Reply(200, json.dumps(mempool_blocks()))
    fetched = MempoolApi(stub.url + "/api", fee_blocks=3).fetch(NOW_S)
    assert fetched.difficulty is not None and fetched.difficulty.value == DIFFICULTY
    assert fetched.fees_btc_per_block is not None
    assert fetched.fees_btc_per_block.value == pytest.approx(0.01501)
    assert fetched.subsidy_btc is not None and fetched.subsidy_btc.value == pytest.approx(3.125)
    assert fetched.difficulty.as_of_s == NOW_S - 600


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(200, "[]"), "no blocks"),
        (Reply(503, "busy", "text/plain"), "answered 503"),
        (Reply(200, "not json", "text/plain"), "not JSON"),
        (Reply(200, json.dumps([{"height": TIP, "timestamp": 1, "difficulty": 1.0}])),
         "totalFees"),
    ],
    ids=["empty", "unavailable", "not-json", "no-extras"],
)
def test_bad_replies_from_mempool(stub: StubServer, reply: Reply, message: str) -> None:
    stub.routes["/api/v1/blocks"] = reply
    with pytest.raises(SourceError, match=message):
        MempoolApi(stub.url + "/api").fetch(NOW_S)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"data": {"amount": "97000", "base": "BTC", "currency": "EUR"}}, "not BTC/USD"),
        ({"data": {"base": "BTC", "currency": "USD"}}, "'amount' missing"),
        ({"errors": [{"id": "not_found"}]}, "no 'data'"),
    ],
    ids=["wrong-currency", "no-amount", "error-doc"],
)
def test_bad_spot_prices(stub: StubServer, body: object, message: str) -> None:
    stub.routes["/spot"] = Reply(200, json.dumps(body))
    with pytest.raises(SourceError, match=message):
        SpotPriceApi(stub.url + "/spot").fetch(NOW_S)


def test_a_hashprice_index_is_read_at_its_field_and_scaled(stub: StubServer) -> None:
    # An index quoted per TH/s per day, under data.hashprice: $0.0485/TH/day = $48.5/PH/day.
    stub.routes["/index"] = Reply(200, json.dumps({"data": {"hashprice": 0.0485, "unit": "TH"}}))
    fetched = HashpriceIndexApi(stub.url + "/index", "data.hashprice", scale=1000).fetch(NOW_S)
    assert fetched.hashprice_usd_per_phs_day is not None
    assert fetched.hashprice_usd_per_phs_day.value == pytest.approx(48.5)
    stub.routes["/index"] = Reply(200, json.dumps({"data": {"hashprice": "n/a"}}))
    with pytest.raises(SourceError, match="is not a number"):
        HashpriceIndexApi(stub.url + "/index", "data.hashprice").fetch(NOW_S)
    stub.routes["/index"] = Reply(200, json.dumps({"data": {}}))
    with pytest.raises(SourceError, match=r"no 'data\.hashprice'"):
        HashpriceIndexApi(stub.url + "/index", "data.hashprice").fetch(NOW_S)
