"""The live adapters against the real services, when this machine can reach them (skipped
offline, as in CI). They check only that each service still answers in the shape the adapter
reads; the offline tests (tests/unit/scheduler/feeds/live) check what the adapter makes of it."""

from __future__ import annotations

import socket
import time

import pytest

from scheduler.feeds.live.bitcoin import MempoolApi, SpotPriceApi

pytestmark = pytest.mark.integration


def reachable(host: str, port: int = 443, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not reachable("mempool.space"), reason="mempool.space is not reachable")
def test_mempool_space_answers_in_the_shape_the_adapter_reads() -> None:
    fetched = MempoolApi("https://mempool.space/api").fetch(time.time())
    assert fetched.difficulty is not None and fetched.difficulty.value > 1e13
    assert fetched.subsidy_btc is not None and 0 < fetched.subsidy_btc.value <= 3.125
    assert fetched.fees_btc_per_block is not None and fetched.fees_btc_per_block.value >= 0


@pytest.mark.skipif(not reachable("api.coinbase.com"), reason="api.coinbase.com is not reachable")
def test_coinbase_spot_answers_in_the_shape_the_adapter_reads() -> None:
    fetched = SpotPriceApi("https://api.coinbase.com/v2/prices/BTC-USD/spot").fetch(time.time())
    assert fetched.btc_usd is not None and fetched.btc_usd.value > 1000
