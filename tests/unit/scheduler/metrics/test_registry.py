"""SchedulerMetrics: what each typed method puts in the registry, read back by sample name."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from scheduler.core.models import Tier
from scheduler.metrics.registry import SchedulerMetrics

MODELS = ("all-minilm-l6-v2", "smollm2-135m-instruct")


def make_metrics() -> SchedulerMetrics:
    return SchedulerMetrics(models=MODELS)


def value(m: SchedulerMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def site_figures(**overrides: float) -> dict[str, float]:
    figures = {
        "price_usd_per_mwh": 42.0,
        "r_mine_usd_per_mwh": 95.0,
        "mining_mw": 12.5,
        "ai_mw": 1.25,
        "idle_mw": 0.25,
        "curtailed_mw": 0.0,
        "mining_revenue_usd_per_hour": 1187.5,
        "ai_revenue_usd_per_hour": 2000.0,
        "power_cost_usd_per_hour": 588.0,
    }
    figures.update(overrides)
    return figures


def test_two_instances_in_one_process_do_not_clash() -> None:
    a, b = make_metrics(), make_metrics()
    a.job_submitted("flex", "all-minilm-l6-v2")
    assert value(a, "hashserve_jobs_submitted_total", tier="flex", model="all-minilm-l6-v2") == 1
    assert value(b, "hashserve_jobs_submitted_total", tier="flex", model="all-minilm-l6-v2") == 0


def test_a_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    m = SchedulerMetrics(registry=registry)
    assert m.registry is registry
    m.set_hashprice(40.0)
    assert registry.get_sample_value("hashserve_hashprice_usd_per_phs_day") == 40.0


def test_bounded_series_start_at_zero() -> None:
    m = make_metrics()
    assert value(m, "hashserve_jobs_finished_total", tier="flex", outcome="expired") == 0
    assert value(m, "hashserve_jobs_queued", tier="interactive") == 0
    assert value(m, "hashserve_jobs_late_total", tier="interactive") == 0
    assert value(m, "hashserve_placement_outcomes_total", outcome="unplaceable") == 0
    assert value(m, "hashserve_jobs_reassigned_total", reason="lease_expired") == 0


def test_unknown_model_is_counted_as_other() -> None:
    m = make_metrics()
    m.job_submitted(Tier.INTERACTIVE, "gpt-9000")
    assert value(m, "hashserve_jobs_submitted_total", tier="interactive", model="other") == 1
    assert value(m, "hashserve_jobs_submitted_total", tier="interactive", model="gpt-9000") is None


def test_without_a_catalogue_model_names_pass_through() -> None:
    m = SchedulerMetrics()
    m.job_submitted("standard", "my-model")
    assert value(m, "hashserve_jobs_submitted_total", tier="standard", model="my-model") == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.job_submitted("premium", "all-minilm-l6-v2"), "tier"),
        (lambda m: m.job_finished("flex", "all-minilm-l6-v2", "exploded"), "outcome"),
        (lambda m: m.set_queue_depth("TIER_FLEX", 3), "tier"),
        (lambda m: m.placement_outcome("maybe"), "outcome"),
        (lambda m: m.job_reassigned("bored"), "reason"),
    ],
)
def test_values_outside_the_closed_sets_raise(
    call: Callable[[SchedulerMetrics], None], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(make_metrics())


def test_succeeded_job_over_its_target_counts_as_late() -> None:
    m = make_metrics()
    # 0.5 s queued + 1.8 s running = 2.3 s, over the 2 s interactive embedding target.
    m.job_finished(
        Tier.INTERACTIVE, "all-minilm-l6-v2", "succeeded",
        queue_s=0.5, run_s=1.8, latency_target_s=2.0,
    )  # fmt: skip
    # 0.1 + 0.2 = 0.3 s: on time.
    m.job_finished(
        "interactive", "all-minilm-l6-v2", "succeeded",
        queue_s=0.1, run_s=0.2, latency_target_s=2.0,
    )  # fmt: skip
    assert value(m, "hashserve_jobs_finished_total", tier="interactive", outcome="succeeded") == 2
    assert value(m, "hashserve_jobs_late_total", tier="interactive") == 1
    assert value(m, "hashserve_job_latency_seconds_count", tier="interactive") == 2
    assert value(m, "hashserve_job_latency_seconds_sum", tier="interactive") == pytest.approx(2.6)
    # 2.3 s falls in the le=5 bucket, not le=2; 0.3 s in le=0.5.
    assert value(m, "hashserve_job_latency_seconds_bucket", tier="interactive", le="2.0") == 1
    assert value(m, "hashserve_job_latency_seconds_bucket", tier="interactive", le="5.0") == 2
    assert value(m, "hashserve_job_queue_wait_seconds_sum", tier="interactive") == pytest.approx(
        0.6
    )
    assert value(m, "hashserve_job_run_seconds_count", model="all-minilm-l6-v2") == 2


def test_explicit_latency_overrides_queue_plus_run() -> None:
    m = make_metrics()
    # Result transport added 0.4 s: 0.5 + 1.0 = 1.5 but the customer waited 1.9 s < 2 s.
    m.job_finished(
        "interactive", "all-minilm-l6-v2", "succeeded",
        queue_s=0.5, run_s=1.0, latency_s=1.9, latency_target_s=2.0,
    )  # fmt: skip
    assert value(m, "hashserve_job_latency_seconds_sum", tier="interactive") == pytest.approx(1.9)
    assert value(m, "hashserve_jobs_late_total", tier="interactive") == 0


def test_failed_and_cancelled_jobs_are_counted_but_not_timed_as_latency() -> None:
    m = make_metrics()
    m.job_finished("standard", "smollm2-135m-instruct", "failed", queue_s=3.0, run_s=9.0)
    m.job_finished("flex", "smollm2-135m-instruct", "cancelled")  # never left the queue
    assert value(m, "hashserve_jobs_finished_total", tier="standard", outcome="failed") == 1
    assert value(m, "hashserve_jobs_finished_total", tier="flex", outcome="cancelled") == 1
    assert value(m, "hashserve_job_latency_seconds_count", tier="standard") == 0
    assert value(m, "hashserve_job_queue_wait_seconds_count", tier="standard") == 1
    assert value(m, "hashserve_job_queue_wait_seconds_count", tier="flex") == 0
    assert value(m, "hashserve_job_run_seconds_sum", model="smollm2-135m-instruct") == 9.0


def test_queue_depth_and_placement() -> None:
    m = make_metrics()
    m.set_queue_depth("flex", 17)
    m.set_queue_depth("flex", 4)
    m.observe_placement_s(0.0002)
    m.placement_outcome("deferred", 3)
    m.job_reassigned("lease_expired")
    assert value(m, "hashserve_jobs_queued", tier="flex") == 4
    assert value(m, "hashserve_placement_decision_seconds_count") == 1
    assert value(m, "hashserve_placement_decision_seconds_bucket", le="0.00025") == 1
    assert value(m, "hashserve_placement_decision_seconds_bucket", le="0.0001") == 0
    assert value(m, "hashserve_placement_outcomes_total", outcome="deferred") == 3
    assert value(m, "hashserve_jobs_reassigned_total", reason="lease_expired") == 1


def test_site_figures_are_exported_in_base_units() -> None:
    m = make_metrics()
    m.set_site("tx-1", "us", **site_figures(), power_cap_mw=20.0, opportunity_price_usd_per_mwh=95)
    s = {"site": "tx-1", "region": "us"}
    assert value(m, "hashserve_site_power_price_usd_per_mwh", **s) == 42.0
    assert value(m, "hashserve_site_mining_revenue_usd_per_mwh", **s) == 95.0
    assert value(m, "hashserve_site_opportunity_price_usd_per_mwh", **s) == 95.0
    # 12.5 MW = 12,500,000 W; 1.25 MW = 1,250,000 W; cap 20 MW.
    assert value(m, "hashserve_site_power_watts", **s, use="mining") == 12_500_000
    assert value(m, "hashserve_site_power_watts", **s, use="ai") == 1_250_000
    assert value(m, "hashserve_site_power_watts", **s, use="curtailed") == 0
    assert value(m, "hashserve_site_power_cap_watts", **s) == 20_000_000
    assert value(m, "hashserve_site_revenue_usd_per_hour", **s, source="ai") == 2000.0
    assert value(m, "hashserve_site_power_cost_usd_per_hour", **s) == 588.0
    # The site's counters and flags exist from its first tick.
    assert value(m, "hashserve_site_mode_changes_total", **s) == 0
    assert value(m, "hashserve_site_feed_fallback", **s) == 0


def test_mode_changes_fallback_and_heartbeat() -> None:
    m = make_metrics()
    m.mode_changed("tx-1", "us")
    m.mode_changed("tx-1", "us")
    m.set_feed_fallback("tx-1", "us", True)
    m.site_heartbeat("tx-1", "us", 1_700_000_123.5)
    s = {"site": "tx-1", "region": "us"}
    assert value(m, "hashserve_site_mode_changes_total", **s) == 2
    assert value(m, "hashserve_site_feed_fallback", **s) == 1
    assert value(m, "hashserve_site_last_heartbeat_timestamp_seconds", **s) == 1_700_000_123.5


def test_forget_site_drops_all_its_series() -> None:
    m = make_metrics()
    m.set_site("tx-1", "us", **site_figures())
    m.site_heartbeat("tx-1", "us", 1.0)
    m.set_site("no-1", "eu", **site_figures())
    m.forget_site("tx-1")
    m.forget_site("never-seen")  # harmless
    text = _exposition(m)
    assert 'site="tx-1"' not in text
    assert value(m, "hashserve_site_power_price_usd_per_mwh", site="no-1", region="eu") == 42.0


def test_a_site_that_changes_region_leaves_no_old_series() -> None:
    m = make_metrics()
    m.set_site("x", "us", **site_figures())
    m.set_site("x", "eu", **site_figures(price_usd_per_mwh=50.0))
    assert value(m, "hashserve_site_power_price_usd_per_mwh", site="x", region="us") is None
    assert value(m, "hashserve_site_power_price_usd_per_mwh", site="x", region="eu") == 50.0


def test_market_and_feeds() -> None:
    m = make_metrics()
    m.set_hashprice(41.5)
    m.set_btc_price(97_000.0)
    m.set_feed_age("power", 1800.0, 7200.0, zone="ERCOT-West")
    m.set_feed_age("bitcoin", 30.0, 3600.0)
    assert value(m, "hashserve_hashprice_usd_per_phs_day") == 41.5
    assert value(m, "hashserve_bitcoin_price_usd") == 97_000.0
    assert value(m, "hashserve_feed_age_seconds", feed="power", zone="ERCOT-West") == 1800.0
    assert value(m, "hashserve_feed_max_age_seconds", feed="power", zone="ERCOT-West") == 7200.0
    assert value(m, "hashserve_feed_age_seconds", feed="bitcoin", zone="") == 30.0


def test_node_state_in_base_units_and_forget() -> None:
    m = make_metrics()
    m.set_node(
        "n1", "tx-1", connected=True, gpu_utilization=0.75, power_draw_kw=1.2, jobs_running=3
    )
    n = {"node": "n1", "site": "tx-1"}
    assert value(m, "hashserve_node_connected", **n) == 1
    assert value(m, "hashserve_node_draining", **n) == 0
    assert value(m, "hashserve_node_gpu_utilization_ratio", **n) == 0.75
    assert value(m, "hashserve_node_power_draw_watts", **n) == pytest.approx(1200.0)  # 1.2 kW
    assert value(m, "hashserve_node_jobs_running", **n) == 3
    m.set_node(
        "n1", "tx-1", connected=False, gpu_utilization=0.0, power_draw_kw=0.1, jobs_running=0
    )
    assert value(m, "hashserve_node_connected", **n) == 0
    m.forget_node("n1")
    m.forget_node("n1")  # twice is harmless
    assert 'node="n1"' not in _exposition(m)


def test_a_node_that_moves_site_leaves_no_old_series() -> None:
    m = make_metrics()
    m.set_node("n1", "a", connected=True, gpu_utilization=0, power_draw_kw=1, jobs_running=0)
    m.set_node("n1", "b", connected=True, gpu_utilization=0, power_draw_kw=1, jobs_running=0)
    assert value(m, "hashserve_node_connected", node="n1", site="a") is None
    assert value(m, "hashserve_node_connected", node="n1", site="b") == 1


def _exposition(m: SchedulerMetrics) -> str:
    return generate_latest(m.registry).decode()


def test_metering_counts_tokens_and_charges_per_tenant() -> None:
    m = make_metrics()
    m.job_metered("acme", "flex", "all-minilm-l6-v2", 120, 0, 0.001)
    m.job_metered("acme", "flex", "all-minilm-l6-v2", 30, 0, 0.0005)
    labels = {"tenant": "acme", "model": "all-minilm-l6-v2", "tier": "flex"}
    assert value(m, "hashserve_tenant_tokens_total", direction="prompt", **labels) == 150
    assert value(m, "hashserve_tenant_tokens_total", direction="completion", **labels) == 0
    assert value(m, "hashserve_tenant_charged_usd_total", **labels) == pytest.approx(0.0015)
