"""The backtest loop: hour by hour, show a policy the market and its queue; check and book its plan.

What it decides: nothing about where work goes or how power is used (the policy does); it owns the
queue (arrivals, deferred work, deadlines), checks each `HourPlan` against the plant (caps, GPUs,
eligibility), and books money and energy identically for every policy:
- AI revenue: the class's price per million tokens times the tokens served;
- mining revenue: R_mine (what a MWh of hashing earns at the day's hashprice, after pool fee)
  times the MWh mined;
- power cost: the site's price times every MWh drawn (mining, busy GPUs, GPUs left on idle).
Work still queued after its last allowed hour is dropped and counted as a deadline miss.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scheduler.backtest.policies.base import HourPlan, HourView, Policy, WorkItem
from scheduler.backtest.results import LATENCY_PERCENTILES, PolicyResult, weighted_percentiles
from scheduler.backtest.workload import Workload
from scheduler.backtest.world import KW_PER_MW, World
from scheduler.core.models import Tier

OUTLOOK_H = 12  # hours of price outlook a policy sees (longer than any flex deadline)
_TOLERANCE_MW = 1e-6
_TOLERANCE = 1e-9


class PlanError(RuntimeError):
    """A policy asked for something the plant cannot do (a bug in the policy)."""


@dataclass
class _Books:
    sites: int
    hours: int
    pools: int

    def __post_init__(self) -> None:
        self.mining_revenue = 0.0
        self.power_cost = 0.0
        self.mining_mwh = 0.0
        self.busy_mwh = 0.0
        self.idle_mwh = 0.0
        self.curtailed_mwh = 0.0
        self.ai_revenue: dict[str, float] = {t.value: 0.0 for t in Tier}
        self.served: dict[str, float] = {t.value: 0.0 for t in Tier}
        self.missed: dict[str, float] = {t.value: 0.0 for t in Tier}
        self.interactive_mtok_by_pool = np.zeros(self.pools)
        self.profit_by_hour = np.zeros(self.hours)
        self.mining_mw = np.zeros((self.sites, self.hours), dtype=np.float32)
        self.ai_mw = np.zeros((self.sites, self.hours), dtype=np.float32)


def simulate(
    policy: Policy,
    world: World,
    workload: Workload,
    scenario: str = "base",
    progress: Callable[[int, int], None] | None = None,
) -> PolicyResult:
    began = time.perf_counter()
    policy.reset(world, workload)
    books = _Books(world.sites, world.hours, len(world.pools))
    forecast = (
        world.forecast_usd_per_mwh
        if world.forecast_usd_per_mwh is not None
        else world.price_usd_per_mwh
    )
    # Nothing is known past the period's end: a policy cannot plan work into hours that the
    # accounting will never see (NaN = no forecast).
    forecast_padded = np.concatenate(
        [forecast, np.full((world.sites, OUTLOOK_H), np.nan)], axis=1
    )
    eligible = [frozenset(world.eligible_pools(c)) for c in workload.classes]
    pool_site = np.array([p.site_index for p in world.pools], dtype=np.int64)
    pool_busy_mw = np.array([p.busy_kw_per_gpu / KW_PER_MW for p in world.pools])
    pool_idle_mw = np.array([p.idle_kw_per_gpu / KW_PER_MW for p in world.pools])
    pool_gpus = np.array([float(p.gpus) for p in world.pools])
    mining_limit = np.minimum(world.asic_mw, world.cap_mw)
    queue: dict[int, WorkItem] = {}
    next_id = 0
    step = max(world.hours // 200, 1)
    for t in range(world.hours):
        for k, work in enumerate(workload.classes):
            mtok = float(workload.mtok[k, t])
            if mtok > 0:
                queue[next_id] = WorkItem(
                    next_id, k, work, t, t + work.deadline_h - 1, mtok,
                    float(workload.requests[k, t]),
                )
                next_id += 1
        ordered = tuple(sorted(queue.values(), key=_queue_key))
        view = HourView(
            t=t,
            now_s=world.hour_s(t),
            price_usd_per_mwh=world.price_usd_per_mwh[:, t],
            r_mine_usd_per_mwh=world.r_mine_usd_per_mwh[:, t],
            hashprice_usd_per_phs_day=float(world.hashprice_usd_per_phs_day[t]),
            outlook_usd_per_mwh=forecast_padded[:, t + 1 : t + 1 + OUTLOOK_H],
            queue=ordered,
        )
        plan = policy.decide(view)
        busy_gpu_h = _apply_assignments(plan, queue, world, eligible, books, t)
        _check_power(plan, world, busy_gpu_h, pool_gpus, mining_limit, t)
        gpus_on = np.asarray(plan.gpus_on, dtype=float)
        idle_gpu_h = np.maximum(gpus_on - busy_gpu_h, 0.0)
        busy_mw_site = np.bincount(pool_site, busy_gpu_h * pool_busy_mw, world.sites)
        idle_mw_site = np.bincount(pool_site, idle_gpu_h * pool_idle_mw, world.sites)
        mining = np.asarray(plan.mining_mw, dtype=float)
        drawn = mining + busy_mw_site + idle_mw_site
        over = drawn - world.cap_mw
        if (over > _TOLERANCE_MW).any():
            s = int(np.argmax(over))
            raise PlanError(
                f"{policy.name}, hour {t}: site {world.site_names[s]} draws {drawn[s]:.3f} MW "
                f"over its cap {world.cap_mw[s]:.3f} MW"
            )
        price = world.price_usd_per_mwh[:, t]
        mining_revenue = float(world.r_mine_usd_per_mwh[:, t] @ mining)
        cost = float(price @ drawn)
        books.mining_revenue += mining_revenue
        books.power_cost += cost
        books.mining_mwh += float(mining.sum())
        books.busy_mwh += float(busy_mw_site.sum())
        books.idle_mwh += float(idle_mw_site.sum())
        books.curtailed_mwh += float(np.maximum(world.cap_mw - drawn, 0.0).sum())
        books.profit_by_hour[t] += mining_revenue - cost
        books.mining_mw[:, t] = mining
        books.ai_mw[:, t] = busy_mw_site + idle_mw_site
        _expire(queue, books, t)
        if progress is not None and (t % step == 0 or t == world.hours - 1):
            progress(t + 1, world.hours)
    carried = sum(item.requests for item in queue.values())
    return _result(policy.name, scenario, world, workload, books, carried, began)


def _queue_key(item: WorkItem) -> tuple[int, int, int]:
    rank = 0 if item.work.tier is Tier.INTERACTIVE else 1 if item.work.tier is Tier.STANDARD else 2
    return (rank, item.due_hour, item.item_id)


def _apply_assignments(
    plan: HourPlan,
    queue: dict[int, WorkItem],
    world: World,
    eligible: list[frozenset[int]],
    books: _Books,
    t: int,
) -> np.ndarray:
    """Serve the assigned tokens; returns the GPU-hours used per pool."""
    busy_gpu_h = np.zeros(len(world.pools))
    served_mtok: dict[int, float] = {}
    for a in plan.assignments:
        item = queue.get(a.item_id)
        if item is None:
            raise PlanError(f"hour {t}: work item {a.item_id} is not queued")
        if a.pool_index not in eligible[item.class_index]:
            raise PlanError(f"hour {t}: pool {a.pool_index} cannot run {item.work.key}")
        if a.mtok < 0:
            raise PlanError(f"hour {t}: negative work assigned to item {a.item_id}")
        total = served_mtok.get(a.item_id, 0.0) + a.mtok
        if total > item.mtok * (1 + 1e-9) + _TOLERANCE:
            raise PlanError(
                f"hour {t}: {total} Mtok assigned of item {a.item_id} that has {item.mtok}"
            )
        served_mtok[a.item_id] = total
        pool = world.pools[a.pool_index]
        busy_gpu_h[a.pool_index] += a.mtok / pool.mtok_per_gpu_hour(item.work.model)
        revenue = item.work.usd_per_mtok * a.mtok
        books.ai_revenue[item.work.tier.value] += revenue
        books.profit_by_hour[t] += revenue
        if item.work.tier is Tier.INTERACTIVE:
            books.interactive_mtok_by_pool[a.pool_index] += a.mtok
    for item_id, mtok in served_mtok.items():
        item = queue[item_id]
        share = min(mtok / item.mtok, 1.0) if item.mtok > 0 else 1.0
        books.served[item.work.tier.value] += item.requests * share
        remaining = item.mtok - mtok
        if remaining <= _TOLERANCE * max(item.mtok, 1.0):
            del queue[item_id]
        else:
            queue[item_id] = WorkItem(
                item.item_id, item.class_index, item.work, item.arrived_hour, item.due_hour,
                remaining, item.requests * (1.0 - share),
            )
    return busy_gpu_h


def _check_power(
    plan: HourPlan, world: World, busy_gpu_h: np.ndarray, pool_gpus: np.ndarray,
    mining_limit: np.ndarray, t: int,
) -> None:
    gpus_on = np.asarray(plan.gpus_on, dtype=float)
    if (gpus_on > pool_gpus + _TOLERANCE).any() or (gpus_on < -_TOLERANCE).any():
        raise PlanError(f"hour {t}: GPUs on outside 0..pool size")
    if (busy_gpu_h > gpus_on + 1e-6 * np.maximum(gpus_on, 1.0)).any():
        p = int(np.argmax(busy_gpu_h - gpus_on))
        raise PlanError(
            f"hour {t}: pool {p} needs {busy_gpu_h[p]:.3f} GPU-hours but has {gpus_on[p]} GPUs on"
        )
    mining = np.asarray(plan.mining_mw, dtype=float)
    if (mining < -_TOLERANCE).any() or (mining > mining_limit + _TOLERANCE_MW).any():
        raise PlanError(f"hour {t}: mining MW outside 0..ASIC draw")
    for s, mw in enumerate(mining):
        if world.mining_floor_mw(s, float(mw) + _TOLERANCE_MW) < mw - _TOLERANCE_MW:
            raise PlanError(
                f"hour {t}: site {world.site_names[s]} mining {mw} MW is not a whole number of "
                "its curtailment blocks"
            )


def _expire(queue: dict[int, WorkItem], books: _Books, t: int) -> None:
    for item_id in [i for i, item in queue.items() if item.due_hour <= t]:
        item = queue.pop(item_id)
        books.missed[item.work.tier.value] += item.requests


def _result(
    name: str,
    scenario: str,
    world: World,
    workload: Workload,
    books: _Books,
    carried: float,
    began: float,
) -> PolicyResult:
    latency, slow = _interactive_latency(world, workload, books)
    ai_revenue = sum(books.ai_revenue.values())
    profit = books.mining_revenue + ai_revenue - books.power_cost
    return PolicyResult(
        policy=name,
        scenario=scenario,
        profit_usd=profit,
        mining_revenue_usd=books.mining_revenue,
        ai_revenue_usd_by_tier=dict(books.ai_revenue),
        power_cost_usd=books.power_cost,
        mining_mwh=books.mining_mwh,
        ai_busy_mwh=books.busy_mwh,
        ai_idle_mwh=books.idle_mwh,
        curtailed_mwh=books.curtailed_mwh,
        requests_served_by_tier=dict(books.served),
        deadline_misses_by_tier=dict(books.missed),
        carried_past_end_requests=carried,
        interactive_latency_s=latency,
        latency_target_misses=slow,
        profit_by_hour_usd=books.profit_by_hour,
        mining_mw=books.mining_mw,
        ai_mw=books.ai_mw,
        wall_s=time.perf_counter() - began,
    )


def _interactive_latency(
    world: World, workload: Workload, books: _Books
) -> tuple[dict[str, float], float]:
    """Per-request run time of served interactive work, by the pool kind that served it.

    A request's latency is estimated as the placer estimates a job's run time: its tokens
    (input + output) over one GPU's rate for the model. Hourly steps cannot see queueing inside
    the hour; interactive work that found no GPU in its hour is a deadline miss instead.
    """
    interactive = [
        k for k, c in enumerate(workload.classes) if c.tier is Tier.INTERACTIVE
    ]
    tokens = workload.request_input_tokens + workload.request_output_tokens
    served_mtok = float(books.interactive_mtok_by_pool.sum())
    keys = [f"p{int(p)}" for p in LATENCY_PERCENTILES]
    if not interactive or served_mtok <= 0:
        return dict.fromkeys(keys, 0.0), 0.0
    target_s = workload.classes[interactive[0]].latency_target_s
    model = workload.classes[interactive[0]].model
    rates: dict[float, float] = {}
    for p, mtok in enumerate(books.interactive_mtok_by_pool):
        if mtok > 0:
            rate = world.pools[p].tokens_per_s[model]
            rates[rate] = rates.get(rate, 0.0) + float(mtok)
    values = np.concatenate([tokens / rate for rate in rates])
    # Requests of every size land on each pool kind alike, so a kind's share of the served tokens
    # is its share of the served requests: each trace request carries that share equally.
    weights = np.concatenate(
        [np.full(tokens.size, share / tokens.size) for share in rates.values()]
    )
    pct = weighted_percentiles(values, weights, LATENCY_PERCENTILES)
    slow_share = float(weights[values > target_s].sum() / weights.sum())
    served_requests = books.served[Tier.INTERACTIVE.value]
    return dict(zip(keys, pct, strict=True)), slow_share * served_requests
