"""Live scheduler and backtest side by side: the same hours, fleet and workload, one ledger each.

Both run the same tick of the core (`SchedulerCore` and `PowerTick`):
- live: the scheduler in Ray, one real agent per site (SmolLM2 on the CPU), the shipped market
  replayed on a compressed clock (`--seconds-per-hour`), jobs submitted over gRPC at their times;
- backtest: `scheduler/backtest/twin.py`, the same core and settings on a virtual clock, agents
  modelled from the same engine's measured speed and token counts.

The fleet is four sites of the example fleet, on four price zones (`--sites`); the hours are
fixed (`--start`, `--hours`) and include hours in which the Texas site curtails for price, and a
demand-response window with a MW target that ops schedule through the admin API (`--dr-*`; the
twin gets the same window). The
workload is seeded (`--seed`): `--jobs-per-hour` generations per market hour, of mixed tiers and
prompts. Before the run, each prompt is generated once with the agents' engine: that is the
workload's trace of tokens per request (greedy decoding, so every run uses the same tokens).

Both ledgers cover the same whole market hours: MWh mining, AI and curtailed, revenue by source,
power cost and profit.

    python bench/twin.py [--hours 24] [--seconds-per-hour 8] [--jobs-per-hour 3]

Last line: JSON with `profit_ratio`, `ai_revenue_ratio` and `curtail_mwh_ratio` (live / backtest;
each must be within 2% of 1), and both ledgers.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# bench/http.py's name would hide the standard library's `http` from every import after this
# if this folder stayed first on the path (as it is for a script): it goes, the repository comes.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import finish, parser, table
from hashserve.admin_client import AdminClient
from hashserve.client import Client, generate_spec
from hashserve.local import AgentPlan, LocalCluster
from hashserve.v1 import jobs_pb2
from scheduler.api.validation import validate_spec
from scheduler.backtest.twin import TwinJob, TwinNode, TwinSettings, run_twin
from scheduler.core.accounting import SiteHourRow
from scheduler.core.fleet import Fleet
from scheduler.core.market import DEFAULT_MARKET_LIMITS
from scheduler.core.models import DEFAULT_CATALOGUE, priced_catalogue
from scheduler.core.planner import CurtailmentWindow, SiteOverride
from scheduler.core.scheduler import NodeInfo
from scheduler.feeds.history import parse_utc_s
from scheduler.feeds.layered import LayeredFeed
from scheduler.feeds.replay import ReplayFeed
from scheduler.fleet import default_fleet_path, load_fleet

GEN = "smollm2-135m-instruct"
SITES = ("tx-odessa", "de-leipzig", "ca-sacramento", "br-minas")
TIERS = ("interactive", "standard", "standard", "flex")
PROMPTS = (
    "Write a long story about a wind farm on a winter night.",
    "Explain, step by step and at length, how a grid operator balances supply and demand.",
    "Describe a day in the life of a Bitcoin mining site technician, in detail.",
    "List twenty uses of waste heat from computers, with a sentence on each.",
    "Tell a long tale of a lighthouse keeper and a storm.",
    "Explain at length how a heat pump works, for a curious child.",
)
IDLE_KW, BUSY_KW = 0.3, 0.7
PLAN_INTERVAL_S, TICK_S = 2.0, 0.2
# How long before a window a site stops taking new work (scheduler seconds). Short here, so that
# work still runs when the window starts and is shed (bench/curtail.py measures that alone).
DR_LEAD_S = 1.0
# Market hours the live scheduler runs before the compared hours start (Ray, the agents and a
# first plan come up in them), and after they end (the last hour's ledger is booked).
LEAD_WALL_S = 40.0
SETTLE_H = 0.5
LEDGER_FIELDS = (
    ("mining_mwh", "MWh mining"), ("ai_mwh", "MWh AI"), ("curtailed_mwh", "MWh curtailed"),
    ("mining_revenue_usd", "mining revenue $"), ("ai_revenue_usd", "AI revenue $"),
    ("power_cost_usd", "power cost $"), ("profit_usd", "profit $"),
)


@dataclass(frozen=True)
class Trace:
    """What one prompt uses when generated (greedy): the workload's tokens per request."""

    prompt_tokens: int
    completion_tokens: int
    seconds: float


