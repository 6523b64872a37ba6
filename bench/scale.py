"""Scale: the scheduler core at 10,000 nodes and 100,000 queued jobs, and the power planner at
1,000 sites, in simulated time; time per tick and memory per job and per node.

    python bench/scale.py [--nodes 10000] [--queued 100000] [--sites 1000] [--rate 2000]
                          [--seconds 10] [--smoke]

Core (SchedulerCore, ManualClock, no I/O): 10,000 nodes connect (three kinds of server over 1,000
sites in four regions, some sites curtailed), 100,000 jobs wait in the queue beyond what the nodes
can hold (jobs of two models and three tiers sized from the Azure 2023 trace, request payloads as
the live service keeps them), site views priced from one real hour with a 24-hour outlook. Timed:
  fill tick:    a tick that places a full budget of jobs (max_placements_per_tick, 4,096) on
                empty nodes;
  steady tick:  nodes full; between ticks 1 % of the running jobs finish (their outcomes reach
                the core, untimed), and the tick places as many again;
  idle tick:    nodes full and nothing finished: leases, deadlines and an empty placement round.
Planner: plan_power over 1,000 sites (ASIC fleets and GPU groups built from core/fleet.py
dataclasses, a MarketSnapshot of the same real hour, AI demand at every site): the first tick
and the next (with the previous plan: hysteresis and dwell).
Arrivals: 2,000 jobs a second arriving at the 10,000 nodes of the 1,000 sites, as many
finishing, for 10 simulated seconds: the journal (a real SQLite file) and the core per job,
and the share of one core that takes (`measure_arrivals`).
Memory: Python heap per queued job and per connected node (tracemalloc, on a tenth of the sizes),
and the process's resident memory growth while jobs and nodes are added at full size.
Targets: one planning tick under a second; a core tick well under the 0.5 s tick interval.
"""

from __future__ import annotations

import gc
import random
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# bench/http.py's name would hide the standard library's `http` from every import after this
# if this folder stayed first on the path (as it is for a script): it goes, the repository comes.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    MarketHour,
    SitePlan,
    finish,
    market_hour,
    parser,
    pin_to_one_core,
    plan_sites,
    table,
    trace_tokens,
)
from bench.placement import site_views
from hashserve.client import embed_spec, generate_spec
from scheduler.api.convert import canonical_spec_blob, spec_hash
from scheduler.core.clock import ManualClock
from scheduler.core.economics import asic_power_mw
from scheduler.core.fleet import AsicFleetSpec, Fleet, GpuNodeGroup, SiteSpec
from scheduler.core.jobs import JobRecord, JobSpecData
from scheduler.core.market import DEFAULT_FX_USD_PER_UNIT, MarketSnapshot
from scheduler.core.models import MINILM, SMOLLM2, ModelKind, Tier
from scheduler.core.planner import PowerPlan, SiteAiDemand, plan_power
from scheduler.core.scheduler import NodeInfo, SchedulerCore, SchedulerPolicy

TICK_S = 0.5  # the live loop's default tick (scheduler/settings.py tick_s)
# Servers as in bench/placement.py (powers from scheduler/fleet/example_fleet.yaml), with the
# concurrent jobs an agent takes at once (its max_concurrent_jobs).
NODE_KINDS = (
    # (kind, share, idle kW, busy kW, memory MB, slots)
    ("h100-sxm-8x", 0.3, 3.0, 10.2, 655_360, 4),
    ("l40s-4x", 0.4, 0.6, 2.2, 196_608, 2),
    ("cpu-x86", 0.3, 0.12, 0.35, 8_192, 1),
)
TIER_SHARE = {Tier.INTERACTIVE: 0.3, Tier.STANDARD: 0.5, Tier.FLEX: 0.2}
REGIONS = ("north_america", "europe", "south_america", "asia_pacific")


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc), 0 where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ----- the core --------------------------------------------------------------------------------


