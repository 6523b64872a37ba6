"""Backtest policies: hashserve's own (the live planner and placer) and the baselines.

Registered by name, explicitly, so the CLI and the Ray tasks build them the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.backtest.policies.always_mine import AlwaysMine
from scheduler.backtest.policies.base import Assignment, HourPlan, HourView, Policy, WorkItem
from scheduler.backtest.policies.cheapest_now import CheapestNow
from scheduler.backtest.policies.hashserve import HashservePolicy
from scheduler.backtest.policies.live_tick import LiveTickPolicy
from scheduler.backtest.policies.round_robin import RoundRobin
from scheduler.backtest.policies.serve_first import ServeFirst

POLICIES: dict[str, Callable[[], Policy]] = {
    "hashserve": HashservePolicy,
    "hashserve_live": LiveTickPolicy,
    "always_mine": AlwaysMine,
    "serve_first": ServeFirst,
    "cheapest_now": CheapestNow,
    "round_robin": RoundRobin,
}
BASELINES = ("always_mine", "serve_first", "cheapest_now", "round_robin")
# What a backtest runs unless told: `hashserve_live` (the live core itself, job by job) takes
# minutes per month where the others take seconds, so it runs when asked (`--policy`).
DEFAULT_POLICIES = ("hashserve", *BASELINES)


def make_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None


__all__ = [
    "BASELINES",
    "DEFAULT_POLICIES",
    "POLICIES",
    "AlwaysMine",
    "Assignment",
    "CheapestNow",
    "HashservePolicy",
    "HourPlan",
    "HourView",
    "LiveTickPolicy",
    "Policy",
    "RoundRobin",
    "ServeFirst",
    "WorkItem",
    "make_policy",
]