def measure_prompts(max_tokens: int) -> dict[str, Trace]:
    from node_agent.backends.base import GenerateParams
    from node_agent.backends.llama_cpp_generation import LlamaCppGenerationBackend

    backend = LlamaCppGenerationBackend(GEN)
    out = {}
    for prompt in PROMPTS:
        t0 = time.perf_counter()
        result = backend.generate(
            GenerateParams(prompt=prompt, max_tokens=max_tokens), lambda _: None, lambda: False
        )
        out[prompt] = Trace(
            result.prompt_tokens, result.completion_tokens, time.perf_counter() - t0
        )
    return out


@dataclass(frozen=True)
class Planned:
    offset_s: float  # scheduler seconds after the replay's origin
    prompt: str
    tier: str


def workload(args: Any, seconds_per_hour: float) -> list[Planned]:
    rng = random.Random(args.seed)
    planned = []
    # Arrivals from the second hour to the one before last, so that every job is answered
    # within the compared hours in both runs.
    for hour in range(1, args.hours - 1):
        for _ in range(args.jobs_per_hour):
            planned.append(
                Planned(
                    (hour + rng.random()) * seconds_per_hour, rng.choice(PROMPTS),
                    rng.choice(TIERS),
                )
            )
    return sorted(planned, key=lambda p: p.offset_s)


def small_fleet(tmp: Path, sites: tuple[str, ...]) -> tuple[Path, Fleet]:
    doc = yaml.safe_load(default_fleet_path().read_text())
    doc["sites"] = [s for s in doc["sites"] if s["name"] in sites]
    missing = set(sites) - {s["name"] for s in doc["sites"]}
    if missing:
        raise SystemExit(f"not in the example fleet: {', '.join(sorted(missing))}")
    path = tmp / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, load_fleet(path)


async def run_live(
    cluster: LocalCluster, planned: list[Planned], origin_s: float, end_s: float,
    args: Any,
) -> tuple[list[SiteHourRow], dict[str, int]]:
    assert cluster.credentials is not None
    states: dict[str, int] = {}
    async with AdminClient(cluster.address, cluster.credentials.admin_key) as a, Client(
        cluster.address, cluster.credentials.api_key
    ) as c:
        if args.dr_hours > 0:
            dr_start_s = origin_s + args.dr_hour * args.seconds_per_hour
            await a.curtail(
                args.dr_site, dr_start_s, dr_start_s + args.dr_hours * args.seconds_per_hour,
                "bench: demand response", max_load_mw=args.dr_max_load_mw,
            )
        job_ids = []
        for p in planned:
            delay = origin_s + p.offset_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            resp = await c.submit(generate_spec(GEN, p.prompt, args.max_tokens, p.tier))
            job_ids.append(resp.job.id)
        await asyncio.sleep(max(end_s - time.time(), 0.0))
        for job_id in job_ids:
            job = await c.get(job_id)
            name = jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
            states[name] = states.get(name, 0) + 1
            if job.attempt > 1:
                states["moved"] = states.get("moved", 0) + 1
        rows = [
            SiteHourRow(
                site=r.site, hour_start_s=float(r.hour.seconds), mining_mwh=r.mining_mwh,
                ai_mwh=r.ai_mwh, idle_mwh=r.idle_mwh, curtailed_mwh=r.curtailed_mwh,
                mining_revenue_usd=r.mining_revenue_usd, ai_revenue_usd=r.ai_revenue_usd,
                power_cost_usd=r.power_cost_usd,
            )
            for r in (await a.accounting()).rows
        ]
    return rows, states


