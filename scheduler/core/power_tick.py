"""The power half of the scheduler's tick, as every driver runs it: the live control loop on the
wall clock and the job-level backtest on a virtual one (`scheduler/backtest/twin.py`).

`PowerTick.run` takes the scheduler core, the market and the ops state at one instant and:
1. books the interval that just ended (the plan in force since the last run) into the ledger:
   mining, AI, idle and curtailed MWh, mining revenue, power cost, and the AI revenue of the jobs
   that finished in it, from the tokens they actually used;
2. calls the pure `power_step` for the new plan;
3. tells the core which sites may take work, how much (the busy power each plan switched on),
   and how each site looks to the placer (a site whose plan refused the work running there takes
   none for the rest of that market hour);
4. preempts running work where a curtailment says the site must shed (`SchedulerCore.shed`).

It returns what the driver must carry out: the step's power modes and the preemption `Step`.
Nothing here does I/O; the clock is the caller's (`now_s` for the core's timers, `market_now_s`
for the market hour the ledger books, which differ on a compressed clock).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.core.accounting import HOUR_S, Accounting, IntervalAccount, account_interval
from scheduler.core.fleet import Fleet
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.market import MarketSnapshot
from scheduler.core.planner import PlannerConfig, PowerPlan, SiteOverride
from scheduler.core.power_step import PowerInputs, PowerStep, PriceHistory, power_step
from scheduler.core.scheduler import SchedulerCore, Step


@dataclass(frozen=True)
class PowerTickResult:
    step: PowerStep
    shed: Step  # the preemptions a curtailment ordered (the driver applies it like any step)
    booked: tuple[IntervalAccount, ...]  # the interval that ended, per site


@dataclass
class PowerTick:
    fleet: Fleet
    config: PlannerConfig
    ai_value_floor_usd_per_mwh: float = 1000.0
    window_lead_s: float = 120.0
    accounting: Accounting = field(default_factory=Accounting)
    plan: PowerPlan | None = None
    market: MarketSnapshot | None = None
    # The market time the current plan took effect at (the start of the next booked interval).
    plan_market_s: float | None = None
    # AI revenue of each site's last booked interval, per market hour (ops screens, metrics).
    ai_revenue_usd_per_hour: dict[str, float] = field(default_factory=dict)
    # Sites whose plan refused running work, and the market hour it did so in: they take no new
    # work for the rest of that hour. Otherwise the work the refusal shed would be placed there
    # again at once (the plan, with nothing running, has room on paper), and shed again.
    refused_hour: dict[str, float] = field(default_factory=dict)
    _revenue_usd: dict[str, float] = field(default_factory=dict)

    def run(
        self,
        core: SchedulerCore,
        market: MarketSnapshot,
        overrides: Mapping[str, SiteOverride],
        now_s: float,
        market_now_s: float,
        price_history: Mapping[str, PriceHistory],
    ) -> PowerTickResult:
        booked = self._book(market_now_s)
        step = power_step(
            PowerInputs(
                fleet=self.fleet,
                market=market,
                nodes=list(core.nodes.values()),
                previous=self.plan,
                overrides=overrides,
                now_s=now_s,
                config=self.config,
                ai_value_floor_usd_per_mwh=self.ai_value_floor_usd_per_mwh,
                price_history=price_history,
                window_lead_s=self.window_lead_s,
            )
        )
        self.plan, self.market, self.plan_market_s = step.plan, market, market_now_s
        hour = market_now_s // HOUR_S
        for site, p in step.plan.sites.items():
            if p.preempt_mw > 0:
                self.refused_hour[site] = hour
        closed = {site for site, h in self.refused_hour.items() if h == hour}
        core.site_views = step.site_views
        core.serving_sites = step.serving_sites - closed
        # What each site's plan switched on is what may run there: placement stops at it.
        core.site_budget_mw = {site: p.serving_mw for site, p in step.plan.sites.items()}
        # A curtailment is enforced: running AI work over what the plan admits is preempted
        # (and, its site now closed, placed elsewhere by the next schedule).
        shed = core.shed(step.shed_orders, now_s)
        return PowerTickResult(step=step, shed=shed, booked=booked)

    def observe(self, records: Iterable[JobRecord]) -> None:
        """Jobs that changed: a success earns its site what its tokens sell for."""
        for rec in records:
            if rec.state is JobState.SUCCEEDED and rec.site:
                self._revenue_usd[rec.site] = (
                    self._revenue_usd.get(rec.site, 0.0) + rec.charged_usd(rec.tokens_used)
                )

    def _book(self, market_now_s: float) -> tuple[IntervalAccount, ...]:
        previous, start_s = self.plan, self.plan_market_s
        if previous is None or start_s is None:
            return ()
        duration_s = market_now_s - start_s
        if duration_s <= 0:
            return ()
        booked = []
        for site, p in previous.sites.items():
            revenue = self._revenue_usd.pop(site, 0.0)
            self.ai_revenue_usd_per_hour[site] = revenue / (duration_s / HOUR_S)
            interval = account_interval(p, self.market, duration_s, revenue, start_s=start_s)
            self.accounting.add(interval)
            booked.append(interval)
        return tuple(booked)


__all__ = ["PowerTick", "PowerTickResult"]
