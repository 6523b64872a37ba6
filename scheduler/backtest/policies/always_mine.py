"""Baseline "always mine": every ASIC hashes whatever the price; AI runs only on the power left.

Decides: mining at full ASIC draw (up to the cap) every hour, GPUs switched on as far as the
spare power carries them at busy draw, and queued work served now on the cheapest site with a free
GPU. Never defers. What it shows: the value of curtailing mining when power is dear.
"""

from __future__ import annotations

import numpy as np

from scheduler.backtest.policies.base import HourPlan, HourView, WorkItem
from scheduler.backtest.policies.greedy import PowerBook, fill, mine_if_profitable
from scheduler.backtest.workload import Workload
from scheduler.backtest.world import World


class AlwaysMine:
    name = "always_mine"

    def reset(self, world: World, workload: Workload) -> None:
        self.world = world
        self.eligible = [frozenset(world.eligible_pools(c)) for c in workload.classes]
        self.pool_site = np.array([p.site_index for p in world.pools], dtype=np.int64)

    def decide(self, view: HourView) -> HourPlan:
        world = self.world
        mining = np.array([
            world.mining_floor_mw(s, float(x))
            for s, x in enumerate(np.minimum(world.asic_mw, world.cap_mw))
        ])
        book = PowerBook(world, world.cap_mw - mining)
        book.power_on()
        # Cheapest site now first; ties by pool index so a run replays exactly.
        by_price = np.lexsort((np.arange(len(world.pools)), view.price_usd_per_mwh[self.pool_site]))
        order = [int(p) for p in by_price]

        def pools_for(_item: WorkItem) -> list[int]:
            return order

        assignments = fill(view, world, book, pools_for, self.eligible)
        # Mining keeps whatever it had: the GPUs only used what was spare.
        mining = mine_if_profitable(world, view, book.gpu_draw_mw_by_site(), always=True)
        return HourPlan(mining, book.on.copy(), tuple(assignments))
