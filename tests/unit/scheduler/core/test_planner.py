"""The power planner on hand-worked cases.

The site in these tests unless a case says otherwise: 1,000 PH/s at 20 J/TH = 20 MW of ASICs in
8 blocks of 2.5 MW; 4 GPU nodes of 0.5 MW busy / 0.1 MW idle = 2 MW busy (idle fraction 0.2);
cap 20 MW. Hashprice $40/PH/day, no pool fee: R_mine = 40 / (0.024 * 20) = 40 / 0.48 = $83.33/MWh.
"""

from __future__ import annotations

import math

import pytest

from scheduler.core.fleet import AsicFleetSpec, Fleet, GpuNodeGroup, SiteSpec
from scheduler.core.market import MarketSnapshot
from scheduler.core.planner import (
    CurtailmentWindow,
    ForceMode,
    PlannerConfig,
    PowerPlan,
    SiteAiDemand,
    SiteOverride,
    SitePowerPlan,
    plan_power,
)

T0 = 1_700_000_000.0
ZONE = "US-TEX-ERCO"
R_MINE = 40 / 0.48  # $83.33/MWh
CONFIG = PlannerConfig(
    min_dwell_s=900.0,
    hysteresis_usd_per_mwh=2.0,
    fallback_price_usd_per_mwh=1000.0,
    fallback_hold_s=900.0,
    fallback_hashprice_usd_per_phs_day=30.0,
)


def make_site(
    cap_mw: float = 20.0,
    hashrate_phs: float = 1000.0,
    efficiency_j_per_th: float = 20.0,
    block_mw: float = 2.5,
    ramp_s: float = 60.0,
    gpu_nodes: int = 4,
    node_busy_kw: float = 500.0,
    node_idle_kw: float = 100.0,
    name: str = "s1",
) -> SiteSpec:
    gpus = (
        (GpuNodeGroup("test-gpu", gpu_nodes, node_idle_kw, node_busy_kw, 80_000, ("m",)),)
        if gpu_nodes
        else ()
    )
    return SiteSpec(
        name=name,
        region="north_america",
        price_zone=ZONE,
        power_cap_mw=cap_mw,
        asic=AsicFleetSpec(hashrate_phs, efficiency_j_per_th, 0.0, block_mw, ramp_s),
        gpu_groups=gpus,
    )


def make_market(
    price: float | None = 50.0, hashprice: float | None = 40.0, t_s: float = T0
) -> MarketSnapshot:
    return MarketSnapshot(
        t_s=t_s,
        price_usd_per_mwh_by_zone={ZONE: price} if price is not None else {},
        btc_usd=None,
        difficulty=None,
        fees_btc_per_block=None,
        hashprice_usd_per_phs_day=hashprice,
        stale_zones=frozenset() if price is not None else frozenset({ZONE}),
    )


def plan(
    site: SiteSpec | None = None,
    price: float | None = 50.0,
    demand: SiteAiDemand | None = None,
    previous: SitePowerPlan | None = None,
    override: SiteOverride | None = None,
    now_s: float = T0,
    hashprice: float | None = 40.0,
) -> SitePowerPlan:
    site = site or make_site()
    fleet = Fleet(sites=(site,), fx_usd_per_unit={"USD": 1.0})
    result = plan_power(
        fleet,
        make_market(price, hashprice, now_s),
        {site.name: demand} if demand else {},
        PowerPlan(previous.mode_changed_at_s, {site.name: previous}) if previous else None,
        {site.name: override} if override else {},
        now_s,
        CONFIG,
    )
    return result.sites[site.name]


def test_cheap_power_mines_everything_and_the_cap_binds() -> None:
    p = plan(price=50.0)
    assert p.mining_mw == 20.0
    assert p.ai_mw == 0.0 and p.serving_mw == 0.0
    assert p.curtailed_mw == pytest.approx(2.0)  # the GPU nodes, switched off without work
    assert p.r_mine_usd_per_mwh == pytest.approx(R_MINE)
    assert p.at_cap
    # The first GPU stops a 2.5 MW block (20 -> 17.5) of which its 2 MW of GPUs use 0.8:
    # 50 + (83.33 - 50) / 0.8 = 91.67.
    assert p.block_share == pytest.approx(0.8)
    assert p.opportunity_price_usd_per_mwh == pytest.approx(50.0 + (R_MINE - 50.0) / 0.8)


