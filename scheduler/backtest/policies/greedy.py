"""Shared bookkeeping for the baseline policies: GPUs on per pool, a site power budget, and filling
queued work into pools in a given order.

It decides nothing about preference: each baseline passes its own pool order and power rule. It
is not the placer (scheduler.core.placement); baselines are deliberately simpler than hashserve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from scheduler.backtest.policies.base import Assignment, HourView, WorkItem
from scheduler.backtest.world import KW_PER_MW, World


class PowerBook:
    """GPUs on and GPU-hours used per pool, and what each site may still draw for GPUs."""

    def __init__(self, world: World, gpu_budget_mw: np.ndarray) -> None:
        self.world = world
        self.busy_mw = np.array([p.busy_kw_per_gpu / KW_PER_MW for p in world.pools])
        self.idle_mw = np.array([p.idle_kw_per_gpu / KW_PER_MW for p in world.pools])
        self.site = np.array([p.site_index for p in world.pools], dtype=np.int64)
        self.gpus = np.array([float(p.gpus) for p in world.pools])
        self.budget_mw = np.asarray(gpu_budget_mw, dtype=float).copy()
        self.on = np.zeros(len(world.pools))
        self.used_gpu_h = np.zeros(len(world.pools))

    def power_on(self, pools: Sequence[int] | None = None) -> None:
        """Switch on as many GPUs of each pool as its site's budget carries at busy draw.

        The budget is reserved at busy draw so that every GPU on can take work this hour.
        """
        for p in range(len(self.gpus)) if pools is None else pools:
            s = self.site[p]
            fit = self.budget_mw[s] / self.busy_mw[p] if self.busy_mw[p] > 0 else np.inf
            extra = max(min(self.gpus[p] - self.on[p], np.floor(fit + 1e-9)), 0.0)
            self.on[p] += extra
            self.budget_mw[s] -= extra * self.busy_mw[p]

    def free_gpu_h(self, p: int) -> float:
        """GPU-hours pool p can still run this hour (GPUs on and not yet busy)."""
        return max(self.on[p] - self.used_gpu_h[p], 0.0)

    def use(self, p: int, gpu_h: float) -> None:
        self.used_gpu_h[p] += gpu_h

    def power_off_idle(self) -> None:
        """Switch off every GPU that got no work (whole GPUs: a busy fraction stays on)."""
        self.on = np.minimum(self.on, np.ceil(self.used_gpu_h - 1e-9))

    def gpu_draw_mw_by_site(self) -> np.ndarray:
        idle = (self.on - self.used_gpu_h) * self.idle_mw
        busy = self.used_gpu_h * self.busy_mw
        return np.bincount(self.site, idle + busy, self.world.sites)


def fill(
    view: HourView,
    world: World,
    book: PowerBook,
    order: Callable[[WorkItem], Sequence[int]],
    eligible: Sequence[frozenset[int]],
) -> list[Assignment]:
    """Serve every queued item now, pool by pool in `order(item)`, as far as GPUs allow."""
    out: list[Assignment] = []
    for item in view.queue:
        left = item.mtok
        for p in order(item):
            if left <= 0:
                break
            if p not in eligible[item.class_index]:
                continue
            rate = world.pools[p].mtok_per_gpu_hour(item.work.model)
            gpu_h = min(book.free_gpu_h(p), left / rate)
            if gpu_h <= 1e-12:
                continue
            mtok = min(gpu_h * rate, left)
            book.use(p, gpu_h)
            out.append(Assignment(item.item_id, p, mtok))
            left -= mtok
    return out


def spread(
    view: HourView, world: World, book: PowerBook, eligible: Sequence[frozenset[int]]
) -> list[Assignment]:
    """Serve every queued item now, split over its pools in proportion to their free GPUs.

    What a request-level round robin over GPUs amounts to once requests are counted by the hour:
    every GPU gets the same share of the work, wherever it is.
    """
    out: list[Assignment] = []
    for item in view.queue:
        pools = sorted(eligible[item.class_index])
        rates = {p: world.pools[p].mtok_per_gpu_hour(item.work.model) for p in pools}
        capacity = {p: book.free_gpu_h(p) * rates[p] for p in pools}
        total = sum(capacity.values())
        if total <= 0:
            continue
        share = min(item.mtok / total, 1.0)
        for p in pools:
            mtok = capacity[p] * share
            if mtok <= 1e-12:
                continue
            book.use(p, mtok / rates[p])
            out.append(Assignment(item.item_id, p, mtok))
    return out


def mine_if_profitable(
    world: World, view: HourView, gpu_draw_mw: np.ndarray, always: bool = False
) -> np.ndarray:
    """Mining MW per site with the power the GPUs leave: where R_mine beats the price, or always."""
    room = np.maximum(world.cap_mw - gpu_draw_mw, 0.0)
    # Whole curtailment blocks only: the site's controls switch containers, not megawatts.
    mining = np.array([
        world.mining_floor_mw(s, float(x)) for s, x in enumerate(np.minimum(world.asic_mw, room))
    ])
    if always:
        return mining
    return np.where(view.r_mine_usd_per_mwh > view.price_usd_per_mwh, mining, 0.0)
