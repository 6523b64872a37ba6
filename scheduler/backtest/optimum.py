"""The hindsight optimum: the most profit any policy could have made, knowing every price ahead.

What it decides: a mixed-integer linear program over sites, GPU pools and hours, with perfect
foresight of power prices, mining revenue (hashprice) and demand, solved with HiGHS (scipy's
milp). Per hour and site it chooses mining MW, GPU-hours per work class and pool, and GPUs left on
idle; per class it carries a backlog that must be served within the class's deadline.
Constraints: the site's grid cap, the ASICs' draw, the pools' GPUs, and the deadlines. Work may go
unserved (it then earns nothing), so the program is always feasible.

Mining runs in the site's whole curtailment blocks (`World.asic_levels`), as a site's controls
can switch them: where the interconnect is sized to the ASICs, the first GPU node costs a whole
block, and a continuous mining level would credit the bound with power no policy can use. Blocks
are integer only at such sites; elsewhere the cap never binds, mining is all or nothing in every
optimal solution, and the continuous level is exact. `asic_blocks=False` gives the old linear
relaxation, for comparison. What it still leaves out, in its favour: the mode planner's dwell and
hysteresis and the blocks' ramps (minutes, within the hour the program resolves), and any forecast
error. Every online policy's hourly actions are feasible here, so its profit is at most this
optimum. The profit reported is HiGHS's dual bound, so an unfinished branch and bound still gives
an upper bound; the gap to the plan found is `mip_gap_usd`.

A year of 40+ sites is solved in windows (a week by default). Windows are tied together only by
flex work carried over a boundary; each window starts with no backlog and may end with some,
credited at the most that work could still earn (its price minus the cheapest energy on any pool
that could serve it before its deadline). That is a relaxation of the whole-period program --
any whole-period plan splits into window plans that score at least as much -- so the sum over
windows is still an upper bound, and a loose one only by the few boundary hours. The last window
credits nothing, as the simulation earns nothing for work left queued at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_matrix, vstack

from scheduler.backtest.workload import WorkClass, Workload
from scheduler.backtest.world import KW_PER_MW, World

DEFAULT_WINDOW_H = 168
# Branch and bound stops within this relative gap; the gap is added to the bound, so it stays one.
MIP_REL_GAP = 1e-4
MIP_TIME_LIMIT_S = 120.0
_EPS_MW = 1e-9


@dataclass(frozen=True)
class OptimumResult:
    """What the optimum did, in the same terms as a policy's result."""

    profit_usd: float  # the bound: window objectives summed, boundary credits included
    mining_revenue_usd: float
    ai_revenue_usd: float
    power_cost_usd: float
    boundary_credit_usd: float
    mining_mwh: float
    ai_busy_mwh: float
    ai_idle_mwh: float
    served_mtok: np.ndarray  # [K]
    unserved_mtok: np.ndarray  # [K] dropped (carried past the end is not counted here)
    profit_by_hour_usd: np.ndarray  # [T] (credits counted in the hour they are earned)
    mining_mw: np.ndarray  # [S, T]
    ai_mw: np.ndarray  # [S, T] busy + idle GPU draw
    windows: int
    window_h: int
    solve_s: float
    # The dual bound minus the plan found, summed over windows (included in profit_usd).
    mip_gap_usd: float = 0.0
    # Site-hours whose mining was integer (in whole blocks); 0 for the linear relaxation.
    integer_site_hours: int = 0


@dataclass(frozen=True)
class _Window:
    t0: int
    t1: int
    credit_usd_per_mtok: np.ndarray  # [K]


def hindsight_optimum(
    world: World,
    workload: Workload,
    window_h: int | None = DEFAULT_WINDOW_H,
    progress: Callable[[int, int], None] | None = None,
    asic_blocks: bool = True,
) -> OptimumResult:
    """Solve the windows in turn; `progress(done, total)` after each. `asic_blocks=False`
    lets mining run at any MW (the linear relaxation, a looser bound)."""
    import time

    hours = world.hours
    longest = max((c.deadline_h for c in workload.classes), default=1)
    span = hours if window_h is None else max(int(window_h), longest)
    starts = list(range(0, hours, span))
    k = len(workload.classes)
    acc = _Accumulator(world, k)
    began = time.perf_counter()
    for i, t0 in enumerate(starts):
        t1 = min(t0 + span, hours)
        credit = (
            np.zeros(k) if t1 >= hours else _carry_credit(world, workload.classes, t1)
        )
        _solve_window(world, workload, _Window(t0, t1, credit), acc, asic_blocks)
        if progress is not None:
            progress(i + 1, len(starts))
    return acc.result(len(starts), span, time.perf_counter() - began)


