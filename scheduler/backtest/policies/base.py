"""What a backtest policy sees each hour and what it must answer. Every policy, hashserve's own and
the baselines, implements the same `Policy` protocol, so the simulator scores them alike.

A policy reads only the static plant (sites, caps, GPU pools) and the `HourView`: this hour's
prices and mining revenue, a forecast of the hours ahead (never the realised prices of a
real-time market), and the queue of work. It answers with an `HourPlan`: mining MW per site, GPUs
powered per pool, and which queued work runs on which pool this hour. What is not assigned stays
queued; work past its deadline is dropped and counted as a miss by the simulator, which also
checks the plan against the caps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from scheduler.backtest.workload import WorkClass, Workload
from scheduler.backtest.world import World


@dataclass(frozen=True)
class WorkItem:
    """One (class, arrival hour) of work still queued; `mtok` is what is left of it."""

    item_id: int
    class_index: int
    work: WorkClass
    arrived_hour: int
    due_hour: int  # the last hour it may be served in
    mtok: float
    requests: float


@dataclass(frozen=True)
class HourView:
    t: int
    now_s: float
    price_usd_per_mwh: np.ndarray  # [S] this hour, USD
    r_mine_usd_per_mwh: np.ndarray  # [S] this hour
    hashprice_usd_per_phs_day: float
    # [S, H]: expected price for hours t+1 .. t+H (a forecast, see scheduler.backtest.build;
    # NaN past the end of the period).
    outlook_usd_per_mwh: np.ndarray
    queue: tuple[WorkItem, ...]


@dataclass(frozen=True)
class Assignment:
    item_id: int
    pool_index: int
    mtok: float


@dataclass(frozen=True)
class HourPlan:
    mining_mw: np.ndarray  # [S]
    gpus_on: np.ndarray  # [P] GPUs powered (busy or idle); the rest are off
    assignments: tuple[Assignment, ...]


class Policy(Protocol):
    name: str

    def reset(self, world: World, workload: Workload) -> None:
        """Start of a run. Policies may keep the static plant; they must not read prices here."""
        ...

    def decide(self, view: HourView) -> HourPlan: ...