def test_gpus_that_fill_a_block_pay_mining_margin_once() -> None:
    # 4 nodes of 0.625 MW = 2.5 MW: the block they stop is all theirs, max(50, 83.33).
    p = plan(make_site(node_busy_kw=625.0), price=50.0)
    assert p.block_share == pytest.approx(1.0)
    assert p.opportunity_price_usd_per_mwh == pytest.approx(R_MINE)


def test_a_sliver_of_gpus_pays_a_whole_block() -> None:
    # One 0.25 MW node under a 2.5 MW block: it pays 10 times mining's margin per MWh.
    p = plan(make_site(gpu_nodes=1, node_busy_kw=250.0), price=50.0)
    assert p.block_share == pytest.approx(0.1)
    assert p.opportunity_price_usd_per_mwh == pytest.approx(50.0 + (R_MINE - 50.0) * 10)


def test_price_above_r_mine_curtails_mining() -> None:
    p = plan(price=90.0)
    assert p.mining_mw == 0.0
    assert p.curtailed_mw == pytest.approx(22.0)
    assert not p.at_cap
    assert p.opportunity_price_usd_per_mwh == 90.0
    assert any("price above R_mine" in r for r in p.reasons)


def test_valuable_ai_displaces_a_mining_block_at_the_cap() -> None:
    # AI at $1,500/MWh earns 1,450/MWh over the price, mining 33.33: AI takes 2 MW, mining keeps
    # the 7 blocks that fit in the 18 MW left (17.5 MW); 0.5 MW stays unused.
    p = plan(price=50.0, demand=SiteAiDemand(ai_queued_mw=2.0, value_usd_per_mwh=1500.0))
    assert p.ai_mw == 2.0
    assert p.mining_mw == 17.5
    assert p.at_cap  # AI holds room a mining block would use
    assert p.opportunity_price_usd_per_mwh == pytest.approx(R_MINE)


def test_ai_worth_less_than_mining_yields_the_cap_to_mining() -> None:
    # AI at $70 earns 20/MWh over the price, mining 33.33: 20 MW mining = 666.7 $/h beats
    # 17.5 MW mining + 2 MW AI = 583.3 + 40 = 623.3 $/h.
    p = plan(price=50.0, demand=SiteAiDemand(ai_queued_mw=2.0, value_usd_per_mwh=70.0))
    assert p.mining_mw == 20.0
    assert p.ai_mw == 0.0


def test_spare_capacity_serves_ai_at_the_power_price() -> None:
    p = plan(site=make_site(cap_mw=25.0), demand=SiteAiDemand(1.0, 1.0, 1500.0))
    assert (p.mining_mw, p.ai_mw) == (20.0, 2.0)
    assert not p.at_cap
    assert p.opportunity_price_usd_per_mwh == 50.0


def test_negative_price_turns_on_everything_that_can_consume() -> None:
    p = plan(site=make_site(cap_mw=25.0), price=-20.0,
             demand=SiteAiDemand(ai_busy_mw=1.0, value_usd_per_mwh=500.0))
    assert p.mining_mw == 20.0
    assert p.ai_mw == 1.0
    assert p.serving_mw == 2.0  # every GPU node on
    assert p.idle_gpu_mw == pytest.approx(1.0 * 0.2)  # the idle one draws 20% of busy
    assert p.curtailed_mw == pytest.approx(0.0)
    assert any("negative price" in r for r in p.reasons)


def test_negative_price_at_the_cap_ranks_by_margin() -> None:
    # Margins per MW at -$20: AI 520, mining 103.33, idle GPUs 20 * 0.2 = 4. AI 1 MW first,
    # mining the 7 blocks that fit in 19 MW (17.5), idle GPUs the last 1 MW (1.5 MW of room).
    p = plan(price=-20.0, demand=SiteAiDemand(ai_busy_mw=1.0, value_usd_per_mwh=500.0))
    assert (p.ai_mw, p.mining_mw, p.serving_mw) == (1.0, 17.5, 2.0)
    assert p.mining_mw + p.serving_mw <= p.cap_mw


def test_ai_above_its_value_is_curtailed_and_says_it_preempts() -> None:
    p = plan(price=600.0, demand=SiteAiDemand(ai_busy_mw=1.0, value_usd_per_mwh=500.0))
    assert p.ai_mw == 0.0 and p.mining_mw == 0.0
    assert any("preempts 1.000 MW" in r for r in p.reasons)