def _carry_credit(world: World, classes: tuple[WorkClass, ...], t1: int) -> np.ndarray:
    """Per class, the most a million tokens carried past hour t1 could still earn."""
    credit = np.zeros(len(classes))
    for k, work in enumerate(classes):
        last = min(t1 + work.deadline_h - 1, world.hours)  # hours t1 .. last-1 remain
        if work.deadline_h <= 1 or last <= t1:
            continue
        best = 0.0
        for p in world.eligible_pools(work):
            pool = world.pools[p]
            cheapest = float(world.price_usd_per_mwh[pool.site_index, t1:last].min())
            best = max(best, work.usd_per_mtok - cheapest * pool.busy_mwh_per_mtok(work.model))
        credit[k] = best
    return credit


class _Accumulator:
    def __init__(self, world: World, classes: int) -> None:
        self.world = world
        s, t = world.sites, world.hours
        self.mining_mw = np.zeros((s, t))
        self.ai_mw = np.zeros((s, t))
        self.profit_by_hour = np.zeros(t)
        self.served = np.zeros(classes)
        self.unserved = np.zeros(classes)
        self.totals = dict.fromkeys(
            ("profit", "mining_rev", "ai_rev", "cost", "credit", "mining", "busy", "idle", "gap",
             "integer"),
            0.0,
        )

    def result(self, windows: int, window_h: int, solve_s: float) -> OptimumResult:
        t = self.totals
        return OptimumResult(
            profit_usd=t["profit"],
            mining_revenue_usd=t["mining_rev"],
            ai_revenue_usd=t["ai_rev"],
            power_cost_usd=t["cost"],
            boundary_credit_usd=t["credit"],
            mining_mwh=t["mining"],
            ai_busy_mwh=t["busy"],
            ai_idle_mwh=t["idle"],
            served_mtok=self.served,
            unserved_mtok=self.unserved,
            profit_by_hour_usd=self.profit_by_hour,
            mining_mw=self.mining_mw,
            ai_mw=self.ai_mw,
            windows=windows,
            window_h=window_h,
            solve_s=solve_s,
            mip_gap_usd=t["gap"],
            integer_site_hours=int(t["integer"]),
        )


def block_sites(world: World) -> list[int]:
    """Sites whose mining must be integer in blocks: those where mining at full level and every
    GPU busy would pass the cap, or whose top level itself passes it."""
    if not world.asic_levels:
        return []
    gpu_mw = world.gpu_busy_mw_by_site()
    out = []
    for s, levels in enumerate(world.asic_levels):
        top_mw = min(float(world.asic_mw[s]), float(world.cap_mw[s]))
        if top_mw + gpu_mw[s] > world.cap_mw[s] + _EPS_MW or levels.max_mw > world.cap_mw[s]:
            out.append(s)
    return out