def sums(rows: list[SiteHourRow], first_s: float, hours: int) -> dict[str, float]:
    kept = [r for r in rows if first_s <= r.hour_start_s < first_s + hours * 3600.0]
    out = {name: sum(getattr(r, name) for r in kept) for name, _ in LEDGER_FIELDS}
    out["hours_covered"] = len({r.hour_start_s for r in kept})
    return out


def shown(name: str, value: float) -> object:
    # CPU nodes earn cents: AI revenue is shown to the micro-dollar.
    return f"{value:.6f}" if name == "ai_revenue_usd" else value


def ratio(live: float, backtest: float) -> float:
    if backtest == 0.0:
        return 1.0 if live == 0.0 else float("inf")
    return live / backtest


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--start", default="2023-08-08T00:00:00Z", help="first compared market hour")
    p.add_argument("--hours", type=int, default=24, help="market hours compared")
    p.add_argument("--seconds-per-hour", type=float, default=8.0, help="compressed clock")
    p.add_argument("--jobs-per-hour", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--sites", default=",".join(SITES))
    p.add_argument("--dr-site", default="de-leipzig", help="site of the demand-response window")
    p.add_argument("--dr-hour", type=float, default=9.0, help="its start, market hours in")
    p.add_argument("--dr-hours", type=float, default=2.0, help="its length (0: no window)")
    p.add_argument("--dr-max-load-mw", type=float, default=5.0, help="the site's load in it")
    args = p.parse_args()
    if args.smoke:
        args.hours, args.seconds_per_hour, args.jobs_per_hour, args.max_tokens = 4, 4.0, 1, 16
        args.dr_hour, args.dr_hours = 2.0, 1.0
    from tests.chaos.harness import llm_installed

    if not llm_installed():
        raise SystemExit("bench/twin.py needs generation: bash scripts/install.sh")
    sites = tuple(s for s in args.sites.split(",") if s)
    speedup = 3600.0 / args.seconds_per_hour
    start_s = parse_utc_s(args.start)
    print(f"measuring the workload's token trace ({len(PROMPTS)} prompts) ...", flush=True)
    traces = measure_prompts(args.max_tokens)
    tokens_per_s = sum(t.prompt_tokens + t.completion_tokens for t in traces.values()) / sum(
        t.seconds for t in traces.values()
    )
    planned = workload(args, args.seconds_per_hour)
    with tempfile.TemporaryDirectory(prefix="hashserve-twin-") as tmp:
        fleet_path, fleet = small_fleet(Path(tmp), sites)
        plans = [
            AgentPlan(f"{site}-0", site, fleet.site(site).region, idle_power_kw=IDLE_KW,
                      busy_power_kw=BUSY_KW)
            for site in sites
        ]
        origin_s = time.time() + LEAD_WALL_S
        end_s = origin_s + (args.hours + SETTLE_H) * args.seconds_per_hour
        settings = {
            "fleet_path": str(fleet_path),
            "market_replay_start": args.start,
            "market_replay_origin_s": origin_s,
            "market_seconds_per_hour": args.seconds_per_hour,
            "plan_interval_s": PLAN_INTERVAL_S,
            "tick_s": TICK_S,
            "dr_window_lead_s": DR_LEAD_S,
        }
        cluster = LocalCluster(
            workdir=Path(tmp) / "live", agents=plans, settings_overrides=settings
        )
        print(f"live: {len(plans)} agents at {', '.join(sites)}; {args.hours} market hours from "
              f"{args.start} at {args.seconds_per_hour:g} s each", flush=True)
        try:
            cluster.start_scheduler()
            # The twin decides with the live scheduler's own settings.
            live_settings = cluster.settings()
            cluster.start_agents()
            from tests.integration.cluster import wait_for_agents

            wait_for_agents(cluster, len(plans))
            if time.time() > origin_s:
                raise SystemExit(f"the cluster took over {LEAD_WALL_S:.0f} s to start")
            live_rows, live_states = asyncio.run(run_live(cluster, planned, origin_s, end_s, args))
        finally:
            cluster.stop()

    # The backtest: the same core on a virtual clock from the same origin.
    twin_origin_s = 1_000_000_000.0
    replay = ReplayFeed(
        start=args.start, speedup=speedup, origin_s=twin_origin_s,
        zones=sorted(fleet.price_zones), fx_usd_per_unit=dict(fleet.fx_usd_per_unit),
        limits=DEFAULT_MARKET_LIMITS.scaled(speedup),
    )
    feed = LayeredFeed.standard(
        sorted(fleet.price_zones), None, None, replay, dict(fleet.fx_usd_per_unit),
        DEFAULT_MARKET_LIMITS.scaled(speedup),
    )
    catalogue = priced_catalogue(DEFAULT_CATALOGUE, fleet.tier_prices_usd_per_million_tokens)
    regions = {s.region for s in fleet.sites}
    jobs = []
    for i, planned_job in enumerate(planned):
        spec, _ = validate_spec(
            generate_spec(GEN, planned_job.prompt, args.max_tokens, planned_job.tier),
            catalogue, regions, 0.0,
        )
        trace = traces[planned_job.prompt]
        # The twin starts `LEAD_WALL_S` before the origin, as the live scheduler does.
        jobs.append(TwinJob(f"twin-{i}", LEAD_WALL_S + planned_job.offset_s, spec,
                            trace.prompt_tokens + trace.completion_tokens))
    model = catalogue[GEN]
    nodes = [
        TwinNode(
            NodeInfo(plan.agent_id, plan.site, plan.region, plan.gpu_kind,
                     frozenset({model.name}), 16_384, plan.max_concurrent_jobs,
                     plan.idle_power_kw, plan.busy_power_kw, frozenset({model.name})),
            tokens_per_s,
        )
        for plan in plans
    ]
    overrides = {}
    if args.dr_hours > 0:
        dr_start_s = twin_origin_s + args.dr_hour * args.seconds_per_hour
        overrides[args.dr_site] = SiteOverride(windows=(CurtailmentWindow(
            dr_start_s, dr_start_s + args.dr_hours * args.seconds_per_hour, args.dr_max_load_mw,
        ),))
    twin = run_twin(
        fleet, feed, replay, nodes, jobs, twin_origin_s - LEAD_WALL_S,
        LEAD_WALL_S + (args.hours + SETTLE_H) * args.seconds_per_hour,
        TwinSettings.from_settings(live_settings),
        overrides=overrides,
    )
    live = sums(live_rows, start_s, args.hours)
    back = sums(twin.accounting.rows(), start_s, args.hours)
    print(table(
        [[label, shown(name, live[name]), shown(name, back[name]), ratio(live[name], back[name])]
         for name, label in LEDGER_FIELDS],
        ["", "live", "backtest", "live / backtest"],
    ))
    twin_states: dict[str, int] = {}
    for rec in twin.jobs.values():
        twin_states[rec.state.value] = twin_states.get(rec.state.value, 0) + 1
    results = {
        "profit_ratio": round(ratio(live["profit_usd"], back["profit_usd"]), 5),
        "ai_revenue_ratio": round(ratio(live["ai_revenue_usd"], back["ai_revenue_usd"]), 5),
        "curtail_mwh_ratio": round(ratio(live["curtailed_mwh"], back["curtailed_mwh"]), 5),
        "hours": args.hours,
        "start": args.start,
        "seconds_per_hour": args.seconds_per_hour,
        "sites": list(sites),
        "jobs": len(planned),
        "live_job_states": live_states,
        "backtest_job_states": twin_states,
        "backtest_preempted": twin.preempted,
        "dr_window": {"site": args.dr_site, "start_hour": args.dr_hour, "hours": args.dr_hours,
                      "max_load_mw": args.dr_max_load_mw} if args.dr_hours > 0 else None,
        "tokens_per_s_measured": round(tokens_per_s, 1),
        "live": {k: round(v, 4) for k, v in live.items()},
        "backtest": {k: round(v, 4) for k, v in back.items()},
    }
    finish("twin", args, results)


if __name__ == "__main__":
    main()
