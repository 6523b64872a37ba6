"""hashserve's own policy: the live core (power planner and placer) driven hour by hour.

What it decides here is only the glue the live edges do: build the `MarketSnapshot`, the node and
site views, and the per-site AI demand; turn the plan and the placements into an `HourPlan`. The
decisions themselves are the core's: `plan_power` splits each site's power between mining, AI and
curtailment; `place` picks the node for each piece of work or defers flex work to a cheaper hour.

One hour, in steps:
1. Plan with no AI demand: the mining each site would run on its own, hence its headroom.
2. Site views: AI power within a site's headroom costs the price; beyond it, it displaces mining
   and costs `max(price, R_mine)` (the opportunity price); so each GPU pool is shown to the placer
   as up to two nodes, one per cost, and the outlook prices the hours ahead the same way.
3. Place the queue (interactive first, then by deadline): each queued item is offered to the
   placer as one representative request of the class (the trace's mean tokens); the chosen node
   gets as much of the item as it has room for, and the placer is asked again for the rest, so
   the work fills nodes in the placer's order of cost. A `Deferral` holds the rest of a flex item
   until the window it names.
4. Plan with the placed work as each site's AI demand (value = revenue per MWh of GPU energy).
   Where the planner admits less AI than was placed (the price is above the work's value, or a
   whole ASIC block would have to stop for a sliver of AI), the excess is taken back, the site is
   closed to more work, and steps 3-4 repeat for what was taken back.
Work still unplaced stays queued for the next hour; the simulator drops it at its deadline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from scheduler.backtest.policies.base import Assignment, HourPlan, HourView, WorkItem
from scheduler.backtest.workload import Workload
from scheduler.backtest.world import KW_PER_MW, S_PER_H, TOKENS_PER_MTOK, World
from scheduler.core.economics import opportunity_price_usd_per_mwh
from scheduler.core.fleet import Fleet
from scheduler.core.market import MarketSnapshot
from scheduler.core.models import Tier
from scheduler.core.placement import (
    DEFAULT_PROFILE,
    Deferral,
    JobRequest,
    NodeView,
    Placement,
    PriceOutlook,
    ScoringProfile,
    SiteView,
    place,
)
from scheduler.core.planner.inputs import DEFAULT_PLANNER_CONFIG, PlannerConfig, SiteAiDemand
from scheduler.core.planner.output import PowerPlan
from scheduler.core.planner.planner import plan_power

_EPS_MW = 1e-6
_EPS_MTOK = 1e-9
DISPLACE = "~displace"  # suffix of the node and site keys for power taken from mining
_TIER_RANK = {Tier.INTERACTIVE: 0, Tier.STANDARD: 1, Tier.FLEX: 2}
# Of the GPU-hours free after an hour's interactive and standard work, the share that work
# waiting for a later hour may book there. 1.0: a lower share keeps more room for the later
# hour's own flex work, but also stops flex work that alone fills the fleet from waiting for a
# cheap hour (test_flex_work_waits_for_the_cheap_hour); at 0.5 the 2023-08 run at 90% load has
# no misses, at 1.0 it still misses 1.5M standard requests (7.3M without booking).
BOOKABLE_SHARE = 1.0


def hour_snapshot(world: World, view: HourView) -> MarketSnapshot:
    """The market as the live feed would show it at the hour's start: the hour's zone prices and
    the day's Bitcoin facts."""
    prices = {zone: float(view.price_usd_per_mwh[s]) for s, zone in enumerate(world.price_zone)}
    t = view.t

    def at(series: np.ndarray | None) -> float | None:
        return None if series is None else float(series[t])

    return MarketSnapshot(
        t_s=view.now_s,
        price_usd_per_mwh_by_zone=prices,
        btc_usd=at(world.btc_usd),
        difficulty=at(world.difficulty),
        fees_btc_per_block=at(world.fees_btc_per_block),
        hashprice_usd_per_phs_day=view.hashprice_usd_per_phs_day,
        market_time_s=view.now_s,
    )