def node_infos(n: int, sites: Sequence[SitePlan], rng: random.Random) -> list[NodeInfo]:
    infos = []
    for i in range(n):
        site = sites[i % len(sites)]
        kind, _, idle_kw, busy_kw, memory_mb, slots = rng.choices(
            NODE_KINDS, weights=[k[1] for k in NODE_KINDS]
        )[0]
        models = [MINILM.name, SMOLLM2.name] if rng.random() < 0.8 else [MINILM.name]
        infos.append(
            NodeInfo(
                node_id=f"{site.name}-n{i:05d}", site=site.name, region=site.region,
                gpu_kind=kind, models=frozenset(models), memory_mb=memory_mb,
                slots_total=slots, idle_power_kw=idle_kw, busy_power_kw=busy_kw,
            )
        )
    return infos


def job_records(n: int, now_s: float, rng: random.Random) -> list[JobRecord]:
    """Queued jobs as the customer API builds them (canonical spec blob, hash, defaults)."""
    records = []
    for context, generated in trace_tokens(rng, n):
        tier = rng.choices(list(TIER_SHARE), weights=list(TIER_SHARE.values()))[0]
        draw = rng.random()
        regions: tuple[str, ...] = ()
        if draw < 0.15:
            regions = (rng.choice(REGIONS),)
        if rng.random() < 0.45:
            model = MINILM
            # Texts of ~4 bytes a token (validation.estimate_tokens), each within the window.
            texts = ["x" * min(context * 4, 1000)] * rng.randint(1, 4)
            spec = embed_spec(model.name, texts, tier.value, regions)
            inp, out = sum(min(max(1, len(t) // 4), 256) for t in texts), 0
        else:
            model = SMOLLM2
            out = max(1, min(generated, 512))
            inp = max(1, min(context, 2048 - out))
            spec = generate_spec(model.name, "y" * (inp * 4), out, tier.value, regions=regions)
        terms = model.tiers[tier]
        deadline_s = now_s + terms.default_deadline_s
        spec.deadline.FromNanoseconds(int(deadline_s * 1e9))
        blob = canonical_spec_blob(spec)
        records.append(
            JobRecord(
                job_id=f"job_{uuid.UUID(int=rng.getrandbits(128)).hex}",
                tenant=f"tenant-{rng.randrange(50)}",
                spec=JobSpecData(
                    model=model.name,
                    kind=model.kind if model.kind is ModelKind.EMBEDDING else ModelKind.GENERATION,
                    tier=tier, input_tokens=inp, output_tokens_est=out, deadline_s=deadline_s,
                    allowed_regions=frozenset(regions), memory_mb=model.memory_mb,
                    value_usd=(inp + out) * terms.usd_per_million_tokens / 1e6,
                ),
                spec_blob=blob,
                submitted_s=now_s,
                spec_hash=spec_hash(blob),
            )
        )
    return records


def build_core(
    n_nodes: int, sites: Sequence[SitePlan], market: MarketHour, clock: ManualClock,
    rng: random.Random,
) -> SchedulerCore:
    core = SchedulerCore(SchedulerPolicy())
    for info in node_infos(n_nodes, sites, rng):
        core.connect_node(info, (), clock.now_s())
    core.site_views = site_views(sites, market)
    curtailed = {s.name for s in rng.sample(list(sites), max(1, len(sites) // 12))}
    core.serving_sites = {s.name for s in sites} - curtailed
    return core


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def running_keys(core: SchedulerCore) -> list[tuple[str, str, int]]:
    return [
        (node_id, job_id, attempt)
        for node_id, node in core.nodes.items()
        for job_id, attempt in node.running
    ]


def measure_core(
    n_nodes: int, n_queued: int, sites: Sequence[SitePlan], market: MarketHour, smoke: bool,
    rng: random.Random,
) -> dict[str, Any]:
    clock = ManualClock(market.t_s)
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    core = build_core(n_nodes, sites, market, clock, rng)
    connect_s = time.perf_counter() - t0
    core.schedule(clock.now_s())  # nothing queued yet: brings the node bookkeeping up to date
    gc.collect()
    rss_nodes = rss_bytes() - rss0
    slots = sum(node.info.slots_total for node in core.nodes.values())
    rss1 = rss_bytes()
    records = job_records(n_queued + slots, clock.now_s(), rng)
    blob_bytes = sum(len(r.spec_blob) for r in records) / len(records)
    t0 = time.perf_counter()
    for rec in records:
        core.submit(rec)
    submit_s = time.perf_counter() - t0
    del records  # the core holds them now
    gc.collect()
    rss_jobs = rss_bytes() - rss1

    fill_ticks: list[tuple[float, int]] = []
    while True:
        clock.advance(TICK_S)
        step, took = timed(core.tick, clock.now_s())
        placed = sum(1 for i in step.intents if type(i).__name__ == "Assign")
        fill_ticks.append((took, placed))
        if placed == 0 or len(fill_ticks) >= 60:
            break
    fill = max(fill_ticks[:-1] or fill_ticks, key=lambda tp: tp[1])

    finished_per_tick = max(1, sum(p for _, p in fill_ticks) // 100)

    def steady_ticks() -> list[tuple[float, int]]:
        out = []
        for _ in range(3 if smoke else 10):
            done = rng.sample(running_keys(core), finished_per_tick)
            for node_id, job_id, attempt in done:
                core.job_outcome(node_id, job_id, attempt, clock.now_s(), tokens=200,
                                 run_ms=rng.uniform(50.0, 4000.0))
            clock.advance(TICK_S)
            step, took = timed(core.tick, clock.now_s())
            out.append((took, sum(1 for i in step.intents if type(i).__name__ == "Assign")))
        return out

    steady = steady_ticks()
    # The same steady ticks with every site under a power budget (as the live power tick sets
    # them: what each plan switched on), large enough to stop nothing: what the budget check costs.
    core.site_budget_mw = {n.info.site: 1e9 for n in core.nodes.values()}
    budgeted = [took for took, _ in steady_ticks()]
    core.site_budget_mw = {}
    idle: list[float] = []
    for _ in range(3 if smoke else 5):
        clock.advance(TICK_S)
        idle.append(timed(core.tick, clock.now_s())[1])

    steady_s = sorted(t for t, _ in steady)
    return {
        "nodes": n_nodes,
        "slots": slots,
        "jobs_in_core": len(core.jobs),
        "queued": core.queued_count(),
        "connect_us_per_node": round(connect_s / n_nodes * 1e6, 2),
        "submit_us_per_job": round(submit_s / (n_queued + slots) * 1e6, 2),
        "fill_tick_s": round(fill[0], 4),
        "fill_tick_placed": fill[1],
        "fill_us_per_placement": round(fill[0] / max(fill[1], 1) * 1e6, 1),
        "fill_ticks": len(fill_ticks),
        "steady_tick_s_p50": round(steady_s[len(steady_s) // 2], 4),
        "steady_tick_s_max": round(steady_s[-1], 4),
        "steady_tick_placed": steady[-1][1],
        "steady_tick_budgeted_s_p50": round(sorted(budgeted)[len(budgeted) // 2], 4),
        "budgeted_vs_plain_steady_tick": round(
            sorted(budgeted)[len(budgeted) // 2] / max(steady_s[len(steady_s) // 2], 1e-9), 3
        ),
        "idle_tick_s_p50": round(sorted(idle)[len(idle) // 2], 4),
        "rss_bytes_per_node": round(rss_nodes / n_nodes),
        "rss_bytes_per_job": round(rss_jobs / (n_queued + slots)),
        "spec_blob_bytes_per_job": round(blob_bytes),
    }


def measure_arrivals(
    rate_per_s: float, n_nodes: int, sites: Sequence[SitePlan], market: MarketHour,
    seconds: float, rng: random.Random, journal_dir: Path,
) -> dict[str, Any]:
    """A steady stream of `rate_per_s` jobs a second at `n_nodes` nodes over the sites, for
    `seconds` of simulated time: every tick the jobs that arrived in it are journalled and
    submitted, as many running ones finish (their outcomes journalled), and the core ticks.

    The cost per job is the CPU of the three (journal, core calls, tick) over the jobs; the
    journal is a real SQLite file at NORMAL (one commit per tick's group of submits and one
    per tick's changes, as the live loop's group commit does). `core_share` is the share of one
    core the core's own work takes at this rate: above 1, one scheduler cannot keep up."""
    from scheduler.journal.sqlite import SqliteJournal

    clock = ManualClock(market.t_s)
    core = build_core(n_nodes, sites, market, clock, rng)
    core.schedule(clock.now_s())
    journal = SqliteJournal(journal_dir / "arrivals.db", synchronous="NORMAL")
    per_tick = max(1, round(rate_per_s * TICK_S))
    ticks = max(1, round(seconds / TICK_S))
    core_s = journal_s = 0.0
    jobs = 0
    tick_times: list[float] = []
    try:
        # Warm: fill the nodes to a steady level before timing.
        warm = job_records(per_tick * 4, clock.now_s(), rng)
        journal.insert_jobs(warm)
        for rec in warm:
            core.submit(rec)
        clock.advance(TICK_S)
        journal.write_jobs(list(core.tick(clock.now_s()).changed))
        for _ in range(ticks):
            arriving = job_records(per_tick, clock.now_s(), rng)
            running = running_keys(core)
            done = rng.sample(running, min(per_tick, len(running)))
            t0 = time.perf_counter()
            journal.insert_job_groups([arriving])
            t1 = time.perf_counter()
            for rec in arriving:
                core.submit(rec)
            changed = []
            for node_id, job_id, attempt in done:
                verdict = core.job_outcome(node_id, job_id, attempt, clock.now_s(), tokens=200,
                                           run_ms=rng.uniform(50.0, 4000.0))
                changed += verdict.step.changed
            clock.advance(TICK_S)
            step = core.tick(clock.now_s())
            t2 = time.perf_counter()
            journal.write_jobs([*changed, *step.changed])
            t3 = time.perf_counter()
            core_s += t2 - t1
            journal_s += (t1 - t0) + (t3 - t2)
            tick_times.append(t2 - t1)
            jobs += len(arriving)
    finally:
        journal.close()
    wall_s = ticks * TICK_S
    tick_times.sort()
    return {
        "rate_per_s": rate_per_s,
        "nodes": n_nodes,
        "sites": len(sites),
        "simulated_s": wall_s,
        "jobs": jobs,
        "core_us_per_job": round(core_s / jobs * 1e6, 1),
        "journal_us_per_job": round(journal_s / jobs * 1e6, 1),
        "cost_us_per_job": round((core_s + journal_s) / jobs * 1e6, 1),
        "core_share": round(core_s / wall_s, 3),
        "core_and_journal_share": round((core_s + journal_s) / wall_s, 3),
        "core_tick_s_p50": round(tick_times[len(tick_times) // 2], 4),
        "core_tick_s_max": round(tick_times[-1], 4),
        "queued_at_end": core.queued_count(),
    }


def heap_per_item(
    n_nodes: int, n_jobs: int, sites: Sequence[SitePlan], market: MarketHour, rng: random.Random,
) -> dict[str, float]:
    """Python heap bytes per connected node (with its placement index row) and per queued job."""
    clock = ManualClock(market.t_s)
    infos = node_infos(n_nodes, sites, rng)
    records = job_records(n_jobs, clock.now_s(), rng)
    blob = sum(len(r.spec_blob) for r in records)
    gc.collect()
    tracemalloc.start()
    core = SchedulerCore(SchedulerPolicy(max_placements_per_tick=1))
    base = tracemalloc.get_traced_memory()[0]
    for info in infos:
        core.connect_node(info, (), clock.now_s())
    core.schedule(clock.now_s())  # builds the placement index (nothing queued yet)
    after_nodes = tracemalloc.get_traced_memory()[0]
    for rec in records:
        core.submit(rec)
    after_jobs = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # The records themselves were made before tracing: only what the core adds is counted here,
    # so add the record's own size (measured on a copy made while tracing).
    tracemalloc.start()
    copies = job_records(min(n_jobs, 2000), clock.now_s(), random.Random(1))
    record_bytes = tracemalloc.get_traced_memory()[0] / len(copies)
    tracemalloc.stop()
    del copies, core, infos
    return {
        "heap_bytes_per_node": round((after_nodes - base) / n_nodes),
        "heap_bytes_per_job_in_core": round((after_jobs - after_nodes) / n_jobs),
        "heap_bytes_per_job_record": round(record_bytes),
        "spec_blob_bytes_per_job": round(blob / n_jobs),
    }


# ----- the planner -----------------------------------------------------------------------------


def build_fleet(sites: Sequence[SitePlan], rng: random.Random) -> Fleet:
    specs = []
    for s in sites:
        hashrate_phs = rng.uniform(200.0, 3000.0)
        asic_mw = asic_power_mw(hashrate_phs, s.efficiency_j_per_th)
        groups = []
        for kind, share, idle_kw, busy_kw, memory_mb, _ in NODE_KINDS:
            if rng.random() < share + 0.2:
                groups.append(GpuNodeGroup(kind, rng.randint(2, 40), idle_kw, busy_kw, memory_mb,
                                           (MINILM.name, SMOLLM2.name)))
        gpu_mw = sum(g.busy_power_mw for g in groups)
        cap_mw = asic_mw if s.at_cap else asic_mw * 1.1 + gpu_mw
        specs.append(
            SiteSpec(
                name=s.name, region=s.region, price_zone=s.zone, power_cap_mw=cap_mw,
                asic=AsicFleetSpec(
                    hashrate_phs=hashrate_phs, efficiency_j_per_th=s.efficiency_j_per_th,
                    pool_fee=0.02, curtail_block_mw=2.5 if asic_mw >= 15 else 1.25,
                    ramp_s=rng.choice([120.0, 300.0]),
                ),
                gpu_groups=tuple(groups),
            )
        )
    return Fleet(sites=tuple(specs), fx_usd_per_unit=DEFAULT_FX_USD_PER_UNIT)


def snapshot(market: MarketHour, now_s: float) -> MarketSnapshot:
    return MarketSnapshot(
        t_s=now_s,
        price_usd_per_mwh_by_zone=dict(market.price_usd_per_mwh),
        btc_usd=market.btc_usd,
        difficulty=market.difficulty,
        fees_btc_per_block=market.fees_btc_per_block,
        hashprice_usd_per_phs_day=market.hashprice_usd_per_phs_day,
        market_time_s=market.t_s,
    )


def measure_planner(
    n_sites: int, sites: Sequence[SitePlan], market: MarketHour, rng: random.Random
) -> dict[str, Any]:
    fleet = build_fleet(sites, rng)
    demand = {
        s.name: SiteAiDemand(
            ai_busy_mw=s.gpu_busy_mw * rng.uniform(0.0, 0.6),
            ai_queued_mw=s.gpu_busy_mw * rng.uniform(0.0, 0.5),
            value_usd_per_mwh=rng.uniform(50.0, 400.0),
            standby_mw=s.gpu_busy_mw * 0.05,
        )
        for s in fleet.sites
    }
    clock = ManualClock(market.t_s)
    times = []
    previous: PowerPlan | None = None
    for _ in range(4):
        plan, took = timed(
            plan_power, fleet, snapshot(market, clock.now_s()), demand, previous, {},
            clock.now_s(),
        )
        times.append(took)
        previous = plan
        clock.advance(2.0)  # scheduler/settings.py plan_interval_s
    assert previous is not None
    return {
        "sites": n_sites,
        "gpu_nodes": sum(g.count for s in fleet.sites for g in s.gpu_groups),
        "first_tick_s": round(times[0], 4),
        "next_tick_s": round(sorted(times[1:])[len(times[1:]) // 2], 4),
        "mining_mw": round(previous.mining_mw, 1),
        "ai_mw": round(previous.ai_mw, 2),
    }


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--queued", type=int, default=100_000)
    p.add_argument("--sites", type=int, default=1_000)
    p.add_argument("--rate", type=float, default=2_000.0,
                   help="jobs a second arriving, for the steady-stream measurement")
    p.add_argument("--seconds", type=float, default=10.0, help="simulated seconds of it")
    args = p.parse_args()
    cpu = pin_to_one_core()
    n_nodes, n_queued, n_sites = (
        (200, 2_000, 40) if args.smoke else (args.nodes, args.queued, args.sites)
    )
    rng = random.Random(args.seed)
    market = market_hour(rng)
    sites = plan_sites(n_sites, rng)
    planner = measure_planner(n_sites, sites, market, random.Random(args.seed + 1))
    core = measure_core(n_nodes, n_queued, sites, market, args.smoke, random.Random(args.seed + 2))
    with tempfile.TemporaryDirectory(prefix="hs-scale-") as tmp:
        arrivals = measure_arrivals(
            200.0 if args.smoke else args.rate, n_nodes, sites, market,
            2.0 if args.smoke else args.seconds, random.Random(args.seed + 4), Path(tmp),
        )
    heap = heap_per_item(
        max(n_nodes // 10, 20), max(n_queued // 10, 200), sites, market,
        random.Random(args.seed + 3),
    )
    print(f"scale on one core (cpu {cpu}); simulated time, tick {TICK_S} s")
    print(table(
        [
            ["plan_power, first tick", f"{planner['first_tick_s']:.3f} s", f"{n_sites} sites"],
            ["plan_power, next tick", f"{planner['next_tick_s']:.3f} s", "target < 1 s"],
            ["core fill tick", f"{core['fill_tick_s']:.3f} s",
             f"{core['fill_tick_placed']} placed, {core['fill_us_per_placement']} us each"],
            ["core steady tick p50", f"{core['steady_tick_s_p50']:.3f} s",
             f"{core['steady_tick_placed']} placed, {core['queued']:,} queued"],
            ["core steady tick p50, site budgets", f"{core['steady_tick_budgeted_s_p50']:.3f} s",
             f"x{core['budgeted_vs_plain_steady_tick']} the plain steady tick"],
            ["core idle tick p50", f"{core['idle_tick_s_p50']:.3f} s",
             f"{core['jobs_in_core']:,} jobs, {n_nodes:,} nodes"],
            ["submit into core", f"{core['submit_us_per_job']} us/job", ""],
            [f"{arrivals['rate_per_s']:,.0f} jobs/s arriving, cost per job",
             f"{arrivals['cost_us_per_job']} us",
             f"core {arrivals['core_us_per_job']} us + journal "
             f"{arrivals['journal_us_per_job']} us; {arrivals['nodes']:,} nodes"],
            ["  share of one core at that rate", f"{arrivals['core_and_journal_share']:.2f}",
             f"core alone {arrivals['core_share']:.2f}; tick p50 "
             f"{arrivals['core_tick_s_p50']:.3f} s"],
            ["connect a node", f"{core['connect_us_per_node']} us/node", ""],
            ["heap per node", f"{heap['heap_bytes_per_node']:,} B", "tracemalloc"],
            ["heap per queued job", f"{heap['heap_bytes_per_job_record']:,} B",
             f"record with its {heap['spec_blob_bytes_per_job']:,} B request; core adds "
             f"{heap['heap_bytes_per_job_in_core']:,} B"],
            ["RSS per node", f"{core['rss_bytes_per_node']:,} B", ""],
            ["RSS per queued job", f"{core['rss_bytes_per_job']:,} B", ""],
        ],
        ["what", "figure", "note"],
    ))
    summary = {
        "planner_tick_under_1s": planner["next_tick_s"] < 1.0 and planner["first_tick_s"] < 1.0,
        "core_steady_tick_under_tick_s": core["steady_tick_s_max"] < TICK_S,
        "keeps_up_with_arrivals": arrivals["core_and_journal_share"] < 1.0,
    }
    finish("scale", args, {"cpu": cpu, "planner": planner, "core": core, "heap": heap,
                           "arrivals": arrivals, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
