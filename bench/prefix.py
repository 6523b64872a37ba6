"""Prefix-aware routing against least-loaded, on real llama.cpp prompt caching, in one run.

    python bench/prefix.py [--systems 8] [--conversations 16] [--turns 3] [--concurrency 4]
                           [--think-s 2.0] [--cache-mib 32] [--seed 7] [--smoke]

Twice, on a fresh local hashserve each time (Ray, the scheduler actor, two agent processes that
serve SmolLM2-135M-Instruct on llama.cpp with one thread and one slot each, every engine
keeping `--cache-mib` of KV cells of recent prompts): once with prefix routing
(`prefix_routing`, the default) and once without it (least loaded). The workload is the same,
fixed by `--seed`: `--systems` long system prompts (shared by the customers of one product),
`--conversations` conversations over them, each of `--turns` turns whose prompt is the whole
conversation so far, `--concurrency` conversations at a time, the customer pausing about
`--think-s` between an answer and the next question. Time to first token runs from the submit
to the first token event of the job's WatchJob stream. The last line is JSON with
`ttft_p50_ratio` (prefix-aware p50 over least-loaded p50; target 0.5 or less).

The default workload is the case prefix routing is for: the system prompts (about 300 tokens
each, 8 of them) take about 1.7 times what one engine keeps (32 MiB, some 1,450 tokens) and fit
in what two keep. When every engine can keep every prefix (`--systems 4`), any routing finds
them, and only the conversations' own turns differ.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import statistics
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

from bench.common import finish, parser, percentile, table
from hashserve.client import Client
from hashserve.local import AgentPlan, LocalCluster
from hashserve.v1 import customer_pb2, jobs_pb2

MODEL = "smollm2-135m-instruct"
WORDS = (
    "hashrate", "power", "price", "curtailment", "site", "megawatt", "grid", "customer",
    "invoice", "payout", "pool", "difficulty", "block", "reward", "inference", "model", "token",
    "latency", "region", "cooling", "transformer", "substation", "contract", "tariff", "demand",
    "response", "schedule", "uptime", "maintenance", "firmware",
)
MAX_TOKENS = 4


def workload(seed: int, systems: int, conversations: int, turns: int,
             ) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(system prompts, conversations as (system index, the user's turns)), all from `seed`."""
    rng = random.Random(seed)
    prompts = []
    for i in range(systems):
        rules = " ".join(
            f"Rule {k}: when asked about {rng.choice(WORDS)} and {rng.choice(WORDS)}, answer "
            f"with the {rng.choice(WORDS)} first and keep to {rng.choice(WORDS)} terms."
            for k in range(12)
        )
        prompts.append(f"You are assistant number {i} of a mining and AI hosting company. "
                       f"{rules}")
    convs = [
        (c % systems, [f"Question {t} from customer {c}: what about my {rng.choice(WORDS)} "
                       f"and {rng.choice(WORDS)}?" for t in range(turns)])
        for c in range(conversations)
    ]
    rng.shuffle(convs)
    return prompts, convs


async def ttft_ms(client: Client, messages: list[tuple[str, str]]) -> tuple[float, str]:
    """Submit one turn; (ms to its first token event, the whole answer)."""
    spec = jobs_pb2.JobSpec(
        model=MODEL, tier=jobs_pb2.TIER_INTERACTIVE,
        generate=jobs_pb2.GenerateInput(
            max_tokens=MAX_TOKENS, temperature=0.0,
            messages=[jobs_pb2.ChatMessage(role=r, content=c) for r, c in messages]),
    )
    t0 = time.perf_counter()
    reply = await client.stub.SubmitJob(customer_pb2.SubmitJobRequest(spec=spec),
                                        metadata=client.metadata, timeout=30)
    first: float | None = None
    text = ""
    async for event in client.stub.WatchJob(customer_pb2.WatchJobRequest(job_id=reply.job.id),
                                            metadata=client.metadata, timeout=120):
        if event.HasField("tokens") and first is None:
            first = (time.perf_counter() - t0) * 1000
        if event.HasField("job") and event.job.state == jobs_pb2.JOB_STATE_SUCCEEDED:
            text = event.job.result.text
    if first is None:
        raise RuntimeError(f"job {reply.job.id} streamed no token")
    return first, text


