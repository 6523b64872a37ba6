"""Emergency curtailment: how fast a site sheds its AI load, and that no job is lost doing it.

Real agents (three at tx-odessa, two at ny-massena) run long SmolLM2 generations at tx-odessa;
then ops curtail the site through the admin API, either as a forced curtail (`--via force`) or
as a demand-response window that starts now with a 0 MW target (`--via window`). The scheduler
preempts the site's running AI jobs, the agents stop them, and the jobs resume at ny-massena.

The target power is the site's nodes at idle: every node stays on (an agent does not power its
server off), so the AI draw it reports can fall to the sum of the nodes' idle power, no lower.
`shed_s` runs from the admin call's acknowledgement to the first report, by the site's agents'
heartbeats (read through the admin API every 50 ms), of the site's AI draw at that target.

    python bench/curtail.py [--via force|window] [--jobs 6] [--max-tokens 240]

Last line: JSON with `shed_s`, `jobs_preempted`, `jobs_lost`, `jobs_duplicated` (targets: shed_s
<= 30, at least one job preempted, none lost, none duplicated).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/http.py's name would hide the standard library's `http` from every import after this
# if this folder stayed first on the path (as it is for a script): it goes, the repository comes.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import finish, parser, table
from hashserve.admin_client import AdminClient
from hashserve.client import Client, generate_spec
from hashserve.local import AgentPlan, LocalCluster
from tests.chaos.ledger import account, wait_until_final

SITE, OTHER = "tx-odessa", "ny-massena"
GEN = "smollm2-135m-instruct"
IDLE_KW, BUSY_KW = 0.3, 0.7
PROMPTS = [
    "Write a long story about a wind farm on a winter night.",
    "Explain, step by step and at length, how a grid operator balances supply and demand.",
    "Describe a day in the life of a Bitcoin mining site technician, in detail.",
]


def agents(n_site: int, n_other: int) -> list[AgentPlan]:
    plans = [
        AgentPlan(f"tx-{i}", SITE, "north_america", idle_power_kw=IDLE_KW, busy_power_kw=BUSY_KW)
        for i in range(n_site)
    ]
    plans += [
        AgentPlan(f"ny-{i}", OTHER, "north_america", idle_power_kw=IDLE_KW, busy_power_kw=BUSY_KW)
        for i in range(n_other)
    ]
    return plans


async def site_draw_kw(a: AdminClient) -> tuple[float, int]:
    nodes = (await a.nodes(SITE)).nodes
    return sum(n.power_draw_kw for n in nodes), sum(n.running_jobs for n in nodes)


async def measure(cluster: LocalCluster, args: Any) -> dict[str, Any]:
    assert cluster.credentials is not None
    site_nodes = [p.agent_id for p in cluster.agents if p.site == SITE]
    other_nodes = [p.agent_id for p in cluster.agents if p.site == OTHER]
    target_kw = IDLE_KW * len(site_nodes)
    async with AdminClient(cluster.address, cluster.credentials.admin_key) as a, Client(
        cluster.address, cluster.credentials.api_key
    ) as c:
        for node in other_nodes:
            await a.drain(node)  # the work starts at the site to be curtailed
        acked: dict[str, str] = {}
        for i in range(args.jobs):
            spec = generate_spec(
                GEN, PROMPTS[i % len(PROMPTS)], args.max_tokens, "standard",
                regions=["north_america"],
            )
            resp = await c.submit(spec)
            acked[f"curtail-{i}"] = resp.job.id
        # Until the site's agents report the work running (their heartbeats carry the draw).
        deadline = time.monotonic() + 120
        while True:
            draw_kw, running = await site_draw_kw(a)
            if running >= min(args.jobs, 2 * len(site_nodes)) and draw_kw > target_kw + 0.1:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the jobs never ran at {SITE}: draw {draw_kw} kW")
            await asyncio.sleep(0.1)
        before_kw = draw_kw
        for node in other_nodes:
            await a.resume(node)
        t0 = time.monotonic()
        if args.via == "force":
            await a.set_mode(SITE, "curtail")
        else:
            now_s = time.time()
            await a.curtail(SITE, now_s, now_s + 600.0, "bench: emergency demand response")
        t_ack = time.monotonic()
        samples: list[tuple[float, float]] = []
        while True:
            draw_kw, running = await site_draw_kw(a)
            samples.append((time.monotonic() - t_ack, draw_kw))
            if draw_kw <= target_kw + 1e-6:
                shed_s = time.monotonic() - t_ack
                break
            if time.monotonic() - t_ack > 120:
                shed_s = float("inf")
                break
            await asyncio.sleep(0.05)
        if args.via == "force":
            await a.set_mode(SITE, "auto")
    final = wait_until_final(cluster.journal_path, list(acked.values()), 600)
    counts = account("emergency curtail", cluster.journal_path, acked)
    db = sqlite3.connect(f"file:{cluster.journal_path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            f"SELECT job_id, node_id, attempt FROM jobs WHERE job_id IN "
            f"({','.join('?' * len(acked))})",
            list(acked.values()),
        ).fetchall()
    finally:
        db.close()
    moved = [r for r in rows if r[2] > 1 and str(r[1]).startswith("ny-")]
    return {
        "via": args.via,
        "shed_s": round(shed_s, 3),
        "call_s": round(t_ack - t0, 3),
        "site_draw_before_kw": round(before_kw, 3),
        "target_kw": round(target_kw, 3),
        "jobs": len(acked),
        "jobs_preempted": len(moved),
        "jobs_lost": counts.lost,
        "jobs_duplicated": counts.duplicated,
        "final_states": {s: list(final.values()).count(s) for s in set(final.values())},
        "draw_trace_kw": [
            (round(t, 2), round(kw, 3)) for t, kw in samples[:: max(len(samples) // 20, 1)]
        ],
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--via", choices=("force", "window"), default="window")
    p.add_argument("--jobs", type=int, default=6)
    p.add_argument("--max-tokens", type=int, default=240)
    args = p.parse_args()
    if args.smoke:
        args.jobs, args.max_tokens = 2, 64
    from tests.chaos.harness import llm_installed

    if not llm_installed():
        raise SystemExit("bench/curtail.py needs generation: bash scripts/install.sh")
    with tempfile.TemporaryDirectory(prefix="hashserve-curtail-") as tmp:
        cluster = LocalCluster(
            workdir=Path(tmp), agents=agents(3, 2),
            settings_overrides={"plan_interval_s": 2.0, "tick_s": 0.2},
        )
        try:
            cluster.start_scheduler()
            cluster.start_agents()
            from tests.integration.cluster import wait_for_agents

            wait_for_agents(cluster, len(cluster.agents))
            results = asyncio.run(measure(cluster, args))
        finally:
            cluster.stop()
    print(table(
        [[results["via"], results["site_draw_before_kw"], results["target_kw"], results["shed_s"],
          results["jobs_preempted"], results["jobs_lost"], results["jobs_duplicated"]]],
        ["via", "AI draw before (kW)", "target (kW)", "shed_s", "preempted", "lost", "duplicated"],
    ))
    finish("curtail", args, results)


if __name__ == "__main__":
    main()
