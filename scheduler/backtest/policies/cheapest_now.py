"""Baseline "cheapest site now": AI goes where power is cheapest this hour, with no deferral.

Decides: each queued item served now on the pools of the cheapest sites by this hour's power
price (not the opportunity price: it ignores the mining it displaces at a site at its cap), only
the GPUs it uses switched on, and mining with the power left, in whole curtailment blocks,
wherever R_mine beats the price. What it shows: the value of deferring flex work to cheaper hours
and of pricing AI power at its opportunity cost.
"""

from __future__ import annotations

import numpy as np

from scheduler.backtest.policies.base import HourPlan, HourView, WorkItem
from scheduler.backtest.policies.greedy import PowerBook, fill, mine_if_profitable
from scheduler.backtest.workload import Workload
from scheduler.backtest.world import World


class CheapestNow:
    name = "cheapest_now"

    def reset(self, world: World, workload: Workload) -> None:
        self.world = world
        self.eligible = [frozenset(world.eligible_pools(c)) for c in workload.classes]
        self.pool_site = np.array([p.site_index for p in world.pools], dtype=np.int64)

    def decide(self, view: HourView) -> HourPlan:
        world = self.world
        book = PowerBook(world, world.cap_mw.copy())
        book.power_on()
        by_price = np.lexsort((np.arange(len(world.pools)), view.price_usd_per_mwh[self.pool_site]))
        order = [int(p) for p in by_price]

        def pools_for(_item: WorkItem) -> list[int]:
            return order

        assignments = fill(view, world, book, pools_for, self.eligible)
        book.power_off_idle()
        mining = mine_if_profitable(world, view, book.gpu_draw_mw_by_site())
        return HourPlan(mining, book.on.copy(), tuple(assignments))
