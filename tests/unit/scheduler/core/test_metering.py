"""Metering: tokens and charges per tenant, model and tier, and the same charges as the
accounting's AI revenue."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core.fleet import Fleet
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.metering import MeteredJob, aggregate
from scheduler.core.planner import PlannerConfig
from scheduler.core.power_tick import PowerTick
from scheduler.core.scheduler import SchedulerCore
from tests.unit.scheduler.core.builders import make_record
from tests.unit.scheduler.core.test_planner import T0, make_market, make_site


def succeeded(job_id: str, tenant: str, tier: str, used: int, completion: int,
              finished_s: float, value_usd: float = 0.001) -> JobRecord:
    rec = make_record(job_id, tier=tier, model="gen", tenant=tenant, input_tokens=100,
                      output_tokens_est=100)
    return replace(rec, spec=replace(rec.spec, value_usd=value_usd), state=JobState.SUCCEEDED,
                   site="s1", tokens_used=used, completion_tokens=completion,
                   finished_s=finished_s)


def test_usage_is_summed_per_tenant_model_and_tier_and_hour() -> None:
    jobs = [succeeded("a", "acme", "standard", 150, 50, 10.0),
            succeeded("b", "acme", "standard", 200, 100, 3700.0),
            succeeded("c", "acme", "flex", 100, 0, 20.0),
            succeeded("d", "beta", "standard", 200, 100, 30.0)]
    metered = [m for m in map(MeteredJob.of, jobs) if m is not None]
    total = {(r.tenant, r.tier): r for r in aggregate(metered)}
    acme = total[("acme", "standard")]
    assert (acme.jobs, acme.prompt_tokens, acme.completion_tokens) == (2, 200, 150)
    # $0.001 for an estimate of 200 tokens: 150 and 200 used.
    assert acme.charged_usd == pytest.approx(0.001 * 350 / 200)
    assert acme.hour_start_s is None and acme.total_tokens == 350
    hourly = aggregate(metered, hourly=True)
    assert [(r.hour_start_s, r.tenant, r.tier) for r in hourly] == [
        (0.0, "acme", "flex"), (0.0, "acme", "standard"), (0.0, "beta", "standard"),
        (3600.0, "acme", "standard")]


def test_only_succeeded_jobs_are_metered() -> None:
    job = succeeded("a", "acme", "standard", 150, 50, 10.0)
    assert MeteredJob.of(replace(job, state=JobState.FAILED)) is None
    assert MeteredJob.of(job) is not None


def test_the_journals_columns_give_the_same_charge_as_the_record() -> None:
    rec = succeeded("a", "acme", "standard", 150, 50, 10.0)
    from_rec = MeteredJob.of(rec)
    from_cols = MeteredJob.from_columns("acme", "gen", "standard", 10.0, 0.001, 200, 150, 50)
    assert from_rec == from_cols


def test_the_accountings_ai_revenue_is_the_metered_charge() -> None:
    fleet = Fleet(sites=(make_site(cap_mw=30.0),), fx_usd_per_unit={"USD": 1.0})
    tick = PowerTick(fleet, PlannerConfig())
    core = SchedulerCore()
    jobs = [succeeded(f"j{i}", "acme" if i % 2 else "beta", "standard", 100 + i, i, T0 + i,
                      value_usd=0.0001 * (i + 1)) for i in range(10)]
    tick.run(core, make_market(50.0, t_s=T0), {}, T0, T0, {})
    tick.observe(jobs)
    tick.run(core, make_market(50.0, t_s=T0 + 600), {}, T0 + 600, T0 + 600, {})
    revenue = tick.accounting.totals().ai_revenue_usd
    charged = sum(r.charged_usd for r in aggregate(
        m for m in map(MeteredJob.of, jobs) if m is not None))
    assert revenue > 0 and revenue == pytest.approx(charged, rel=1e-12)
