"""Baseline "serve first, then mine": AI takes the power it wants, mining the rest when it pays.

Decides: every GPU switched on (a plain inference cluster keeps its nodes up), queued work served
now, spread over all GPUs alike (load balancing, blind to price), and mining with the
power left wherever R_mine beats the price. Never defers. What it shows: the value of moving
work to where power is cheap and of switching idle GPUs off.
"""

from __future__ import annotations

from scheduler.backtest.policies.base import HourPlan, HourView
from scheduler.backtest.policies.greedy import PowerBook, mine_if_profitable, spread
from scheduler.backtest.workload import Workload
from scheduler.backtest.world import World


class ServeFirst:
    name = "serve_first"

    def reset(self, world: World, workload: Workload) -> None:
        self.world = world
        self.eligible = [frozenset(world.eligible_pools(c)) for c in workload.classes]

    def decide(self, view: HourView) -> HourPlan:
        world = self.world
        book = PowerBook(world, world.cap_mw.copy())
        book.power_on()
        assignments = spread(view, world, book, self.eligible)
        mining = mine_if_profitable(world, view, book.gpu_draw_mw_by_site())
        return HourPlan(mining, book.on.copy(), tuple(assignments))