def _solve_window(
    world: World, workload: Workload, win: _Window, acc: _Accumulator, asic_blocks: bool
) -> None:
    h = win.t1 - win.t0
    hours = np.arange(h)
    s_count = world.sites
    pools = world.pools
    p_count = len(pools)
    classes = workload.classes
    price = world.price_usd_per_mwh[:, win.t0 : win.t1]
    r_mine = world.r_mine_usd_per_mwh[:, win.t0 : win.t1]
    arrivals = workload.mtok[:, win.t0 : win.t1]
    pool_site = np.array([p.site_index for p in pools], dtype=np.int64)
    busy_mw = np.array([p.busy_kw_per_gpu / KW_PER_MW for p in pools])
    idle_mw = np.array([p.idle_kw_per_gpu / KW_PER_MW for p in pools])
    gpus = np.array([float(p.gpus) for p in pools])

    # Variable layout: mining [S,H] | y per (class, pool) pair [E,H] | idle GPUs [P,H]
    #                  | backlog per deferrable class [B,H] | unserved [K,H]
    pairs = [(k, p) for k, work in enumerate(classes) for p in world.eligible_pools(work)]
    deferrable = [k for k, work in enumerate(classes) if work.deadline_h > 1]
    n_m = s_count * h
    off_y = n_m
    off_z = off_y + len(pairs) * h
    off_b = off_z + p_count * h
    off_u = off_b + len(deferrable) * h
    # Integer mining: per block site, whole blocks [N,H] and the partial block on or off [N,H].
    integer_sites = block_sites(world) if asic_blocks else []
    off_n = off_u + len(classes) * h
    off_q = off_n + len(integer_sites) * h
    n_vars = off_q + len(integer_sites) * h

    cost = np.zeros(n_vars)  # linprog minimises: cost = -profit
    lower = np.zeros(n_vars)
    upper = np.zeros(n_vars)
    cost[:n_m] = -(r_mine - price).ravel()
    upper[:n_m] = np.minimum(world.asic_mw, world.cap_mw).repeat(h)

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []

    def add(r: np.ndarray, c: np.ndarray, v: np.ndarray | float) -> None:
        rows.append(r)
        cols.append(c)
        vals.append(np.broadcast_to(np.asarray(v, dtype=float), r.shape))

    # Inequalities: site caps (rows s*H+h), then pool GPU counts (rows n_cap + p*H + h).
    n_cap = s_count * h
    add(np.arange(n_m), np.arange(n_m), 1.0)
    pair_rate = np.zeros(len(pairs))
    for e, (k, p) in enumerate(pairs):
        work = classes[k]
        pool = pools[p]
        rate = pool.mtok_per_gpu_hour(work.model)
        pair_rate[e] = rate
        idx = off_y + e * h + hours
        site_price = price[pool.site_index]
        cost[idx] = -(work.usd_per_mtok * rate - site_price * busy_mw[p])
        upper[idx] = gpus[p]
        add(pool_site[p] * h + hours, idx, busy_mw[p])
        add(n_cap + p * h + hours, idx, 1.0)
    for p in range(p_count):
        idx = off_z + p * h + hours
        cost[idx] = price[pool_site[p]] * idle_mw[p]
        upper[idx] = gpus[p]
        add(pool_site[p] * h + hours, idx, idle_mw[p])
        add(n_cap + p * h + hours, idx, 1.0)
    n_ub = n_cap + p_count * h
    b_ub = np.concatenate([world.cap_mw.repeat(h).astype(float), gpus.repeat(h)])
    a_ub = _matrix(rows, cols, vals, n_ub, n_vars)

    # Equalities per (class, hour): served + unserved + backlog_now - backlog_before = arrivals.
    rows, cols, vals = [], [], []
    for e, (k, _p) in enumerate(pairs):
        add(k * h + hours, off_y + e * h + hours, pair_rate[e])
    for j, k in enumerate(deferrable):
        idx = off_b + j * h + hours
        add(k * h + hours, idx, 1.0)
        add(k * h + hours[1:], idx[:-1], -1.0)
        # Deadline: what is still queued after hour t arrived in the last D-1 hours.
        window_sum = _trailing_sum(arrivals[k], classes[k].deadline_h - 1)
        upper[idx] = window_sum
        cost[idx[-1]] = -win.credit_usd_per_mtok[k]
    for k in range(len(classes)):
        idx = off_u + k * h + hours
        add(k * h + hours, idx, 1.0)
        upper[idx] = np.inf
    n_eq = len(classes) * h
    # Block sites: mining - block * whole blocks - partial * partial-on = 0.
    integrality = np.zeros(n_vars)
    for j, s in enumerate(integer_sites):
        levels = world.asic_levels[s]
        row = n_eq + j * h + hours
        add(row, s * h + hours, 1.0)
        whole = off_n + j * h + hours
        add(row, whole, -levels.block_mw)
        upper[whole] = levels.full_blocks
        partial = off_q + j * h + hours
        add(row, partial, -levels.partial_mw)
        upper[partial] = 1.0 if levels.partial_mw > 0 else 0.0
        integrality[whole] = 1
        integrality[partial] = 1
    n_eq += len(integer_sites) * h
    a_eq = _matrix(rows, cols, vals, n_eq, n_vars)
    b_eq = np.concatenate([arrivals.ravel(), np.zeros(len(integer_sites) * h)])

    solution = milp(
        cost,
        constraints=LinearConstraint(
            vstack([a_ub, a_eq]).tocsr(),
            np.concatenate([np.full(n_ub, -np.inf), b_eq]),
            np.concatenate([b_ub, b_eq]),
        ),
        bounds=Bounds(lower, upper),
        integrality=integrality,
        options={"mip_rel_gap": MIP_REL_GAP, "time_limit": MIP_TIME_LIMIT_S},
    )
    if solution.x is None:
        raise RuntimeError(f"hindsight program hours {win.t0}..{win.t1}: {solution.message}")
    x = solution.x
    # The dual bound (minimising cost: the lowest cost any plan can reach) keeps the profit an
    # upper bound when branch and bound stopped short of proving the plan optimal.
    dual_bound = getattr(solution, "mip_dual_bound", None)
    found_cost = float(cost @ x)
    gap_usd = 0.0
    if integer_sites and dual_bound is not None and np.isfinite(dual_bound):
        gap_usd = max(found_cost - float(dual_bound), 0.0)
    _record(world, workload, win, acc, x, pairs, deferrable, pair_rate, off_y, off_z, off_b, off_u)
    acc.totals["gap"] += gap_usd
    acc.totals["profit"] += gap_usd
    acc.totals["integer"] += len(integer_sites) * h


