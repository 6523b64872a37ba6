"""The twin: the scheduler core and the power tick on a virtual clock, on the shipped market."""

from __future__ import annotations

from scheduler.backtest.twin import TwinJob, TwinNode, TwinResult, TwinSettings, run_twin
from scheduler.core.fleet import Fleet
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobSpecData
from scheduler.core.market import DEFAULT_MARKET_LIMITS
from scheduler.core.models import ModelKind, Tier
from scheduler.core.planner import CurtailmentWindow, SiteOverride
from scheduler.core.scheduler import NodeInfo
from scheduler.feeds.layered import LayeredFeed
from scheduler.feeds.replay import ReplayFeed
from scheduler.fleet import default_fleet_path, load_fleet
from scheduler.settings import SchedulerSettings

SECONDS_PER_HOUR = 10.0
SPEEDUP = 3600.0 / SECONDS_PER_HOUR
ORIGIN_S = 1_000_000_000.0
START = "2023-08-08T00:00:00Z"
START_S = 1691452800.0  # START in Unix seconds
GEN = "smollm2-135m-instruct"
SITES = ("tx-odessa", "de-leipzig")


def fleet() -> Fleet:
    return load_fleet(default_fleet_path()).subset(list(SITES))


def run(
    jobs: list[TwinJob], hours: float = 4.0, overrides: dict[str, SiteOverride] | None = None,
    tokens_per_s: float = 100.0, window_lead_s: float = 120.0,
) -> TwinResult:
    f = fleet()
    limits = DEFAULT_MARKET_LIMITS.scaled(SPEEDUP)
    replay = ReplayFeed(
        start=START, speedup=SPEEDUP, origin_s=ORIGIN_S, zones=sorted(f.price_zones),
        fx_usd_per_unit=dict(f.fx_usd_per_unit), limits=limits,
    )
    feed = LayeredFeed.standard(
        sorted(f.price_zones), None, None, replay, dict(f.fx_usd_per_unit), limits
    )
    nodes = [
        TwinNode(
            NodeInfo(f"{site}-0", site, f.site(site).region, "cpu", frozenset({GEN}), 16_384, 2),
            tokens_per_s,
        )
        for site in SITES
    ]
    return run_twin(
        f, feed, replay, nodes, jobs, ORIGIN_S, hours * SECONDS_PER_HOUR,
        TwinSettings.from_settings(SchedulerSettings.model_validate({
            "plan_interval_s": 2.0, "tick_s": 0.2, "dr_window_lead_s": window_lead_s,
            "market_seconds_per_hour": SECONDS_PER_HOUR,
        })),
        overrides=overrides,
    )


def job(i: int, at_s: float, tokens: int = 100, tier: Tier = Tier.STANDARD) -> TwinJob:
    spec = JobSpecData(
        model=GEN, kind=ModelKind.GENERATION, tier=tier, input_tokens=20, output_tokens_est=80,
        deadline_s=3600.0, memory_mb=1000, value_usd=100 * 0.15 / 1e6,
    )
    return TwinJob(f"job-{i}", at_s, spec, tokens)


def test_every_job_is_answered_and_charged_for_the_tokens_it_used() -> None:
    jobs = [job(i, 5.0 + i, tokens=50 + i) for i in range(6)]
    result = run(jobs)
    assert {r.state for r in result.jobs.values()} == {JobState.SUCCEEDED}
    total = result.accounting.totals()
    # charged = value x used / estimated (100 tokens estimated)
    expected = sum(100 * 0.15 / 1e6 * (50 + i) / 100 for i in range(6))
    assert abs(total.ai_revenue_usd - expected) < 1e-12


def test_the_ledger_books_every_market_hour_of_every_site() -> None:
    result = run([], hours=3.0)
    rows = result.accounting.rows()
    hours = sorted({r.hour_start_s for r in rows})
    assert hours == [START_S + h * 3600.0 for h in range(3)]
    for r in rows:
        assert abs(r.covered_s - 3600.0) < 1.0, r
        assert r.mining_mwh + r.curtailed_mwh > 0


def test_hours_priced_above_mining_curtail_in_the_ledger() -> None:
    # ERCOT on 2023-08-08 from 19:00 UTC: scarcity prices, far above what mining earns.
    result = run([], hours=24.0)
    tx = [r for r in result.accounting.rows() if r.site == "tx-odessa"]
    assert any(r.curtailed_mwh > 10 and r.mining_mwh < 1e-6 for r in tx)
    assert any(r.mining_mwh > 10 for r in tx)


def test_a_demand_response_window_preempts_and_the_work_moves() -> None:
    # Long jobs at both sites; then a window cuts tx-odessa to zero for an hour.
    window_start_s = ORIGIN_S + 1.0 * SECONDS_PER_HOUR
    overrides = {
        "tx-odessa": SiteOverride(
            windows=(CurtailmentWindow(window_start_s, window_start_s + SECONDS_PER_HOUR, 0.0),)
        )
    }
    jobs = [job(i, 1.0 + 0.1 * i, tokens=3000) for i in range(4)]
    # A short lead: the site still takes work until just before the window.
    result = run(jobs, hours=8.0, overrides=overrides, tokens_per_s=200.0, window_lead_s=1.0)
    assert result.preempted >= 1
    assert {r.state for r in result.jobs.values()} == {JobState.SUCCEEDED}
    hour = START_S + 3600.0
    row = result.accounting.row("tx-odessa", hour)
    assert row is not None and row.mining_mwh == 0.0 and row.ai_mwh == 0.0
    assert row.curtailed_mwh > 40


def test_the_same_inputs_give_the_same_ledger() -> None:
    jobs = [job(i, 3.0 * i, tokens=300) for i in range(5)]
    a, b = run(jobs), run(jobs)
    assert a.accounting.rows() == b.accounting.rows()


def test_a_partial_window_sheds_its_site_once_and_the_work_does_not_come_back() -> None:
    # 5 MW at de-leipzig is two whole ASIC blocks: the plan mines them all and runs no GPU, so the
    # two jobs its node holds are shed once and go elsewhere, not back to de-leipzig.
    window_start_s = ORIGIN_S + 10.0
    overrides = {
        "de-leipzig": SiteOverride(
            windows=(CurtailmentWindow(window_start_s, window_start_s + 10.0, 5.0),)
        )
    }
    jobs = [job(i, 1.0 + 0.1 * i, tokens=3000) for i in range(4)]
    result = run(jobs, hours=8.0, overrides=overrides, tokens_per_s=200.0, window_lead_s=1.0)
    assert result.preempted_by_cause["dr_window"] == 2
    assert {r.state for r in result.jobs.values()} == {JobState.SUCCEEDED}


def test_the_twin_decides_with_the_live_schedulers_settings() -> None:
    live = SchedulerSettings.model_validate({
        "plan_interval_s": 3.0, "tick_s": 0.25, "lease_s": 9.0, "ai_value_floor_usd_per_mwh": 700.0,
        "dr_window_lead_s": 30.0, "market_seconds_per_hour": 36.0,
    })
    twin = TwinSettings.from_settings(live)
    assert (twin.plan_interval_s, twin.tick_s, twin.ai_value_floor_usd_per_mwh,
            twin.dr_window_lead_s) == (3.0, 0.25, 700.0, 30.0)
    assert twin.policy == live.scheduler_policy() and twin.policy.lease_s == 9.0
    assert twin.planner.clock_speedup == 100.0
    assert twin.profile == live.scoring_profile()
