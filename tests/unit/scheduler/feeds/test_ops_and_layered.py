"""Ops-set values, and the layered feed: ops > HTTP > replay, field by field, with validation."""

from __future__ import annotations

import datetime as dt

import pytest

from scheduler.core.clock import ManualClock
from scheduler.core.planner import plan_power
from scheduler.feeds import HttpJsonFeed, LayeredFeed, MarketFeed, OpsFeed, ReplayFeed
from scheduler.fleet import default_fleet_path, load_fleet

T = dt.datetime(2023, 6, 15, 12, 30, tzinfo=dt.UTC).timestamp()
ZONES = ("US-TEX-ERCO", "DE-LU")


@pytest.fixture(scope="module")
def replay() -> ReplayFeed:
    return ReplayFeed(start=T, zones=ZONES)


def test_ops_values_hold_for_their_time_to_live() -> None:
    ops = OpsFeed(zones=("DE-LU",))
    assert isinstance(ops, MarketFeed)
    ops.set_price("DE-LU", 100.0, now_s=T, currency="EUR", ttl_s=600.0)
    assert ops.snapshot(T + 599).usable_price("DE-LU") == pytest.approx(107.764)
    late = ops.snapshot(T + 601)
    assert late.stale_zones == frozenset({"DE-LU"})
    assert any("price[DE-LU]: ops: stale (expired 1 s ago)" in p for p in late.problems)
    # After one more time-to-live the expired value is dropped and no longer reported.
    gone = ops.snapshot(T + 1300)
    assert "price[DE-LU]: missing" in gone.problems


def test_ops_overrides_replay_field_by_field(replay: ReplayFeed) -> None:
    ops = OpsFeed()
    feed = LayeredFeed.standard(ZONES, ops=ops, replay=replay)
    base = feed.snapshot(T)
    ops.set_price("US-TEX-ERCO", 4000.0, now_s=T)
    s = feed.snapshot(T)
    assert s.usable_price("US-TEX-ERCO") == 4000.0
    assert s.sources["price[US-TEX-ERCO]"] == "ops"
    assert s.usable_price("DE-LU") == base.usable_price("DE-LU")
    assert s.sources["price[DE-LU]"] == "replay"
    assert s.btc_usd == base.btc_usd


def test_ops_hashprice_replaces_the_computed_one(replay: ReplayFeed) -> None:
    ops = OpsFeed()
    feed = LayeredFeed.standard(ZONES, ops=ops, replay=replay)
    ops.set_hashprice(48.0, now_s=T)
    assert feed.snapshot(T).hashprice_usd_per_phs_day == 48.0
    ops.clear(field="hashprice_usd_per_phs_day")
    assert feed.snapshot(T).hashprice_usd_per_phs_day == pytest.approx(
        replay.snapshot(T).hashprice_usd_per_phs_day)


def test_an_absurd_ops_value_is_refused_and_the_next_layer_used(replay: ReplayFeed) -> None:
    ops = OpsFeed()
    feed = LayeredFeed.standard(ZONES, ops=ops, replay=replay)
    ops.set_price("US-TEX-ERCO", 25_000.0, now_s=T)  # a typo: above $20,000/MWh
    ops.set_btc_usd(-1.0, now_s=T)
    s = feed.snapshot(T)
    assert s.sources["price[US-TEX-ERCO]"] == "replay"
    assert s.btc_usd == replay.snapshot(T).btc_usd
    assert any(p.startswith("price[US-TEX-ERCO]: ops: absurd value") for p in s.problems)
    assert any(p.startswith("btc_usd: ops: absurd value") for p in s.problems)


def test_a_zone_no_layer_can_price_is_stale() -> None:
    ops = OpsFeed()
    ops.set_price("DE-LU", float("nan"), now_s=T)
    s = LayeredFeed([ops], ZONES).snapshot(T)
    assert s.stale_zones == frozenset(ZONES)
    assert "price[US-TEX-ERCO]: missing" in s.problems


def test_http_sits_between_ops_and_replay(replay: ReplayFeed) -> None:
    # No server: the HTTP layer has nothing yet and says so; replay still prices the zones.
    http = HttpJsonFeed("http://127.0.0.1:9/none", clock=ManualClock(T), zones=ZONES)
    ops = OpsFeed()
    feed = LayeredFeed.standard(ZONES, ops=ops, http=http, replay=replay)
    assert [source.name for source in feed.sources] == ["ops", "http", "replay"]
    s = feed.snapshot(T)
    assert s.stale_zones == frozenset()
    assert any("http: no answer" in p for p in s.problems)


def test_clear_everything() -> None:
    ops = OpsFeed(zones=("DE-LU",))
    ops.set_price("DE-LU", 50.0, now_s=T)
    ops.set_difficulty(8e13, now_s=T)
    ops.set_fees_btc_per_block(0.2, now_s=T)
    ops.clear()
    s = ops.snapshot(T)
    assert s.stale_zones == frozenset({"DE-LU"}) and s.difficulty is None


def test_the_planner_falls_back_on_what_the_feed_refuses(replay: ReplayFeed) -> None:
    # A NaN typed in by ops with no other source: the zone is stale, the planner falls back.
    fleet = load_fleet(default_fleet_path()).subset(["tx-odessa", "de-leipzig"])
    ops = OpsFeed()
    ops.set_price("DE-LU", float("nan"), now_s=T)
    feed = LayeredFeed([ops, replay], ["DE-LU", "US-TEX-ERCO"])
    ok = plan_power(fleet, feed.snapshot(T), {}, None, {}, T).sites["de-leipzig"]
    assert not ok.fallback  # replay still prices DE-LU
    only_ops = LayeredFeed([ops], ["DE-LU", "US-TEX-ERCO"])
    plan = plan_power(fleet, only_ops.snapshot(T), {}, None, {}, T)
    assert all(p.fallback and not p.price_known for p in plan.sites.values())
    assert all(p.mining_mw == 0.0 for p in plan.sites.values())  # no history: curtail at once


def test_ops_values_survive_a_save_and_load_with_their_expiry() -> None:
    ops = OpsFeed(zones=["ERCOT", "DE-LU"])
    ops.set_price("DE-LU", 95.0, 1000.0, currency="EUR", ttl_s=600.0)
    ops.set_btc_usd(61_000.0, 1000.0)
    again = OpsFeed(zones=["ERCOT", "DE-LU"])
    again.load_json(ops.to_json())
    assert again.quotes(1100.0) == ops.quotes(1100.0)
    de = again.quotes(1100.0).prices_by_zone["DE-LU"]
    assert (de.value, de.currency, de.valid_until_s) == (95.0, "EUR", 1600.0)
    with pytest.raises(ValueError, match="not saved ops market values"):
        again.load_json('{"prices": 3}')
    assert again.quotes(1100.0) == ops.quotes(1100.0)  # a bad load changed nothing