def _record(
    world: World,
    workload: Workload,
    win: _Window,
    acc: _Accumulator,
    x: np.ndarray,
    pairs: list[tuple[int, int]],
    deferrable: list[int],
    pair_rate: np.ndarray,
    off_y: int,
    off_z: int,
    off_b: int,
    off_u: int,
) -> None:
    h = win.t1 - win.t0
    sl = slice(win.t0, win.t1)
    price = world.price_usd_per_mwh[:, sl]
    mining = x[: world.sites * h].reshape(world.sites, h)
    acc.mining_mw[:, sl] = mining
    mining_rev = world.r_mine_usd_per_mwh[:, sl] * mining
    hour_profit = (mining_rev - price * mining).sum(axis=0)
    acc.totals["mining_rev"] += float(mining_rev.sum())
    acc.totals["cost"] += float((price * mining).sum())
    acc.totals["mining"] += float(mining.sum())
    classes = workload.classes
    for e, (k, p) in enumerate(pairs):
        pool = world.pools[p]
        gpu_h = x[off_y + e * h : off_y + (e + 1) * h]
        mw = gpu_h * pool.busy_kw_per_gpu / KW_PER_MW
        mtok = gpu_h * pair_rate[e]
        revenue = classes[k].usd_per_mtok * mtok
        energy_cost = price[pool.site_index] * mw
        acc.ai_mw[pool.site_index, sl] += mw
        acc.served[k] += float(mtok.sum())
        acc.totals["ai_rev"] += float(revenue.sum())
        acc.totals["cost"] += float(energy_cost.sum())
        acc.totals["busy"] += float(mw.sum())
        hour_profit += revenue - energy_cost
    for p, pool in enumerate(world.pools):
        idle = x[off_z + p * h : off_z + (p + 1) * h] * pool.idle_kw_per_gpu / KW_PER_MW
        acc.ai_mw[pool.site_index, sl] += idle
        acc.totals["cost"] += float((price[pool.site_index] * idle).sum())
        acc.totals["idle"] += float(idle.sum())
        hour_profit -= price[pool.site_index] * idle
    for j, k in enumerate(deferrable):
        carried = float(x[off_b + j * h + h - 1])
        credit = carried * float(win.credit_usd_per_mtok[k])
        acc.totals["credit"] += credit
        hour_profit[-1] += credit
    for k in range(len(classes)):
        acc.unserved[k] += float(x[off_u + k * h : off_u + (k + 1) * h].sum())
    acc.profit_by_hour[sl] = hour_profit
    acc.totals["profit"] += float(hour_profit.sum())


def _trailing_sum(values: np.ndarray, span: int) -> np.ndarray:
    """out[t] = values[t-span+1] + ... + values[t] (fewer at the start)."""
    if span <= 0:
        return np.zeros_like(values)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    t = np.arange(values.size)
    return cumulative[t + 1] - cumulative[np.maximum(t + 1 - span, 0)]


def _matrix(
    rows: list[np.ndarray], cols: list[np.ndarray], vals: list[np.ndarray], n_rows: int,
    n_cols: int,
) -> csr_matrix:
    return csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_rows, n_cols),
    )
