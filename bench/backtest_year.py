"""How long a year of backtest takes: 44+ sites at hourly steps, every policy and the optimum.

Reads the shipped price file, Bitcoin facts and Azure traces, builds the example fleet's world
for a calendar year (8,784 hours in 2024), then runs hashserve's policy, the four baselines and
the hindsight LP (weekly windows), fanned out as Ray tasks on a local Ray of 2 CPUs (or one
after another with --no-ray). Prints the time of each stage and, last, one JSON line with the
seconds, the sizes and each policy's fraction of the optimum.

    python bench/backtest_year.py [--year 2024] [--no-ray] [--window-h 168]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

# bench/http.py's name would hide the standard library's `http` from every import after this
# if this folder stayed first on the path (as it is for a script): it goes, the repository comes.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from scheduler.backtest.build import (
    build_world,
    generation_model,
    load_market,
    make_workload,
)
from scheduler.backtest.inputs import (
    default_btc_paths,
    default_prices_path,
    default_trace_paths,
    load_trace,
)
from scheduler.backtest.policies import DEFAULT_POLICIES
from scheduler.backtest.runner import PreparedScenario, run_all
from scheduler.backtest.workload import parse_tier_mix
from scheduler.fleet import default_fleet_path, load_fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--year", type=int, default=2024)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--window-h", type=int, default=168)
    args = parser.parse_args()
    err = Console(stderr=True)
    began = time.perf_counter()
    fleet = load_fleet(default_fleet_path())
    btc, fees = default_btc_paths()
    market = load_market(
        fleet, default_prices_path(), btc, fees, date(args.year, 1, 1), date(args.year, 12, 31)
    )
    world = build_world(fleet, market)
    traces = [load_trace(p) for p in default_trace_paths()]
    workload, rate = make_workload(
        world, traces, generation_model(fleet),
        parse_tier_mix("interactive=0.3,standard=0.3,flex=0.4"),
    )
    prepared_s = time.perf_counter() - began
    print(f"inputs and world: {prepared_s:.2f} s ({world.sites} sites, {len(world.pools)} GPU "
          f"pools, {world.hours} hours, {rate:,.0f} requests/s)")
    run_began = time.perf_counter()
    outcome = run_all(
        [PreparedScenario("base", world, workload)], list(DEFAULT_POLICIES), args.window_h,
        use_ray=not args.no_ray, console=err,
    )[0]
    run_s = time.perf_counter() - run_began
    total_s = time.perf_counter() - began
    assert outcome.optimum is not None
    bound = outcome.optimum.profit_usd
    fractions = {r.policy: round(r.profit_usd / bound, 5) for r in outcome.results}
    for r in outcome.results:
        print(f"{r.policy:14s} {r.wall_s:7.1f} s  profit {r.profit_usd:16,.0f} USD  "
              f"{r.profit_usd / bound:.4f} of optimum")
    print(f"optimum LP     {outcome.optimum.solve_s:7.1f} s  profit {bound:16,.0f} USD  "
          f"({outcome.optimum.windows} windows of {outcome.optimum.window_h} h)")
    print(f"run: {run_s:.1f} s; total: {total_s:.1f} s")
    print(json.dumps({
        "bench": "backtest_year",
        "year": args.year,
        "sites": world.sites,
        "gpu_pools": len(world.pools),
        "hours": world.hours,
        "policies": len(outcome.results),
        "ray": not args.no_ray,
        "prepare_s": round(prepared_s, 2),
        "run_s": round(run_s, 2),
        "total_s": round(total_s, 2),
        "policy_s": {r.policy: round(r.wall_s, 2) for r in outcome.results},
        "optimum_solve_s": round(outcome.optimum.solve_s, 2),
        "optimum_windows": outcome.optimum.windows,
        "fraction_of_optimum": fractions,
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }))


if __name__ == "__main__":
    main()
