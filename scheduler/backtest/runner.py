"""Running a backtest: every (policy, scenario) and each scenario's optimum, on Ray or in-process.

What it decides: how the runs are fanned out (one Ray task per policy and scenario, one per
scenario's optimum, on a local Ray of 2 CPUs that is shut down at the end; or one after another
in this process), and how progress is shown. What it leaves to others: building the worlds
(build), the simulation (simulate), the optimum (optimum), the output (report).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from scheduler.backtest.inputs import repo_root
from scheduler.backtest.optimum import DEFAULT_WINDOW_H, OptimumResult, hindsight_optimum
from scheduler.backtest.policies import make_policy
from scheduler.backtest.report import ScenarioOutcome
from scheduler.backtest.results import PolicyResult
from scheduler.backtest.simulate import simulate
from scheduler.backtest.workload import Workload
from scheduler.backtest.world import World

RAY_CPUS = 2
RAY_OBJECT_STORE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class PreparedScenario:
    name: str
    world: World
    workload: Workload


def run_policy(
    world: World, workload: Workload, policy: str, scenario: str,
    progress: Callable[[int, int], None] | None = None,
) -> PolicyResult:
    return simulate(make_policy(policy), world, workload, scenario, progress)


def run_optimum(
    world: World, workload: Workload, window_h: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> OptimumResult:
    return hindsight_optimum(world, workload, window_h, progress)


class ProgressBoard:
    """A Ray actor the tasks report to, so the driver can draw real progress bars."""

    def __init__(self) -> None:
        self.state: dict[str, tuple[int, int]] = {}

    def update(self, key: str, done: int, total: int) -> None:
        self.state[key] = (done, total)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return dict(self.state)


def _reporter(board: Any, key: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        board.update.remote(key, done, total)

    return report


def _policy_task(
    world: World, workload: Workload, policy: str, scenario: str, board: Any, key: str
) -> PolicyResult:
    return run_policy(world, workload, policy, scenario, _reporter(board, key))


def _optimum_task(
    world: World, workload: Workload, window_h: int | None, board: Any, key: str
) -> OptimumResult:
    return run_optimum(world, workload, window_h, _reporter(board, key))


def run_all(
    scenarios: Sequence[PreparedScenario],
    policies: Sequence[str],
    window_h: int | None = DEFAULT_WINDOW_H,
    use_ray: bool = True,
    with_optimum: bool = True,
    console: Console | None = None,
) -> list[ScenarioOutcome]:
    console = console or Console(stderr=True)
    with _progress(console) as progress:
        if use_ray:
            raw = _run_on_ray(scenarios, policies, window_h, with_optimum, progress)
        else:
            raw = _run_here(scenarios, policies, window_h, with_optimum, progress)
    outcomes = []
    for prepared in scenarios:
        results, optimum = raw[prepared.name]
        ordered = tuple(sorted(results, key=lambda r: list(policies).index(r.policy)))
        outcomes.append(ScenarioOutcome(prepared.name, ordered, optimum, prepared.world))
    return outcomes


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


_Raw = dict[str, tuple[list[PolicyResult], OptimumResult | None]]


def _run_here(
    scenarios: Sequence[PreparedScenario],
    policies: Sequence[str],
    window_h: int | None,
    with_optimum: bool,
    progress: Progress,
) -> _Raw:
    out: _Raw = {}
    for prepared in scenarios:
        results: list[PolicyResult] = []
        for name in policies:
            task = progress.add_task(f"{prepared.name} / {name}", total=prepared.world.hours)
            results.append(
                simulate(
                    make_policy(name), prepared.world, prepared.workload, prepared.name,
                    progress=_advance(progress, task),
                )
            )
        optimum = None
        if with_optimum:
            task = progress.add_task(f"{prepared.name} / hindsight optimum", total=1)
            optimum = hindsight_optimum(
                prepared.world, prepared.workload, window_h, progress=_advance(progress, task)
            )
        out[prepared.name] = (results, optimum)
    return out


def _advance(progress: Progress, task: TaskID) -> Callable[[int, int], None]:
    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update


def _run_on_ray(
    scenarios: Sequence[PreparedScenario],
    policies: Sequence[str],
    window_h: int | None,
    with_optimum: bool,
    progress: Progress,
) -> _Raw:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        # Workers import this package by path: the repository need not be installed.
        path = os.pathsep.join(p for p in (str(repo_root()), os.environ.get("PYTHONPATH")) if p)
        ray.init(
            num_cpus=RAY_CPUS,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=RAY_OBJECT_STORE_BYTES,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    try:
        # Ray's handles are dynamic (`.remote`); typed loosely here, checked by the tests.
        remote: Any = ray.remote
        board: Any = remote(num_cpus=0)(ProgressBoard).remote()
        policy_task: Any = remote(num_cpus=1)(_policy_task)
        optimum_task: Any = remote(num_cpus=1)(_optimum_task)
        bars: dict[str, TaskID] = {}
        policy_refs: dict[Any, tuple[str, str]] = {}
        optimum_refs: dict[Any, str] = {}
        for prepared in scenarios:
            world_ref = ray.put(prepared.world)
            workload_ref = ray.put(prepared.workload)
            if with_optimum:
                key = f"{prepared.name} / hindsight optimum"
                bars[key] = progress.add_task(key, total=None)
                optimum_ref = optimum_task.remote(world_ref, workload_ref, window_h, board, key)
                optimum_refs[optimum_ref] = prepared.name
            for name in policies:
                key = f"{prepared.name} / {name}"
                bars[key] = progress.add_task(key, total=None)
                policy_ref = policy_task.remote(
                    world_ref, workload_ref, name, prepared.name, board, key
                )
                policy_refs[policy_ref] = (prepared.name, name)
        results: dict[str, list[PolicyResult]] = {p.name: [] for p in scenarios}
        optima: dict[str, OptimumResult | None] = {p.name: None for p in scenarios}
        waiting = [*optimum_refs, *policy_refs]
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=0.5)
            snapshot: dict[str, tuple[int, int]] = ray.get(board.snapshot.remote())
            for key, (count, total) in snapshot.items():
                progress.update(bars[key], completed=count, total=total)
            for ref in done:
                if ref in optimum_refs:
                    scenario = optimum_refs[ref]
                    optimum: OptimumResult = ray.get(ref)
                    optima[scenario] = optimum
                    key = f"{scenario} / hindsight optimum"
                else:
                    scenario, name = policy_refs[ref]
                    result: PolicyResult = ray.get(ref)
                    results[scenario].append(result)
                    key = f"{scenario} / {name}"
                progress.update(bars[key], completed=1, total=1)
        return {name: (results[name], optima[name]) for name in results}
    finally:
        if started_here:
            ray.shutdown()