def test_price_spike_curtails_mining_within_one_tick_even_inside_dwell() -> None:
    first = plan(price=50.0)
    assert first.mining_mw == 20.0 and first.mode_changed_at_s == T0
    spike = plan(price=200.0, previous=first, now_s=T0 + 60)
    assert spike.mining_mw == 0.0
    assert spike.mode_changed_at_s == T0 + 60


def test_dwell_holds_a_restart_until_it_has_passed() -> None:
    first = plan(price=50.0)
    spike = plan(price=200.0, previous=first, now_s=T0 + 60)
    early = plan(price=50.0, previous=spike, now_s=T0 + 120)
    assert early.mining_mw == 0.0
    assert any(r.startswith("dwell: mining held at 0 MW until t=") for r in early.reasons)
    assert early.mode_changed_at_s == T0 + 60
    later = plan(price=50.0, previous=early, now_s=T0 + 60 + 900)
    assert later.mining_mw == 20.0


def test_dwell_uses_the_sites_ramp_time_when_longer() -> None:
    site = make_site(ramp_s=3600.0)
    spike = plan(site, price=200.0, previous=plan(site, price=50.0), now_s=T0 + 60)
    assert plan(site, price=50.0, previous=spike, now_s=T0 + 60 + 900).mining_mw == 0.0
    assert plan(site, price=50.0, previous=spike, now_s=T0 + 60 + 3600).mining_mw == 20.0


def test_hysteresis_keeps_the_current_state_within_the_band() -> None:
    # R_mine 83.33 with a $2 band: mining stops above 85.33 and restarts below 81.33.
    mining = plan(price=50.0)
    assert plan(price=84.0, previous=mining, now_s=T0 + 3600).mining_mw == 20.0
    assert plan(price=86.0, previous=mining, now_s=T0 + 3600).mining_mw == 0.0
    assert plan(price=84.0).mining_mw == 0.0  # no previous plan: no band
    idle = plan(price=90.0)
    assert plan(price=82.0, previous=idle, now_s=T0 + 3600).mining_mw == 0.0
    assert plan(price=81.0, previous=idle, now_s=T0 + 3600).mining_mw == 20.0


def test_force_curtail_draws_nothing_even_at_a_negative_price() -> None:
    p = plan(price=-50.0, demand=SiteAiDemand(1.0, 0.0, 1500.0),
             override=SiteOverride(force=ForceMode.CURTAIL))
    assert (p.mining_mw, p.ai_mw, p.serving_mw, p.load_mw) == (0.0, 0.0, 0.0, 0.0)
    assert p.curtailed_mw == pytest.approx(22.0)


def test_force_mine_mines_at_a_loss() -> None:
    p = plan(price=200.0, override=SiteOverride(force=ForceMode.MINE))
    assert p.mining_mw == 20.0


def test_force_serve_puts_ai_first() -> None:
    # Without the override mining wins the cap (see the $70 case above).
    p = plan(price=50.0, demand=SiteAiDemand(ai_queued_mw=2.0, value_usd_per_mwh=70.0),
             override=SiteOverride(force=ForceMode.SERVE))
    assert (p.ai_mw, p.mining_mw) == (2.0, 17.5)


def test_ops_cap_lowers_the_site_cap() -> None:
    p = plan(price=50.0, override=SiteOverride(cap_mw=10.0))
    assert p.cap_mw == 10.0 and p.mining_mw == 10.0


def test_curtailment_window_applies_only_while_active_and_ignores_dwell() -> None:
    window = CurtailmentWindow(start_s=T0 + 3600, end_s=T0 + 7200, max_load_mw=5.0)
    before = plan(price=50.0, override=SiteOverride(windows=(window,)))
    assert before.mining_mw == 20.0
    during = plan(price=50.0, previous=before, now_s=T0 + 3600 + 1,
                  override=SiteOverride(windows=(window,)))
    assert during.mining_mw == 5.0 and during.load_mw <= 5.0
    assert any("demand response" in r for r in during.reasons)
    after = plan(price=50.0, previous=during, now_s=T0 + 7200 + 900,
                 override=SiteOverride(windows=(window,)))
    assert after.mining_mw == 20.0