async def drive(cluster: LocalCluster, prompts: list[str],
                convs: list[tuple[int, list[str]]], concurrency: int, think_s: float = 0.0,
                seed: int = 7) -> list[float]:
    assert cluster.credentials is not None
    async with Client(cluster.address, cluster.credentials.api_key) as client:
        deadline = time.monotonic() + 180
        while True:
            models = {m.name: m.nodes_serving for m in (await client.models()).models}
            if models.get(MODEL, 0) >= 2:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the bench's two agents did not connect")
            await asyncio.sleep(0.3)
        gate = asyncio.Semaphore(concurrency)
        times: list[float] = []

        async def conversation(i: int, system: int, questions: list[str]) -> None:
            # The customer reads each answer before the next question (seeded, per conversation).
            pauses = random.Random(seed * 1000 + i)
            async with gate:
                messages = [("system", prompts[system])]
                for question in questions:
                    messages.append(("user", question))
                    ms, answer = await ttft_ms(client, messages)
                    times.append(ms)
                    messages.append(("assistant", answer))
                    await asyncio.sleep(think_s * (0.5 + pauses.random()))

        await asyncio.gather(*(conversation(i, s, q) for i, (s, q) in enumerate(convs)))
        return times


def run_mode(prefix_routing: bool, prompts: list[str], convs: list[tuple[int, list[str]]],
             concurrency: int, think_s: float, seed: int, workdir: Path,
             ) -> tuple[list[float], dict[str, Any]]:
    """(times to first token, what the journal says of the jobs: their run times, where they
    ran)."""
    cluster = LocalCluster(
        workdir=workdir,
        agents=[AgentPlan(f"prefix-{i}", "tx-odessa", "north_america", max_concurrent_jobs=1,
                          backends=(f"{MODEL}=llama-cpp",)) for i in (1, 2)],
        settings_overrides={"metrics_port": -1, "prefix_routing": prefix_routing},
    )
    try:
        cluster.start_scheduler()
        cluster.start_agents()
        times = asyncio.run(drive(cluster, prompts, convs, concurrency, think_s, seed))
    finally:
        cluster.stop()
    db = sqlite3.connect(str(cluster.journal_path))
    try:
        rows = db.execute("SELECT node_id, run_ms FROM jobs WHERE state = 'succeeded'").fetchall()
    finally:
        db.close()
    per_node: dict[str, int] = {}
    for node_id, _ in rows:
        per_node[node_id] = per_node.get(node_id, 0) + 1
    # A job that started from a kept prefix runs in a fraction of a cold one's time.
    run_ms = sorted(float(r[1]) for r in rows)
    return times, {"run_ms_p50": round(statistics.median(run_ms), 1),
                   "run_ms_p90": round(percentile(run_ms, 0.9), 1), "jobs_per_node": per_node}


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--systems", type=int, default=8, help="distinct system prompts")
    p.add_argument("--conversations", type=int, default=16)
    p.add_argument("--turns", type=int, default=3, help="turns per conversation")
    p.add_argument("--concurrency", type=int, default=4, help="conversations at a time")
    p.add_argument("--think-s", type=float, default=2.0,
                   help="mean pause between an answer and the next question")
    p.add_argument("--cache-mib", type=float, default=32.0,
                   help="KV cells of prompts each engine keeps (prefix_cache_mib)")
    args = p.parse_args()
    if args.smoke:
        args.conversations, args.turns = 4, 2
    # The agents read it from the environment they are started with.
    os.environ["HASHSERVE_AGENT_PREFIX_CACHE_MIB"] = str(args.cache_mib)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    prompts, convs = workload(args.seed, args.systems, args.conversations, args.turns)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hashserve-prefix-") as tmp:
        for name, on in (("prefix_aware", True), ("least_loaded", False)):
            times, ran = run_mode(on, prompts, convs, args.concurrency, args.think_s, args.seed,
                                  Path(tmp) / name)
            results[name] = {
                **ran,
                "n": len(times),
                "ttft_p50_ms": round(statistics.median(times), 2),
                "ttft_p90_ms": round(percentile(times, 0.9), 2),
                "ttft_mean_ms": round(statistics.fmean(times), 2),
            }
    ratio = round(results["prefix_aware"]["ttft_p50_ms"]
                  / results["least_loaded"]["ttft_p50_ms"], 3)
    print(f"{args.conversations} conversations of {args.turns} turns over {args.systems} system "
          f"prompts, {args.concurrency} at a time, two agents, {args.cache_mib:g} MiB of kept "
          f"prompts each, seed {args.seed}")
    print(table([[name, r["n"], r["ttft_p50_ms"], r["ttft_p90_ms"], r["ttft_mean_ms"],
                  r["run_ms_p50"], r["jobs_per_node"]] for name, r in results.items()],
                ["routing", "jobs", "TTFT p50 ms", "p90 ms", "mean ms", "run p50 ms",
                 "jobs per node"]))
    print(f"ttft_p50_ratio (prefix-aware / least-loaded): {ratio} (target 0.5 or less)")
    finish("prefix", args, {
        "systems": args.systems, "conversations": args.conversations, "turns": args.turns,
        "concurrency": args.concurrency, "think_s": args.think_s, "cache_mib": args.cache_mib,
        "seed": args.seed,
        "results": results, "ttft_p50_ratio": ratio,
        "summary": {"ttft_halved": ratio <= 0.5},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
