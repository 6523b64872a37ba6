"""The live edge of the power tick: feed in, `core.power_step` decides, this carries it out.

Where the power mode is decided is `scheduler/core/power_step.py` (demand and its value, the plan,
site views and outlooks, may-serve, shed orders, mode changes): pure, so the backtester can drive
the same step. Every plan interval this edge reads the market feed and the replayed price history,
calls it, then carries the result out:
- site views and serving sites to the scheduler core, shed orders to `SchedulerCore.shed` (a
  curtailment preempts running work, it does not only stop new placements);
- a power mode to each agent whose site's split changed, or that has not had it yet (encoded by
  `scheduler/api/agent_codec.py`);
- accounting per site and hour, metrics, and a journal row for every mining-level change with the
  planner's reasons ("why did site Z curtail at 14:00").
Ops overrides and curtailment windows are held here, journalled, and passed to the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from scheduler.api import agent_codec
from scheduler.core.accounting import HOUR_S, Accounting, IntervalAccount
from scheduler.core.clock import Clock
from scheduler.core.fleet import Fleet
from scheduler.core.jobs import JobRecord
from scheduler.core.market import MarketSnapshot, price_field
from scheduler.core.models import Tier
from scheduler.core.outlook import LivePriceBook
from scheduler.core.planner import (
    CurtailmentWindow,
    ForceMode,
    PlannerConfig,
    PowerPlan,
    SiteOverride,
)
from scheduler.core.power_step import PRICE_HISTORY_HOURS, PriceHistory, SetPowerMode
from scheduler.core.power_tick import PowerTick
from scheduler.core.scheduler import NodeState, Step
from scheduler.feeds.base import MarketFeed
from scheduler.feeds.live import PolledSource
from scheduler.feeds.replay import ReplayFeed
from scheduler.metrics.registry import SchedulerMetrics

if TYPE_CHECKING:
    from scheduler.control.loop import ControlLoop

log = logging.getLogger("hashserve.scheduler.power")
# Market hours of accounting kept in memory: a week. On a compressed clock the ledger would
# otherwise grow by a row per site every few seconds for as long as the scheduler runs.
ACCOUNTING_KEEP_S = 7 * 24 * 3600.0
# A published hashprice index older than this is not compared (indexes publish daily or faster).
INDEX_MAX_AGE_S = 2 * 86_400.0


class PowerController:
    def __init__(
        self,
        loop: ControlLoop,
        fleet: Fleet,
        feed: MarketFeed,
        clock: Clock,
        config: PlannerConfig,
        replay: ReplayFeed | None = None,
        interval_s: float = 2.0,
        ai_value_floor_usd_per_mwh: float = 1000.0,
        window_lead_s: float = 120.0,
        accounting_retention_s: float = 400 * 86_400.0,
        hashprice_index: PolledSource | None = None,
    ) -> None:
        self.loop = loop
        self.fleet = fleet
        self.feed = feed
        self.clock = clock
        self.config = config
        self.replay = replay
        self.interval_s = interval_s
        self.ai_value_floor_usd_per_mwh = ai_value_floor_usd_per_mwh
        self.window_lead_s = window_lead_s
        self.accounting_retention_s = accounting_retention_s
        self.hashprice_index = hashprice_index
        # Live prices by zone and market hour (the journal keeps them; the outlook reads them).
        self.live_prices = LivePriceBook()
        self._pruned_hour = math.nan
        self._prices_pruned_hour = math.nan
        self.overrides: dict[str, SiteOverride] = {}
        # The tick of the core that the backtester's twin runs too: ledger, plan, shedding.
        self.ticker = PowerTick(fleet, config, ai_value_floor_usd_per_mwh, window_lead_s)
        self.metrics: SchedulerMetrics | None = None
        self._modes: dict[str, SetPowerMode] = {}
        # The mode each agent was last sent, on which session (a reconnect is a new session).
        self._mode_sent: dict[str, tuple[object, SetPowerMode]] = {}
        self._regions = {s.name: s.region for s in fleet.sites}
        self._task: asyncio.Task[None] | None = None

    @property
    def plan(self) -> PowerPlan | None:
        return self.ticker.plan

    @property
    def market(self) -> MarketSnapshot | None:
        return self.ticker.market

    @property
    def accounting(self) -> Accounting:
        return self.ticker.accounting

    @property
    def ai_revenue_usd_per_hour(self) -> dict[str, float]:
        return self.ticker.ai_revenue_usd_per_hour

    # ----- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._restore_overrides()
        # The last week of the ledger back in memory (the journal has all of it).
        latest = self._market_time(self.clock.now_s())
        for row in self.loop.journal.accounting_rows(start_s=latest - ACCOUNTING_KEEP_S):
            self.accounting.put(row)
        for price in self.loop.journal.market_prices(
            start_s=latest - (PRICE_HISTORY_HOURS + 1) * HOUR_S
        ):
            self.live_prices.put(price)
        self.tick(self.clock.now_s())
        self._task = asyncio.create_task(self._run(), name="power-planner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._sleep_s(self.clock.now_s()))
            try:
                self.tick(self.clock.now_s())
            except Exception:  # a bad market value must not stop planning for good
                log.exception("power planning tick failed")

    # ----- one tick -------------------------------------------------------------------------

    def tick(self, now_s: float) -> PowerPlan:
        """One plan interval: the core's `PowerTick`, then carry out what it decided."""
        previous = self.plan
        market = self.feed.snapshot(now_s)
        result = self.ticker.run(
            self.loop.core, market, self.overrides, now_s, self._market_time(now_s),
            self._price_history(now_s),
        )
        plan = result.step.plan
        self._journal_ledger(result.booked)
        if result.shed.moves:
            log.warning(
                "shedding AI load: %d running jobs preempted at %s",
                len(result.shed.moves), ", ".join(sorted({m.site for m in result.shed.moves})),
            )
            self.loop.apply(result.shed)
        self._modes = {m.site: m for m in result.step.modes}
        self.send_modes()
        self._record(previous, plan, market, now_s)
        self._keep_live_prices(market, now_s)
        self.loop.kick()
        return plan

    def _sleep_s(self, now_s: float) -> float:
        """Until the next plan interval, or the next market hour if that comes first: a new
        hour's price takes effect when the hour starts, not up to an interval later."""
        if self.replay is None:
            return self.interval_s
        history_s = self.replay.history_time(now_s)
        next_hour_s = self.replay.scheduler_time((history_s // HOUR_S + 1) * HOUR_S)
        # A few ms past the boundary, so that the feed is certain to quote the new hour.
        return max(min(self.interval_s, next_hour_s - now_s + 0.005), 0.005)

    def _price_history(self, now_s: float) -> dict[str, PriceHistory]:
        if self.replay is None:
            return {}
        history = self.replay.price_history(
            now_s, {s.price_zone for s in self.fleet.sites if s.price_zone},
            self.fleet.fx_usd_per_unit, PRICE_HISTORY_HOURS,
        )
        # The hours live sources priced replace the replay's in the past week; a live day-ahead
        # market's published prices replace the past week's means ahead.
        current_hour_s = (self._market_time(now_s) // HOUR_S) * HOUR_S
        for zone, past in history.items():
            history[zone] = replace(past, past_usd_per_mwh=self.live_prices.overlay(
                zone, past.past_usd_per_mwh, current_hour_s
            ))
        live = self._polled()
        for zone, past in history.items():
            for source in live:
                published = source.published(zone)
                rate = (self.fleet.fx_usd_per_unit.get(published.currency)
                        if published is not None else None)
                if published is None or rate is None:
                    continue
                history[zone] = replace(past, published_usd_per_mwh={
                    t: price * rate for t, price in published.by_hour_start_s.items()
                })
                break
        return history

    def send_modes(self) -> None:
        """Each connected agent gets its site's power mode when it differs from the last one it
        got: on a change of the split, and when it (re)connects."""
        for node_id in list(self.loop.sessions):
            self._send_mode_to(node_id)

    def _send_mode_to(self, node_id: str) -> None:
        session = self.loop.sessions.get(node_id)
        node = self.loop.core.nodes.get(node_id)
        mode = self._modes.get(node.info.site) if node is not None else None
        if session is None or mode is None:
            return
        sent = self._mode_sent.get(node_id)
        if sent is not None and sent[0] is session and mode.same_split(sent[1]):
            return
        session.send(agent_codec.power_mode(mode))
        self._mode_sent[node_id] = (session, mode)

    def _journal_ledger(self, booked: Sequence[IntervalAccount]) -> None:
        """The journal keeps the ledger (the accounting API reads it for any range); memory keeps
        the last week for the totals that ops screens show."""
        if not booked:
            return
        touched = {(i.site, hour) for i in booked for hour in self.accounting.hours_of(i)}
        rows = [
            r for site, hour in sorted(touched)
            if (r := self.accounting.row(site, hour)) is not None
        ]
        self.loop.journal.put_accounting_rows(rows)
        start_s = booked[0].start_s
        self.accounting.forget_before(start_s - ACCOUNTING_KEEP_S)
        hour = (start_s // HOUR_S) * HOUR_S
        if hour != self._pruned_hour:
            self._pruned_hour = hour
            self.loop.journal.forget_accounting_before(start_s - self.accounting_retention_s)

    def _polled(self) -> list[PolledSource]:
        return [s for s in getattr(self.feed, "sources", ()) if isinstance(s, PolledSource)]

    def _keep_live_prices(self, market: MarketSnapshot, now_s: float) -> None:
        """Each zone's price, when a polled source gave it, into the book and the journal, by
        market hour (in USD, as the planner used it)."""
        names = {s.name for s in self._polled()}
        if not names:
            return
        hour_s = (self._market_time(now_s) // HOUR_S) * HOUR_S
        changed = []
        for zone, price in market.price_usd_per_mwh_by_zone.items():
            field = price_field(zone)
            source = market.sources.get(field)
            if source not in names or not math.isfinite(price):
                continue
            row = self.live_prices.observe(
                zone, hour_s, market.as_of_s.get(field, now_s), price, source
            )
            if row is not None:
                changed.append(row)
        if changed:
            self.loop.journal.put_market_prices(changed)
        if hour_s != self._prices_pruned_hour:
            self._prices_pruned_hour = hour_s
            self.live_prices.forget_before(hour_s - (PRICE_HISTORY_HOURS + 1) * HOUR_S)
            self.loop.journal.forget_market_prices_before(hour_s - self.accounting_retention_s)

    def _market_time(self, now_s: float) -> float:
        return self.replay.history_time(now_s) if self.replay is not None else now_s

    def _record(
        self, previous: PowerPlan | None, plan: PowerPlan, market: MarketSnapshot, now_s: float
    ) -> None:
        rows = []
        for site, p in plan.sites.items():
            old = previous.sites.get(site) if previous is not None else None
            if old is None or abs(old.mining_mw - p.mining_mw) > 1e-6:
                rows.append(
                    (
                        now_s,
                        "power_mode",
                        site,
                        json.dumps(
                            {
                                "mining_mw": round(p.mining_mw, 4),
                                "ai_mw": round(p.ai_mw, 6),
                                "curtailed_mw": round(p.curtailed_mw, 4),
                                "price_usd_per_mwh": round(p.price_usd_per_mwh, 2),
                                "r_mine_usd_per_mwh": round(p.r_mine_usd_per_mwh, 2),
                                "fallback": p.fallback,
                                "reasons": list(p.reasons),
                            }
                        ),
                    )
                )
                if old is not None and self.metrics is not None:
                    self.metrics.mode_changed(site, self._regions[site])
        if rows:
            self.loop.journal.write_jobs([], rows)
        if self.metrics is not None:
            self._export(plan, market, now_s)

    def _export(self, plan: PowerPlan, market: MarketSnapshot, now_s: float) -> None:
        m = self.metrics
        assert m is not None
        if market.hashprice_usd_per_phs_day is not None:
            m.set_hashprice(market.hashprice_usd_per_phs_day)
        if market.btc_usd is not None:
            m.set_btc_price(market.btc_usd)
        for site, p in plan.sites.items():
            region = self._regions[site]
            price = p.price_usd_per_mwh if math.isfinite(p.price_usd_per_mwh) else 0.0
            m.set_site(
                site,
                region,
                price_usd_per_mwh=price,
                r_mine_usd_per_mwh=p.r_mine_usd_per_mwh,
                mining_mw=p.mining_mw,
                ai_mw=p.ai_mw,
                idle_mw=p.idle_gpu_mw,
                curtailed_mw=p.curtailed_mw,
                mining_revenue_usd_per_hour=p.mining_mw * p.r_mine_usd_per_mwh,
                ai_revenue_usd_per_hour=self.ai_revenue_usd_per_hour.get(site, 0.0),
                power_cost_usd_per_hour=p.load_mw * price,
                opportunity_price_usd_per_mwh=p.opportunity_price_usd_per_mwh,
                power_cap_mw=p.cap_mw,
            )
            m.set_feed_fallback(site, region, p.fallback)
        polled = self._polled()
        if self.hashprice_index is not None:
            polled.append(self.hashprice_index)
            index = self.hashprice_index.quotes(now_s).hashprice_usd_per_phs_day
            if (index is not None and market.hashprice_usd_per_phs_day is not None
                    and now_s - index.as_of_s <= INDEX_MAX_AGE_S):
                m.hashprice_index.set(index.value)
                m.hashprice_index_difference.set(market.hashprice_usd_per_phs_day - index.value)
        for source in polled:
            health = source.health()
            m.source_errors.labels(health.source).set(health.errors)
            m.source_up.labels(health.source).set(
                1.0 if health.last_error is None and health.last_ok_s is not None else 0.0
            )
            if health.last_ok_s is not None:
                m.source_age.labels(health.source).set(max(now_s - health.last_ok_s, 0.0))
        if self.replay is not None:
            m.replay_looping.set(1.0 if self.replay.loop else 0.0)
            m.replay_loops.set(self.replay.loops(now_s))
        for field, as_of in market.as_of_s.items():
            zone = field[6:-1] if field.startswith("price[") else ""
            name = "price" if zone else field
            m.set_feed_age(
                name, max(now_s - as_of, 0.0), 2 * 3600.0 / self.config.clock_speedup, zone
            )

    # ----- what happened to jobs (a LoopObserver) ---------------------------------------------

    def on_submitted(self, records: Sequence[JobRecord]) -> None:
        pass

    def on_step(self, step: Step, now_s: float, decide_s: float) -> None:
        # Revenue from the tokens actually used, as the agents reported them.
        self.ticker.observe(step.changed)

    def on_node_forgotten(self, node_id: str) -> None:
        return None

    def on_commit(self, submits: int, seconds: float) -> None:
        return None

    def on_node(self, node: NodeState, now_s: float) -> None:
        # A node heard from (a new session's first heartbeat): it gets the mode if it lacks it.
        self._send_mode_to(node.info.node_id)

    def on_queue(self, jobs: Mapping[str, JobRecord],
                 queued_by_tier: Mapping[Tier, int]) -> None:
        pass

    # ----- ops ------------------------------------------------------------------------------

    # Overrides and windows live in the journal (ops state "site:NAME"), written before they
    # take effect: a scheduler restarted by Ray, or a standby taking over, keeps obeying them.

    def set_override(self, site: str, mode: str, cap_mw: float | None) -> SiteOverride:
        self.fleet.site(site)  # KeyError for an unknown site
        old = self.overrides.get(site, SiteOverride())
        force = None if mode in ("", "auto") else ForceMode(mode)
        new = replace(old, force=force, cap_mw=cap_mw if cap_mw else None)
        self._store_override(site, new)
        self.tick(self.clock.now_s())
        return new

    def schedule_curtailment(
        self, site: str, start_s: float, end_s: float, reason: str, max_load_mw: float = 0.0
    ) -> CurtailmentWindow:
        self.fleet.site(site)
        old = self.overrides.get(site, SiteOverride())
        now_s = self.clock.now_s()
        windows = tuple(w for w in old.windows if w.end_s > now_s)
        window = CurtailmentWindow(
            start_s, end_s, max_load_mw, reason or "demand response",
            window_id=f"dr_{uuid.uuid4().hex[:12]}",
        )
        self._store_override(site, replace(old, windows=(*windows, window)))
        self.tick(now_s)
        return window

    def curtailments(self, site: str = "") -> list[tuple[str, CurtailmentWindow]]:
        """(site, window) for every window that has not ended, by start."""
        now_s = self.clock.now_s()
        found = [
            (name, w)
            for name, override in self.overrides.items()
            if not site or name == site
            for w in override.windows
            if w.end_s > now_s
        ]
        return sorted(found, key=lambda sw: (sw[1].start_s, sw[0], sw[1].window_id))

    def cancel_curtailment(self, window_id: str) -> str:
        """End a window now (or drop it before it starts); the site's name. KeyError: unknown."""
        for site, override in self.overrides.items():
            kept = tuple(w for w in override.windows if w.window_id != window_id)
            if len(kept) != len(override.windows):
                self._store_override(site, replace(override, windows=kept))
                self.tick(self.clock.now_s())
                return site
        raise KeyError(window_id)

    def _store_override(self, site: str, override: SiteOverride) -> None:
        if override == SiteOverride():
            self.loop.journal.put_ops_state(f"site:{site}", None)
            self.overrides.pop(site, None)
            return
        self.loop.journal.put_ops_state(f"site:{site}", override_to_json(override))
        self.overrides[site] = override

    def _restore_overrides(self) -> None:
        now_s = self.clock.now_s()
        for key, value in self.loop.journal.load_ops_state().items():
            if not key.startswith("site:"):
                continue
            site = key.removeprefix("site:")
            try:
                self.fleet.site(site)
                override = override_from_json(value)
            except (KeyError, ValueError) as err:
                log.warning("ignoring stored override of %s: %s", site, err)
                continue
            live = tuple(w for w in override.windows if w.end_s > now_s)
            override = replace(override, windows=live)
            self.overrides[site] = override
        if self.overrides:
            log.info("restored ops overrides of %s", ", ".join(sorted(self.overrides)))


def override_to_json(override: SiteOverride) -> str:
    return json.dumps({
        "force": override.force.value if override.force is not None else None,
        "cap_mw": override.cap_mw,
        "windows": [
            {"id": w.window_id, "start_s": w.start_s, "end_s": w.end_s,
             "max_load_mw": w.max_load_mw, "reason": w.reason}
            for w in override.windows
        ],
    })


def override_from_json(text: str) -> SiteOverride:
    """The stored form back; ValueError when it is not one."""
    try:
        doc = json.loads(text)
        return SiteOverride(
            force=ForceMode(doc["force"]) if doc.get("force") else None,
            cap_mw=float(doc["cap_mw"]) if doc.get("cap_mw") is not None else None,
            windows=tuple(
                CurtailmentWindow(
                    float(w["start_s"]), float(w["end_s"]), float(w["max_load_mw"]),
                    str(w["reason"]), window_id=str(w["id"]),
                )
                for w in doc.get("windows", [])
            ),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"not a stored override: {err}") from err