@dataclass(frozen=True)
class _SiteViews:
    """Each site key's view with its price outlook, and without one."""

    with_outlook: Mapping[str, SiteView]
    without: Mapping[str, SiteView]

    def open_only(self, open_sites: frozenset[str]) -> dict[str, SiteView]:
        """Outlooks only for the sites that still have free GPUs."""
        return {
            key: (self.with_outlook if key.removesuffix(DISPLACE) in open_sites
                  else self.without)[key]
            for key in self.without
        }


@dataclass
class _Segment:
    """Part of a pool offered to the placer at one cost: its GPUs left and the site key it uses."""

    pool: int
    site_key: str
    gpus_free: float


class HashservePolicy:
    name = "hashserve"

    def __init__(
        self,
        profile: ScoringProfile = DEFAULT_PROFILE,
        planner_config: PlannerConfig = DEFAULT_PLANNER_CONFIG,
        max_rounds: int | None = None,
    ) -> None:
        self.profile = profile
        self.planner_config = planner_config
        self.max_rounds = max_rounds

    def reset(self, world: World, workload: Workload) -> None:
        if world.fleet is None:
            raise ValueError("the hashserve policy needs the world's fleet (for the planner)")
        self.world = world
        self.fleet: Fleet = world.fleet
        self.previous: PowerPlan | None = None
        self.held_until_hour: dict[int, int] = {}
        self.booked_gpu_h: dict[int, float] = {}  # hour -> GPU-hours of work waiting for it
        rates: dict[str, list[float]] = {}
        for pool in world.pools:
            for model in pool.tokens_per_s:
                rates.setdefault(model, []).append(pool.mtok_per_gpu_hour(model))
        self.mean_mtok_per_gpu_h = {m: sum(r) / len(r) for m, r in rates.items() if r}
        self.busy_mw = np.array([p.busy_kw_per_gpu / KW_PER_MW for p in world.pools])
        self.gpu_busy_mw = world.gpu_busy_mw_by_site()
        self.site_pools = [world.pools_at(s) for s in range(world.sites)]
        self.pool_index = {p.pool_id: i for i, p in enumerate(world.pools)}
        mean_in = workload.mean_input_tokens
        mean_out = workload.mean_output_tokens
        self.rep_tokens = (max(round(mean_in), 0), max(round(mean_out), 0))

    # ------------------------------------------------------------ one hour

    def decide(self, view: HourView) -> HourPlan:
        world = self.world
        snapshot = hour_snapshot(self.world, view)
        base = plan_power(self.fleet, snapshot, {}, self.previous, {}, view.now_s,
                          self.planner_config)
        headroom_mw = np.array([
            max(base.sites[n].cap_mw - base.sites[n].mining_mw, 0.0) for n in world.site_names
        ])
        cap_mw = np.array([base.sites[n].cap_mw for n in world.site_names])
        sites = self._site_views(view, base, headroom_mw)
        # GPUs each pool may still give this hour: its own, and no more than the cap carries.
        gpus_free = np.array([float(p.gpus) for p in world.pools])
        site_room_mw = cap_mw.copy()
        for p, pool in enumerate(world.pools):
            fit = site_room_mw[pool.site_index] / self.busy_mw[p] if self.busy_mw[p] > 0 else 0.0
            gpus_free[p] = min(gpus_free[p], math.floor(fit + 1e-9))
            site_room_mw[pool.site_index] -= gpus_free[p] * self.busy_mw[p]
        closed = np.zeros(world.sites, dtype=bool)
        left = {item.item_id: item.mtok for item in view.queue}
        items = {item.item_id: item for item in view.queue}
        placed: dict[tuple[int, int], float] = {}  # (item, pool) -> Mtok
        plan = base
        # Each round that takes work back closes at least one site, so sites + 1 rounds suffice.
        for _round in range(self.max_rounds or world.sites + 1):
            self._place_queue(view, items, left, placed, gpus_free, headroom_mw, closed, sites)
            plan = plan_power(self.fleet, snapshot, self._demand(placed, items), self.previous,
                              {}, view.now_s, self.planner_config)
            # Taking back leaves each site's placed work equal to what the plan admitted, so the
            # plan stays valid even when no round is left to place the taken-back work elsewhere.
            if not self._enforce_admitted(plan, placed, items, left, gpus_free, closed):
                break
        self.previous = plan
        return self._hour_plan(plan, placed, items)

    # ------------------------------------------------------------ views for the core

    def _site_views(
        self, view: HourView, base: PowerPlan, headroom_mw: np.ndarray
    ) -> _SiteViews:
        """Two views per site: power within its headroom (price), power taken from mining.

        The outlook (what later hours will cost) goes on one of the two only, as the live
        scheduler shows one outlook per site: on the displacing view when the site's GPUs do not
        fit in its headroom (more work there will displace mining later too), else on the spare
        view. A sliver of spare power must not advertise cheap hours for all the work.
        """
        world = self.world
        with_outlook: dict[str, SiteView] = {}
        without: dict[str, SiteView] = {}
        ahead_h = view.outlook_usd_per_mwh.shape[1]
        starts = [view.now_s + (h + 1) * S_PER_H for h in range(ahead_h)]
        for s, name in enumerate(world.site_names):
            site_plan = base.sites[name]
            price = site_plan.price_usd_per_mwh
            r_mine = site_plan.r_mine_usd_per_mwh
            region = world.site_regions[s]
            site_at_cap = headroom_mw[s] + _EPS_MW < self.gpu_busy_mw[s]
            share = self._block_share(s, site_plan.mining_mw, headroom_mw[s])
            for key, at_cap in ((name, False), (name + DISPLACE, True)):
                bare = SiteView(
                    site=key,
                    region=region,
                    price_usd_per_mwh=price,
                    opportunity_price_usd_per_mwh=opportunity_price_usd_per_mwh(
                        price, r_mine, at_cap, share
                    ),
                )
                without[key] = bare
                if at_cap != site_at_cap:
                    with_outlook[key] = bare
                    continue
                outlook = tuple(
                    PriceOutlook(
                        start_s, opportunity_price_usd_per_mwh(ahead, r_mine, at_cap, share)
                    )
                    for start_s, ahead in zip(
                        starts, view.outlook_usd_per_mwh[s].tolist(), strict=True
                    )
                    if math.isfinite(ahead)
                )
                with_outlook[key] = replace(bare, outlook=outlook)
        return _SiteViews(with_outlook, without)

    def _block_share(self, s: int, mining_mw: float, headroom_mw: float) -> float:
        """The part of the mining the site's GPUs would stop that they can use: the GPUs beyond
        the headroom, over the mining lost to the lower level that makes room for all of them."""
        over_mw = self.gpu_busy_mw[s] - headroom_mw
        if over_mw <= _EPS_MW or mining_mw <= _EPS_MW or not self.world.asic_levels:
            return 1.0  # without blocks, mining steps down by exactly what the GPUs take
        return self.world.asic_levels[s].stop_share(mining_mw, over_mw)

    def _segments(
        self, gpus_free: np.ndarray, headroom_mw: np.ndarray, closed: np.ndarray
    ) -> list[_Segment]:
        """Each open pool's free GPUs, split at its site's headroom into spare and displacing."""
        world = self.world
        room = headroom_mw.copy()
        out: list[_Segment] = []
        for p, pool in enumerate(world.pools):
            s = pool.site_index
            if closed[s] or gpus_free[p] <= _EPS_MTOK:
                continue
            spare = min(gpus_free[p], max(room[s], 0.0) / self.busy_mw[p])
            room[s] -= spare * self.busy_mw[p]
            name = world.site_names[s]
            if spare > _EPS_MTOK:
                out.append(_Segment(p, name, spare))
            if gpus_free[p] - spare > _EPS_MTOK:
                out.append(_Segment(p, name + DISPLACE, gpus_free[p] - spare))
        return out

    def _node_view(self, segment: _Segment) -> NodeView:
        pool = self.world.pools[segment.pool]
        models = frozenset(pool.tokens_per_s)
        return NodeView(
            node_id=f"{pool.pool_id}@{segment.site_key}",
            site=segment.site_key,
            region=self.world.site_regions[pool.site_index],
            models=models,
            memory_mb=pool.memory_mb,
            slots_free=1,
            slots_total=1,
            serving=True,
            healthy=True,
            idle_power_kw=pool.idle_kw_per_gpu,
            busy_power_kw=pool.busy_kw_per_gpu,
            tokens_per_s=dict(pool.tokens_per_s),
            warm_models=models,
        )

    def _request(self, item: WorkItem) -> JobRequest:
        work = item.work
        tokens_in, tokens_out = self.rep_tokens
        submitted_s = self.world.hour_s(item.arrived_hour)
        return JobRequest(
            job_id=f"item-{item.item_id}",
            model=work.model,
            tier=work.tier,
            input_tokens=tokens_in,
            output_tokens_est=tokens_out,
            submitted_s=submitted_s,
            deadline_s=submitted_s + work.deadline_h * S_PER_H,
            allowed_regions=work.allowed_regions,
            memory_mb=work.memory_mb,
            value_usd=work.usd_per_mtok * (tokens_in + tokens_out) / TOKENS_PER_MTOK,
        )

    # ------------------------------------------------------------ placement

    def _place_queue(
        self,
        view: HourView,
        items: Mapping[int, WorkItem],
        left: dict[int, float],
        placed: dict[tuple[int, int], float],
        gpus_free: np.ndarray,
        headroom_mw: np.ndarray,
        closed: np.ndarray,
        sites: _SiteViews,
    ) -> None:
        segments = self._segments(gpus_free, headroom_mw, closed)
        by_node = {self._node_view(seg).node_id: seg for seg in segments}
        nodes = {node_id: self._node_view(seg) for node_id, seg in by_node.items()}
        views: dict[frozenset[str], Mapping[str, SiteView]] = {}
        for item in view.queue:
            if self.held_until_hour.get(item.item_id, -1) > view.t:
                continue
            request = self._request(item)
            model = item.work.model
            while left[item.item_id] > _EPS_MTOK and nodes:
                # A site whose GPUs are all taken now is expected to be taken later too (the
                # work that filled it comes every hour): its outlook must not lure flex work to
                # wait for it. The placer's deferral does not look at capacity, so the views do.
                open_sites = frozenset(n.site.removesuffix(DISPLACE) for n in nodes.values())
                if open_sites not in views:
                    views[open_sites] = sites.open_only(open_sites)
                decision = place([request], list(nodes.values()), views[open_sites],
                                 view.now_s, self.profile)[0]
                if isinstance(decision, Deferral):
                    until_hour = max(
                        math.ceil((decision.until_s - self.world.start_s) / S_PER_H), view.t + 1
                    )
                    # The placer's deferral does not see capacity, so two rules keep waiting
                    # work from crowding out other work (or itself) when its hour comes:
                    # - never wait into the last hour the work may run in (whatever did not
                    #   fit then would have no hour left);
                    # - book the GPU-hours it will need in that hour against what is free now,
                    #   after this hour's interactive and standard work (a later hour is
                    #   expected to be as busy), and wait only while the booking fits.
                    need_gpu_h = left[item.item_id] / self.mean_mtok_per_gpu_h.get(model, math.inf)
                    room_gpu_h = BOOKABLE_SHARE * float(gpus_free.sum())
                    booked = self.booked_gpu_h.get(until_hour, 0.0)
                    if until_hour < item.due_hour and booked + need_gpu_h <= room_gpu_h:
                        self.booked_gpu_h[until_hour] = booked + need_gpu_h
                        self.held_until_hour[item.item_id] = until_hour
                        break
                    decision = place([replace(request, deferrable=False)], list(nodes.values()),
                                     views[open_sites], view.now_s, self.profile)[0]
                if not isinstance(decision, Placement):
                    break  # no node can take it now: it stays queued
                segment = by_node[decision.node_id]
                p = segment.pool
                rate = self.world.pools[p].mtok_per_gpu_hour(model)
                mtok = min(left[item.item_id], segment.gpus_free * rate)
                gpu_h = mtok / rate
                segment.gpus_free -= gpu_h
                gpus_free[p] -= gpu_h
                left[item.item_id] -= mtok
                key = (item.item_id, p)
                placed[key] = placed.get(key, 0.0) + mtok
                if segment.gpus_free <= _EPS_MTOK:
                    del nodes[decision.node_id]

    def _demand(
        self, placed: Mapping[tuple[int, int], float], items: Mapping[int, WorkItem]
    ) -> dict[str, SiteAiDemand]:
        mw = np.zeros(self.world.sites)
        revenue = np.zeros(self.world.sites)
        for (item_id, p), mtok in placed.items():
            pool = self.world.pools[p]
            work = items[item_id].work
            mw[pool.site_index] += mtok * pool.busy_mwh_per_mtok(work.model)
            revenue[pool.site_index] += mtok * work.usd_per_mtok
        demand: dict[str, SiteAiDemand] = {}
        for s, name in enumerate(self.world.site_names):
            if mw[s] > 0:
                # All of it is to run this hour: queued for the site, none running from before.
                demand[name] = SiteAiDemand(ai_queued_mw=float(mw[s]),
                                            value_usd_per_mwh=float(revenue[s] / mw[s]))
        return demand

    def _enforce_admitted(
        self,
        plan: PowerPlan,
        placed: dict[tuple[int, int], float],
        items: Mapping[int, WorkItem],
        left: dict[int, float],
        gpus_free: np.ndarray,
        closed: np.ndarray,
    ) -> bool:
        """Take back work the planner did not admit at a site (least urgent first)."""
        world = self.world
        taken_back = False
        for s, name in enumerate(world.site_names):
            keys = [k for k in placed if world.pools[k[1]].site_index == s]
            if not keys:
                continue
            placed_mw = sum(
                placed[k] * world.pools[k[1]].busy_mwh_per_mtok(items[k[0]].work.model)
                for k in keys
            )
            excess_mw = placed_mw - plan.sites[name].ai_mw
            if excess_mw <= _EPS_MW:
                continue
            closed[s] = True
            taken_back = True
            keys.sort(key=lambda k: (-_TIER_RANK[items[k[0]].work.tier], -items[k[0]].due_hour,
                                     -k[0], -k[1]))
            for key in keys:
                if excess_mw <= _EPS_MW:
                    break
                item_id, p = key
                pool = world.pools[p]
                per_mtok = pool.busy_mwh_per_mtok(items[item_id].work.model)
                mtok = min(placed[key], excess_mw / per_mtok)
                placed[key] -= mtok
                if placed[key] <= _EPS_MTOK:
                    del placed[key]
                left[item_id] += mtok
                gpus_free[p] += mtok / pool.mtok_per_gpu_hour(items[item_id].work.model)
                excess_mw -= mtok * per_mtok
        return taken_back

    # ------------------------------------------------------------ the answer

    def _hour_plan(
        self, plan: PowerPlan, placed: Mapping[tuple[int, int], float],
        items: Mapping[int, WorkItem],
    ) -> HourPlan:
        world = self.world
        busy_gpu_h = np.zeros(len(world.pools))
        assignments = []
        for (item_id, p), mtok in sorted(placed.items()):
            if mtok <= _EPS_MTOK:
                continue
            assignments.append(Assignment(item_id, p, mtok))
            busy_gpu_h[p] += mtok / world.pools[p].mtok_per_gpu_hour(items[item_id].work.model)
        gpus_on = busy_gpu_h.copy()
        mining = np.zeros(world.sites)
        for s, name in enumerate(world.site_names):
            site_plan = plan.sites[name]
            mining[s] = site_plan.mining_mw
            # Standby and negative-price idle capacity the plan switched on, at busy power.
            extra_mw = max(site_plan.serving_mw - site_plan.ai_mw, 0.0)
            for pool in self.site_pools[s]:
                if extra_mw <= _EPS_MW:
                    break
                p = self.pool_index[pool.pool_id]
                extra = min(pool.gpus - gpus_on[p], extra_mw / self.busy_mw[p])
                gpus_on[p] += extra
                extra_mw -= extra * self.busy_mw[p]
        return HourPlan(mining, gpus_on, tuple(assignments))
