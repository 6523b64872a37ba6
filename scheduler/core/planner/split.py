"""The profit-maximising split of one site's power between mining, AI, standby and idle GPUs.

One site, one tick, no memory beyond an optional switching cost against the previous split: the
planner (`planner.py`) adds overrides, dwell and fallbacks around it. Everything is linear, so the
split is a small knapsack: mining comes in blocks (any whole number of `curtail_block_mw` blocks,
plus the one smaller leftover block), everything else is continuous:

    maximise  (R_mine - p) m + (V - p) a + (-p r) i  - h |m - m_prev| - h |a - a_prev|
    s.t.      m + a + s + i <= cap,  a <= demand,  s <= standby,  a + s + i <= GPU busy capacity

with `p` the price, `V` the AI work's value per MWh, `r` the GPU idle/busy power ratio, `s`
standby and `i` GPU capacity switched on idle only because the price is negative (it is paid to
consume). Standby is ranked like new AI work (it is capacity for it) but draws idle power.

For a fixed mining level the best use of the rest is greedy by margin per MW of cap. The total,
as a function of `m`, is piecewise linear with kinks only where the marginal displaced use changes
(cap minus each prefix of the greedy order) and at `m_prev`; so its maximum over the block levels
lies at a level next to one of those kinks. `solve_split` evaluates only those few levels; the
brute-force oracle test checks that this is the optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from scheduler.core.economics import block_share
from scheduler.core.fleet import AsicFleetSpec

_EPS = 1e-9


@dataclass(frozen=True)
class AsicLevels:
    """The mining levels a site can run: j whole blocks, plus or minus the partial block."""

    block_mw: float
    full_blocks: int
    partial_mw: float = 0.0

    @classmethod
    def of(cls, asic: AsicFleetSpec) -> AsicLevels:
        return _levels_of(asic)

    @property
    def max_mw(self) -> float:
        return self.full_blocks * self.block_mw + self.partial_mw

    def all_levels(self) -> list[float]:
        levels = {j * self.block_mw for j in range(self.full_blocks + 1)}
        if self.partial_mw > 0.0:
            levels |= {j * self.block_mw + self.partial_mw for j in range(self.full_blocks + 1)}
        return sorted(levels)

    def floor(self, x_mw: float) -> float:
        """The largest level <= x (0 when none is)."""
        if x_mw < _EPS or self.block_mw <= 0.0:
            return 0.0
        best = min(self.full_blocks, math.floor(x_mw / self.block_mw + _EPS)) * self.block_mw
        if self.partial_mw > 0.0 and x_mw + _EPS >= self.partial_mw:
            j = min(self.full_blocks, math.floor((x_mw - self.partial_mw) / self.block_mw + _EPS))
            best = max(best, j * self.block_mw + self.partial_mw)
        return best

    def stop_share(self, mining_mw: float, gpu_mw: float) -> float:
        """Making room for `gpu_mw` more GPU power stops mining down to the next level; the part
        of what it stops that those GPUs use (`economics.block_share`: 1 when they use it all)."""
        return block_share(gpu_mw, mining_mw - self.floor(mining_mw - gpu_mw))

    def ceil(self, x_mw: float) -> float | None:
        """The smallest level >= x (None above the maximum)."""
        if x_mw <= _EPS:
            return 0.0
        if self.block_mw <= 0.0:
            return None
        found: list[float] = []
        j = max(0, math.ceil(x_mw / self.block_mw - _EPS))
        if j <= self.full_blocks:
            found.append(j * self.block_mw)
        if self.partial_mw > 0.0:
            j = max(0, math.ceil((x_mw - self.partial_mw) / self.block_mw - _EPS))
            if j <= self.full_blocks:
                found.append(j * self.block_mw + self.partial_mw)
        return min(found) if found else None


@lru_cache(maxsize=4096)
def _levels_of(asic: AsicFleetSpec) -> AsicLevels:
    if asic.power_mw <= 0.0 or asic.curtail_block_mw <= 0.0:
        return AsicLevels(block_mw=0.0, full_blocks=0, partial_mw=0.0)
    return AsicLevels(asic.curtail_block_mw, asic.full_blocks, asic.partial_block_mw)


@dataclass(frozen=True)
class SplitProblem:
    cap_mw: float
    price_usd_per_mwh: float
    r_mine_usd_per_mwh: float
    levels: AsicLevels
    gpu_busy_mw: float  # GPU capacity available to this split (busy power)
    gpu_idle_fraction: float  # idle draw / busy draw of the GPU nodes
    ai_wanted_mw: float  # running + queued (capped at gpu_busy_mw)
    ai_value_usd_per_mwh: float
    standby_mw: float = 0.0
    prev_mining_mw: float | None = None  # None: no switching cost on mining
    prev_ai_mw: float | None = None
    switching_cost_usd_per_mwh: float = 0.0


@dataclass(frozen=True)
class Split:
    mining_mw: float
    ai_mw: float
    standby_mw: float  # GPU capacity kept on, idle, for expected work (reserved at busy power)
    idle_on_mw: float  # GPU capacity on, idle, because the price is negative
    score_usd_per_h: float  # the objective above (margins less switching costs), per hour

    @property
    def serving_mw(self) -> float:
        return self.ai_mw + self.standby_mw + self.idle_on_mw


@dataclass(frozen=True)
class _Item:
    kind: str  # "ai", "standby", "idle"
    capacity_mw: float
    margin_usd_per_mwh: float


def _items(problem: SplitProblem) -> list[_Item]:
    """Continuous uses with their margin per MW of cap, best first (ties in this fixed order).

    All of them run on the GPU nodes, so besides the cap they share `gpu_busy_mw` (see `_fill`).
    """
    p = problem.price_usd_per_mwh
    h = problem.switching_cost_usd_per_mwh
    v = problem.ai_value_usd_per_mwh
    wanted = max(0.0, min(problem.ai_wanted_mw, problem.gpu_busy_mw))
    items: list[_Item] = []
    if problem.prev_ai_mw is None:
        items.append(_Item("ai", wanted, v - p))
    else:
        kept = min(wanted, max(0.0, problem.prev_ai_mw))
        items.append(_Item("ai", kept, v - p + h))
        items.append(_Item("ai", wanted - kept, v - p - h))
    standby_margin = v - p - (h if problem.prev_ai_mw is not None else 0.0)
    items.append(_Item("standby", max(0.0, problem.standby_mw), standby_margin))
    items.append(_Item("idle", problem.gpu_busy_mw, -p * problem.gpu_idle_fraction))
    ranked = sorted(enumerate(items), key=lambda pair: (-pair[1].margin_usd_per_mwh, pair[0]))
    return [it for _, it in ranked if it.capacity_mw > _EPS and it.margin_usd_per_mwh > 0.0]


def _fill(
    items: list[_Item], room_mw: float, gpu_mw: float
) -> tuple[dict[str, float], float, list[float]]:
    """Greedy by margin under the cap room and the GPU capacity; also the cumulative takes."""
    taken = {"ai": 0.0, "standby": 0.0, "idle": 0.0}
    value = 0.0
    cumulative: list[float] = []
    used = 0.0
    for item in items:
        take = max(0.0, min(item.capacity_mw, room_mw - used, gpu_mw - used))
        taken[item.kind] += take
        value += take * item.margin_usd_per_mwh
        used += take
        cumulative.append(used)
    return taken, value, cumulative


def _score_mining(problem: SplitProblem, mining_mw: float) -> float:
    score = (problem.r_mine_usd_per_mwh - problem.price_usd_per_mwh) * mining_mw
    if problem.prev_mining_mw is not None:
        score -= problem.switching_cost_usd_per_mwh * abs(mining_mw - problem.prev_mining_mw)
    return score


def candidate_levels(problem: SplitProblem, items: list[_Item]) -> list[float]:
    """Mining levels next to each kink of the objective (see the module docstring)."""
    cap = max(0.0, problem.cap_mw)
    top = problem.levels.floor(min(cap, problem.levels.max_mw))
    kinks = [0.0, cap, problem.levels.max_mw]
    if problem.prev_mining_mw is not None:
        kinks.append(problem.prev_mining_mw)
    _, _, cumulative = _fill(items, math.inf, max(0.0, problem.gpu_busy_mw))
    kinks.extend(cap - used for used in cumulative)
    found: set[float] = {0.0, top}
    for x in {min(max(k, 0.0), top) for k in kinks}:
        found.add(problem.levels.floor(x))
        up = problem.levels.ceil(x)
        if up is not None and up <= top + _EPS:
            found.add(up)
    return sorted(found)


def solve_split(problem: SplitProblem, mining_fixed_mw: float | None = None) -> Split:
    """The best split; with `mining_fixed_mw` the mining level is given, the rest optimised."""
    items = _items(problem)
    cap = max(0.0, problem.cap_mw)
    gpu = max(0.0, problem.gpu_busy_mw)
    if mining_fixed_mw is not None:
        levels = [problem.levels.floor(min(mining_fixed_mw, cap))]
    else:
        levels = candidate_levels(problem, items)
    prev = problem.prev_mining_mw if problem.prev_mining_mw is not None else 0.0
    best: tuple[float, float, float] | None = None  # (score, -distance to prev, -level)
    best_split: Split | None = None
    for m in levels:
        taken, rest_value, _ = _fill(items, cap - m, gpu)
        score = _score_mining(problem, m) + rest_value
        key = (score, -abs(m - prev), -m)
        if best is None or _better(key, best):
            best = key
            best_split = Split(m, taken["ai"], taken["standby"], taken["idle"], score)
    assert best_split is not None
    return best_split


def _better(key: tuple[float, float, float], best: tuple[float, float, float]) -> bool:
    """Higher score wins; within float noise, the level nearer the previous, then the lower."""
    tolerance = 1e-9 * max(1.0, abs(best[0]))
    if key[0] > best[0] + tolerance:
        return True
    if key[0] < best[0] - tolerance:
        return False
    return key[1:] > best[1:]
