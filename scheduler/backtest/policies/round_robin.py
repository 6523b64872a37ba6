"""Baseline "price-blind round robin": ignores every price.

Decides: every GPU switched on, requests dealt to the GPUs in turn (by the hour: every GPU gets
the same share of the work, wherever it is), every ASIC mining with the power the GPUs leave.
What it shows: what the fleet earns with no economics at all.
"""

from __future__ import annotations

from scheduler.backtest.policies.base import HourPlan, HourView
from scheduler.backtest.policies.greedy import PowerBook, mine_if_profitable, spread
from scheduler.backtest.workload import Workload
from scheduler.backtest.world import World


class RoundRobin:
    name = "round_robin"

    def reset(self, world: World, workload: Workload) -> None:
        self.world = world
        self.eligible = [frozenset(world.eligible_pools(c)) for c in workload.classes]

    def decide(self, view: HourView) -> HourPlan:
        world = self.world
        book = PowerBook(world, world.cap_mw.copy())
        book.power_on()
        assignments = spread(view, world, book, self.eligible)
        mining = mine_if_profitable(world, view, book.gpu_draw_mw_by_site(), always=True)
        return HourPlan(mining, book.on.copy(), tuple(assignments))
