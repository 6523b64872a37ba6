"""Placement speed: one job's decision against 40, 400 and 4,000 nodes, next to a trivial first-fit.

    python bench/placement.py [--sizes 40,400,4000] [--jobs 2000] [--smoke]

The fleet is realistic in the ways that cost the placer time: 48 sites over the four regions on
the 12 price zones of the shipped price file, opportunity prices from one real hour of it (with
R_mine from that day's hashprice where a site's interconnect is full), a 24-hour price outlook per
site (so flex jobs weigh waiting), three kinds of GPU server with mixed models, learned rates that
differ node by node, slots partly or wholly taken, some nodes draining or gone, some sites
curtailed; jobs of four models and three tiers sized from the Azure 2023 trace, some restricted to
one or two regions; engines that hold some of 32 system prompts' prefixes (half the nodes that
generate, as their agents report them), and generation jobs that start with one of them (six in
ten), so placement weighs the held prefix. Measured on one core, each call timed alone:

  hashserve kept:   place([job], index, ...) with the node index SchedulerCore keeps up to date
                    (what a placement costs in the running scheduler)
  index build:      NodeIndex(nodes) brought up to date: what place() adds when handed a list of
                    views with more than one job (a list with one job is scanned), and what a
                    scheduler pays once at start
  row update:       one node's view replaced and its row rewritten (SchedulerCore does this for
                    each node whose state changed since the last placement)
  per-node scan:    place_by_scan([job], nodes, ...): the loop place() ran before (every node
                    through every filter function and a score), kept for custom filter lists
  first-fit:        the first node, in id order, that serves the model and has a free slot
  batch:            place(256 jobs, index, ...) per job (SchedulerCore places a queue in one call)

Every decision of the fast path is checked against the scan (it must be identical). Targets:
p99 well under 1 ms at 4,000 nodes, and cost growing no faster than linearly in nodes.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

# bench/http.py's name would hide the standard library's `http` from every import after this
# if this folder stayed first on the path (as it is for a script): it goes, the repository comes.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    POOL_FEE,
    MarketHour,
    SitePlan,
    finish,
    market_hour,
    parser,
    pin_to_one_core,
    plan_sites,
    summary_us,
    table,
    time_each,
    trace_tokens,
)
from scheduler.core.economics import mining_revenue_usd_per_mwh, opportunity_price_usd_per_mwh
from scheduler.core.models import DEFAULT_CATALOGUE, MINILM, SMOLLM2, ModelKind, ModelSpec, Tier
from scheduler.core.placement import (
    JobRequest,
    NodeIndex,
    NodeView,
    PriceOutlook,
    SiteView,
    place,
    place_by_scan,
)
from scheduler.core.prefix import prefix_blocks

# Two larger models as a fleet file would add them (same tier terms as SmolLM2). Memory: 16-bit
# weights, 2 bytes a parameter (8B -> 16 GB, 70B -> 140 GB).
LLAMA_8B = ModelSpec(
    name="llama-3.1-8b-instruct", kind=ModelKind.GENERATION, max_input_tokens=8192,
    max_output_tokens=2048, memory_mb=16_384, tiers=SMOLLM2.tiers,
)
# The 70B model is limited to H100 servers, as a catalogue file would say (only they serve it here
# anyway, so the decisions are the same; its jobs go through the accelerator filter's mask).
LLAMA_70B = ModelSpec(
    name="llama-3.1-70b-instruct", kind=ModelKind.GENERATION, max_input_tokens=8192,
    max_output_tokens=2048, memory_mb=143_360, tiers=SMOLLM2.tiers,
    accelerators=frozenset({"h100-sxm-8x"}),
)
CATALOGUE: dict[str, ModelSpec] = {**DEFAULT_CATALOGUE, LLAMA_8B.name: LLAMA_8B,
                                   LLAMA_70B.name: LLAMA_70B}
MODEL_SHARE = {MINILM.name: 0.45, SMOLLM2.name: 0.30, LLAMA_8B.name: 0.20, LLAMA_70B.name: 0.05}
TIER_SHARE = {Tier.INTERACTIVE: 0.3, Tier.STANDARD: 0.5, Tier.FLEX: 0.2}


@dataclass(frozen=True)
class ServerKind:
    """A GPU server as scheduler/fleet/example_fleet.yaml describes it (powers from datasheets
    there: DGX H100 10.2 kW maximum; L40S 4 x 350 W TDP + host; idle powers are assumptions)."""

    name: str
    share: float
    idle_power_kw: float
    busy_power_kw: float
    memory_mb: int
    slots: int
    # Tokens/s a node of this kind runs each model at (choices, in proportion to the hardware).
    tokens_per_s: Mapping[str, float]


KINDS = (
    ServerKind("h100-sxm-8x", 0.3, 3.0, 10.2, 655_360, 16, {
        MINILM.name: 40_000.0, SMOLLM2.name: 6_000.0, LLAMA_8B.name: 4_000.0,
        LLAMA_70B.name: 800.0,
    }),
    ServerKind("l40s-4x", 0.4, 0.6, 2.2, 196_608, 8, {
        MINILM.name: 20_000.0, SMOLLM2.name: 3_000.0, LLAMA_8B.name: 1_500.0,
    }),
    ServerKind("cpu-x86", 0.3, 0.12, 0.35, 8_192, 2, {MINILM.name: 3_000.0, SMOLLM2.name: 100.0}),
)
N_SITES = 48
# System prompts that generation jobs start with, as block-hash chains (scheduler/core/prefix.py).
SYSTEM_PROMPTS = tuple(prefix_blocks(f"You are the assistant of product {k}. " * 40)
                       for k in range(32))


def site_views(sites: Sequence[SitePlan], market: MarketHour) -> dict[str, SiteView]:
    views = {}
    for s in sites:
        r_mine = mining_revenue_usd_per_mwh(
            market.hashprice_usd_per_phs_day, s.efficiency_j_per_th, POOL_FEE
        )
        price = market.price_usd_per_mwh[s.zone]
        outlook = tuple(
            PriceOutlook(market.t_s + 3600.0 * (k + 1), opportunity_price_usd_per_mwh(p, r_mine,
                                                                                     s.at_cap))
            for k, p in enumerate(market.ahead_usd_per_mwh[s.zone])
        )
        views[s.name] = SiteView(
            site=s.name,
            region=s.region,
            price_usd_per_mwh=price,
            opportunity_price_usd_per_mwh=opportunity_price_usd_per_mwh(price, r_mine, s.at_cap),
            outlook=outlook,
        )
    return views


def make_nodes(n: int, sites: Sequence[SitePlan], rng: random.Random) -> list[NodeView]:
    curtailed = {s.name for s in rng.sample(list(sites), max(1, len(sites) // 12))}
    busy_share = {s.name: rng.uniform(0.2, 1.0) for s in sites}
    nodes = []
    for i in range(n):
        site = sites[rng.randrange(len(sites))]
        kind = rng.choices(KINDS, weights=[k.share for k in KINDS])[0]
        models = [m for m in kind.tokens_per_s if rng.random() < 0.8] or [MINILM.name]
        running = sum(rng.random() < busy_share[site.name] for _ in range(kind.slots))
        gone = rng.random() < 0.01
        draining = rng.random() < 0.03
        run_s_mean = math.exp(rng.gauss(math.log(3.0), 0.8))
        nodes.append(
            NodeView(
                node_id=f"{site.name}-{kind.name}-{i:05d}",
                site=site.name,
                region=site.region,
                models=frozenset(models),
                memory_mb=kind.memory_mb,
                gpu_kind=kind.name,
                slots_free=kind.slots - running,
                slots_total=kind.slots,
                serving=not (gone or draining or site.name in curtailed),
                healthy=not gone,
                idle_power_kw=kind.idle_power_kw,
                busy_power_kw=kind.busy_power_kw,
                # Learned per node (an EWMA of its own jobs), so no two nodes quite agree.
                tokens_per_s={
                    m: kind.tokens_per_s[m] * math.exp(rng.gauss(0.0, 0.2))
                    for m in models if rng.random() < 0.8
                },
                warm_models=frozenset(m for m in models if rng.random() < 0.6),
                backlog_s=running * run_s_mean / kind.slots,
                prefix_blocks=_held_prefixes(models, rng),
                prefill_tokens_per_s=rng.choice([0.0, 150.0, 5_000.0]),
            )
        )
    return nodes


def _held_prefixes(models: Sequence[str], rng: random.Random) -> frozenset[int]:
    """Half the nodes that generate hold the start of one to three system prompts."""
    generates = any(CATALOGUE[m].kind is ModelKind.GENERATION for m in models if m in CATALOGUE)
    if not generates or rng.random() < 0.5:
        return frozenset()
    return frozenset(block for chain in rng.sample(SYSTEM_PROMPTS, rng.randint(1, 3))
                     for block in chain[: rng.randint(1, len(chain))])


def make_jobs(n: int, now_s: float, rng: random.Random) -> list[JobRequest]:
    sizes = trace_tokens(rng, n)
    regions = ["north_america", "europe", "south_america", "asia_pacific"]
    jobs = []
    for i, (context, generated) in enumerate(sizes):
        model = CATALOGUE[rng.choices(list(MODEL_SHARE), weights=list(MODEL_SHARE.values()))[0]]
        tier = rng.choices(list(TIER_SHARE), weights=list(TIER_SHARE.values()))[0]
        if model.kind is ModelKind.EMBEDDING:
            inp, out = min(context, model.max_input_tokens), 0
        else:
            out = min(generated, model.max_output_tokens)
            inp = min(context, model.max_input_tokens - out)
        allowed: frozenset[str] = frozenset()
        draw = rng.random()
        if draw < 0.05:
            allowed = frozenset(rng.sample(regions, 2))
        elif draw < 0.20:
            allowed = frozenset([rng.choice(regions)])
        submitted_s = now_s - rng.uniform(0.0, 5.0)
        terms = model.tiers[tier]
        prefix: tuple[int, ...] = ()
        if model.kind is ModelKind.GENERATION and rng.random() < 0.6:
            prefix = rng.choice(SYSTEM_PROMPTS)
        jobs.append(
            JobRequest(
                job_id=f"job-{i:06d}",
                model=model.name,
                tier=tier,
                input_tokens=inp,
                output_tokens_est=out,
                submitted_s=submitted_s,
                deadline_s=submitted_s + terms.default_deadline_s,
                allowed_regions=allowed,
                memory_mb=model.memory_mb,
                value_usd=(inp + out) * terms.usd_per_million_tokens / 1e6,
                prefix_blocks=prefix,
            )
        )
    return jobs


def first_fit(job: JobRequest, nodes: Sequence[NodeView]) -> NodeView | None:
    for node in nodes:
        if job.model in node.models and node.slots_free > 0:
            return node
    return None


def measure(n_nodes: int, n_jobs: int, smoke: bool, rng: random.Random) -> dict[str, Any]:
    market = market_hour(rng)
    sites = plan_sites(N_SITES, rng)
    views = site_views(sites, market)
    nodes = make_nodes(n_nodes, sites, rng)
    jobs = make_jobs(n_jobs, market.t_s, rng)
    now_s = market.t_s
    by_id = sorted(nodes, key=lambda n: n.node_id)
    index = NodeIndex.build(nodes)
    place([jobs[0]], index, views, now_s, catalogue=CATALOGUE)  # built and cached once

    def kept(batch: list[JobRequest]) -> Callable[[], object]:
        return partial(place, batch, index, views, now_s, catalogue=CATALOGUE)

    def build() -> object:
        return NodeIndex.build(nodes).refresh()

    def rewrite(view: NodeView) -> Callable[[], object]:
        def run() -> object:
            index.upsert(view)
            return index.refresh()
        return run

    def scanned(batch: list[JobRequest]) -> Callable[[], object]:
        return partial(place_by_scan, batch, nodes, views, now_s, catalogue=CATALOGUE)

    # Fewer calls where one costs milliseconds, so a size takes seconds, not minutes.
    scan_jobs = jobs[: max(10, min(n_jobs, 400_000 // n_nodes))]
    kept_s = time_each([kept([j]) for j in jobs])
    scan_s = time_each([scanned([j]) for j in scan_jobs])
    ff_s = time_each([partial(first_fit, j, by_id) for j in jobs])
    batch = 16 if smoke else 256
    batches = [jobs[k : k + batch] for k in range(0, len(jobs) - batch + 1, batch)][:20]
    batch_s = time_each([kept(b) for b in batches])
    build_s = time_each([build for _ in range(5 if smoke else 20)])

    # The fast path must decide exactly as the scan does, job by job and in batches.
    mismatches = sum(kept([j])() != scanned([j])() for j in scan_jobs)
    mismatches += sum(kept(b)() != scanned(b)() for b in batches[:3])
    outcomes: dict[str, int] = {}
    for j in jobs:
        kind = type(place([j], index, views, now_s, catalogue=CATALOGUE)[0]).__name__
        outcomes[kind] = outcomes.get(kind, 0) + 1

    # A node's state changes (a slot taken or freed): its row is rewritten on the next refresh.
    sample = rng.sample(nodes, 20)
    changed = [replace(n, slots_free=max(n.slots_free - 1, 0)) for n in sample]
    upsert_s = time_each([rewrite(v) for v in changed])
    for n in sample:
        index.upsert(n)
    return {
        "nodes": n_nodes,
        "sites": len(sites),
        "market_hour_utc": market.t_s,
        "serving_nodes": sum(n.serving for n in nodes),
        "full_nodes": sum(n.slots_free == 0 for n in nodes),
        "outcomes": outcomes,
        "kept": summary_us(kept_s),
        "scan": summary_us(scan_s),
        "first_fit": summary_us(ff_s),
        "batch_per_job": summary_us([t / batch for t in batch_s]),
        "batch_size": batch,
        "index_build": summary_us(build_s),
        "index_row_update": summary_us(upsert_s),
        "decisions_per_s_kept": round(len(kept_s) / sum(kept_s)),
        "decisions_per_s_batch": round(batch * len(batch_s) / sum(batch_s)),
        "decisions_per_s_scan": round(len(scan_s) / sum(scan_s)),
        "decisions_per_s_first_fit": round(len(ff_s) / sum(ff_s)),
        "mismatches_vs_scan": mismatches,
    }


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--sizes", default="40,400,4000", help="fleet sizes, comma separated")
    p.add_argument("--jobs", type=int, default=2000, help="jobs timed per fleet size")
    args = p.parse_args()
    cpu = pin_to_one_core()
    sizes = [40, 400] if args.smoke else [int(s) for s in args.sizes.split(",")]
    n_jobs = 60 if args.smoke else args.jobs
    results: dict[str, dict[str, Any]] = {}
    for size in sizes:
        results[str(size)] = measure(size, n_jobs, args.smoke, random.Random(args.seed + size))
    rows: list[list[object]] = []
    for n, r in results.items():
        k, sc, ff = r["kept"], r["scan"], r["first_fit"]
        rows.append([
            n, k["p50_us"], k["p99_us"], r["batch_per_job"]["p50_us"], sc["p50_us"],
            sc["p99_us"], ff["p50_us"], ff["p99_us"], r["index_build"]["p50_us"],
            r["index_row_update"]["p50_us"], sc["p50_us"] / k["p50_us"],
            k["p50_us"] / ff["p50_us"],
        ])
    print(f"one job per call unless batch, microseconds, one core (cpu {cpu})")
    print(table(rows, [
        "nodes", "kept p50", "kept p99", "batch/job p50", "scan p50", "scan p99",
        "first-fit p50", "first-fit p99", "index build", "row update", "scan/kept",
        "kept/first-fit",
    ]))
    for n, r in results.items():
        print(f"{n:>5} nodes: {r['decisions_per_s_kept']:,} decisions/s kept, "
              f"{r['decisions_per_s_batch']:,}/s in batches, {r['decisions_per_s_scan']:,}/s "
              f"scanning, {r['decisions_per_s_first_fit']:,}/s first-fit; outcomes "
              f"{r['outcomes']}; mismatches vs scan {r['mismatches_vs_scan']}")
    growth = _growth(results)
    if growth:
        print(f"kept p50 growth per step in nodes: {growth}")
    largest = results[str(max(sizes))]
    summary = {
        "largest_nodes": max(sizes),
        "p99_us_largest": largest["kept"]["p99_us"],
        "p99_under_1ms": largest["kept"]["p99_us"] < 1000.0,
        "growth": growth,
        "all_match_scan": all(r["mismatches_vs_scan"] == 0 for r in results.values()),
    }
    finish("placement", args, {"cpu": cpu, "results": results, "summary": summary})
    return 0


def _growth(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Ratio of kept p50 between successive sizes, next to the ratio of node counts."""
    keys = sorted(results, key=int)
    out = {}
    for a, b in itertools.pairwise(keys):
        ratio = results[b]["kept"]["p50_us"] / results[a]["kept"]["p50_us"]
        out[f"{a}->{b} (x{int(b) / int(a):g} nodes)"] = round(ratio, 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
