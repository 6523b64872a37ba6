"""Placement speed: one job's decision against 40, 400 and 4,000 nodes, next to a trivial first-fit.

    python bench/placement.py [--sizes 40,400,4000] [--jobs 2000] [--smoke]

The fleet is realistic in the ways that cost the placer time: 48 sites over the four regions on
the 12 price zones of the shipped price file, opportunity prices from one real hour of it (with
R_mine from that day's hashprice where a site's interconnect is full), a 24-hour price outlook per
site (so flex jobs weigh waiting), three kinds of GPU server with mixed models, learned rates that
differ node by node, slots partly or wholly taken, some nodes draining or gone, some sites
curtailed; jobs of four models and three tiers sized from the Azure 2023 trace, some restricted to
one or two regions. Measured on one core, each call timed alone:

  hashserve kept:   place([job], index, ...) with the node index SchedulerCore keeps up to date
                    (what a placement costs in the running scheduler)
  hashserve list:   place([job], nodes, ...) from a list of NodeViews (the index built in the call)
  per-node scan:    place_by_scan([job], nodes, ...): the loop place() ran before (every node
                    through six filter functions and a score), kept for custom filter lists
  first-fit:        the first node, in id order, that serves the model and has a free slot
  batch:            place(256 jobs, index, ...) per job (SchedulerCore places a queue in one call)

Every decision of the fast path is checked against the scan (it must be identical). Targets:
p99 well under 1 ms at 4,000 nodes, and cost growing no faster than linearly in nodes.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
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

# Two larger models as a fleet file would add them (same tier terms as SmolLM2). Memory: 16-bit
# weights, 2 bytes a parameter (8B -> 16 GB, 70B -> 140 GB).
LLAMA_8B = ModelSpec(
    name="llama-3.1-8b-instruct", kind=ModelKind.GENERATION, max_input_tokens=8192,
    max_output_tokens=2048, memory_mb=16_384, tiers=SMOLLM2.tiers,
)
LLAMA_70B = ModelSpec(
    name="llama-3.1-70b-instruct", kind=ModelKind.GENERATION, max_input_tokens=8192,
    max_output_tokens=2048, memory_mb=143_360, tiers=SMOLLM2.tiers,
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


def site_views(sites: Sequence[SitePlan], market: MarketHour) -> dict[str, SiteView]:
    views = {}
    for s in sites:
        r_mine = mining_revenue_usd_per_mwh(
            market.hashprice_usd_per_phs_day, s.efficiency_j_per_th, 0.02
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
            )
        )
    return nodes


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
            )
        )
    return jobs


def first_fit(job: JobRequest, nodes: Sequence[NodeView]) -> NodeView | None:
    for node in nodes:
        if job.model in node.models and node.slots_free > 0:
            return node
    return None


def measure(n_nodes: int, n_jobs: int, smoke: bool, rng: random.Random) -> dict[str, object]:
    market = market_hour(rng)
    sites = plan_sites(N_SITES, rng)
    views = site_views(sites, market)
    nodes = make_nodes(n_nodes, sites, rng)
    jobs = make_jobs(n_jobs, market.t_s, rng)
    now_s = market.t_s
    by_id = sorted(nodes, key=lambda n: n.node_id)
    index = NodeIndex.build(nodes)

    scan_jobs = jobs[: max(10, min(n_jobs, 400_000 // n_nodes))]
    list_jobs = jobs[: max(10, min(n_jobs, 1_000_000 // n_nodes))]
    kept_s = time_each([lambda j=j: place([j], index, views, now_s, catalogue=CATALOGUE)
                        for j in jobs])
    list_s = time_each([lambda j=j: place([j], nodes, views, now_s, catalogue=CATALOGUE)
                        for j in list_jobs])
    scan_s = time_each([lambda j=j: place_by_scan([j], nodes, views, now_s, catalogue=CATALOGUE)
                        for j in scan_jobs])
    ff_s = time_each([lambda j=j: first_fit(j, by_id) for j in jobs])
    batch = 16 if smoke else 256
    batches = [jobs[k : k + batch] for k in range(0, len(jobs) - batch + 1, batch)][:20]
    batch_s = time_each([lambda b=b: place(b, index, views, now_s, catalogue=CATALOGUE)
                         for b in batches])

    # The fast path must decide exactly as the scan does, job by job and in batches.
    mismatches = sum(
        place([j], index, views, now_s, catalogue=CATALOGUE)
        != place_by_scan([j], nodes, views, now_s, catalogue=CATALOGUE)
        for j in scan_jobs
    )
    mismatches += sum(
        place(b, index, views, now_s, catalogue=CATALOGUE)
        != place_by_scan(b, nodes, views, now_s, catalogue=CATALOGUE)
        for b in batches[:3]
    )
    outcomes: dict[str, int] = {}
    for j in jobs:
        kind = type(place([j], index, views, now_s, catalogue=CATALOGUE)[0]).__name__
        outcomes[kind] = outcomes.get(kind, 0) + 1
    per_batch_job = [t / batch for t in batch_s]
    return {
        "nodes": n_nodes,
        "sites": len(sites),
        "market_hour_utc": market.t_s,
        "serving_nodes": sum(n.serving for n in nodes),
        "full_nodes": sum(n.slots_free == 0 for n in nodes),
        "outcomes": outcomes,
        "kept": summary_us(kept_s),
        "list": summary_us(list_s),
        "scan": summary_us(scan_s),
        "first_fit": summary_us(ff_s),
        "batch_per_job": summary_us(per_batch_job),
        "batch_size": batch,
        "decisions_per_s_kept": round(1.0 / (sum(kept_s) / len(kept_s))),
        "decisions_per_s_first_fit": round(1.0 / (sum(ff_s) / len(ff_s))),
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
    results = {}
    for n in sizes:
        results[str(n)] = measure(n, n_jobs, args.smoke, random.Random(args.seed + n))
    rows = []
    for n, r in results.items():
        kept, lst, scan, ff = r["kept"], r["list"], r["scan"], r["first_fit"]  # type: ignore[index]
        rows.append([
            n, kept["p50_us"], kept["p99_us"], lst["p50_us"], lst["p99_us"], scan["p50_us"],
            scan["p99_us"], ff["p50_us"], r["batch_per_job"]["p50_us"],  # type: ignore[index]
            kept["p50_us"] / ff["p50_us"], scan["p50_us"] / kept["p50_us"],
        ])
    print(f"one job per call, microseconds, one core (cpu {cpu})")
    print(table(rows, [
        "nodes", "kept p50", "kept p99", "list p50", "list p99", "scan p50", "scan p99",
        "first-fit p50", "batch/job p50", "kept/first-fit", "scan/kept",
    ]))
    for n, r in results.items():
        print(f"{n:>5} nodes: outcomes {r['outcomes']}, mismatches vs scan {r['mismatches_vs_scan']}")
    growth = _growth(results)
    if growth:
        print(f"growth of kept p50 per 10x nodes: {growth}")
    largest = results[str(max(sizes))]
    summary = {
        "largest_nodes": max(sizes),
        "p99_us_largest": largest["kept"]["p99_us"],  # type: ignore[index]
        "p99_under_1ms": largest["kept"]["p99_us"] < 1000.0,  # type: ignore[index]
        "growth_per_10x": growth,
        "all_match_scan": all(r["mismatches_vs_scan"] == 0 for r in results.values()),
    }
    finish("placement", args, {"cpu": cpu, "results": results, "summary": summary})
    return 0


def _growth(results: Mapping[str, Mapping[str, object]]) -> dict[str, float]:
    keys = sorted(results, key=int)
    out = {}
    for a, b in zip(keys, keys[1:], strict=False):
        pa = results[a]["kept"]["p50_us"]  # type: ignore[index]
        pb = results[b]["kept"]["p50_us"]  # type: ignore[index]
        out[f"{a}->{b}"] = round(pb / pa, 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