def test_unknown_price_holds_mining_then_curtails() -> None:
    mining = plan(price=50.0)
    held = plan(price=None, previous=mining, now_s=T0 + 60)
    assert held.fallback and not held.price_known
    assert held.mining_mw == 20.0 and held.fallback_since_s == T0 + 60
    still = plan(price=None, previous=held, now_s=T0 + 60 + 899)
    assert still.mining_mw == 20.0
    stopped = plan(price=None, previous=still, now_s=T0 + 60 + 900)
    assert stopped.mining_mw == 0.0
    assert any("mining curtailed" in r for r in stopped.reasons)
    # The fallback price steers new flexible work away: opportunity $1,000/MWh.
    assert stopped.opportunity_price_usd_per_mwh == 1000.0


def test_unknown_price_without_history_curtails_mining_at_once() -> None:
    p = plan(price=None)
    assert p.mining_mw == 0.0 and p.fallback


@pytest.mark.parametrize(
    ("value", "expected_ai_mw"),
    [
        (500.0, 1.0),  # worth less than the $1,000 fallback price: running work only
        (1500.0, 1.5),  # worth more: queued work admitted too
    ],
)
def test_unknown_price_keeps_running_ai(value: float, expected_ai_mw: float) -> None:
    p = plan(price=None, demand=SiteAiDemand(1.0, 0.5, value))
    assert p.ai_mw == expected_ai_mw


def test_unknown_hashprice_uses_the_floor() -> None:
    # Floor $30/PH/day: R_mine = 30 / 0.48 = $62.50/MWh.
    cheap = plan(price=50.0, hashprice=None)
    assert cheap.fallback and cheap.r_mine_usd_per_mwh == pytest.approx(62.5)
    assert cheap.mining_mw == 20.0
    assert plan(price=70.0, hashprice=None).mining_mw == 0.0


@pytest.mark.parametrize("price", [-100.0, -5.0, 0.0, 40.0, 83.0, 84.0, 300.0, 2000.0])
@pytest.mark.parametrize("cap_mw", [0.0, 1.0, 9.9, 20.0, 23.0])
@pytest.mark.parametrize("demand_mw", [0.0, 0.7, 3.0])
def test_plan_invariants(price: float, cap_mw: float, demand_mw: float) -> None:
    site = make_site(cap_mw=cap_mw, block_mw=3.0)  # 6 blocks of 3 MW and one of 2 MW
    p = plan(site, price=price, demand=SiteAiDemand(demand_mw / 2, demand_mw / 2, 900.0))
    assert p.mining_mw + p.serving_mw <= cap_mw + 1e-9
    assert p.load_mw <= cap_mw + 1e-9
    assert p.ai_mw <= min(demand_mw, 2.0) + 1e-9
    assert p.curtailed_mw == pytest.approx(22.0 - p.mining_mw - p.serving_mw)
    assert any(math.isclose(p.mining_mw, level) for level in
               [3.0 * j for j in range(7)] + [3.0 * j + 2.0 for j in range(7)])


def test_a_compressed_clock_shortens_dwell_and_hold() -> None:
    # 360x: 900 s of dwell (ramp 60 s) is 2.5 s on the scheduler's clock.
    fast = PlannerConfig(min_dwell_s=900.0, clock_speedup=360.0)
    assert fast.dwell_s(60.0) == 2.5 and fast.dwell_s(3600.0) == 10.0
    assert fast.fallback_hold_scheduler_s == 2.5
    site = make_site()
    fleet = Fleet((site,), {"USD": 1.0})

    def step(price: float, previous: PowerPlan | None, now_s: float) -> PowerPlan:
        return plan_power(fleet, make_market(price, 40.0, now_s), {}, previous, {}, now_s, fast)

    spike = step(200.0, step(50.0, None, T0), T0 + 1)
    assert step(50.0, spike, T0 + 3).sites["s1"].mining_mw == 0.0  # 2 s < 2.5 s
    assert step(50.0, spike, T0 + 3.5).sites["s1"].mining_mw == 20.0


def test_a_lowered_cap_inside_dwell_cuts_mining_not_the_more_valuable_ai() -> None:
    # Running AI (2 MW at $1,500) with 17.5 MW mining; then ops cap the site at 10 MW one minute
    # later, inside the dwell: mining gives way (7.5 MW), the AI keeps running.
    demand = SiteAiDemand(ai_busy_mw=2.0, value_usd_per_mwh=1500.0)
    first = plan(price=50.0, demand=demand)
    assert (first.mining_mw, first.ai_mw) == (17.5, 2.0)
    capped = plan(price=50.0, demand=demand, previous=first, now_s=T0 + 60,
                  override=SiteOverride(cap_mw=10.0))
    assert (capped.mining_mw, capped.ai_mw) == (7.5, 2.0)
