"""The OpenAI-compatible HTTP front against the gRPC front: embeddings, submit to result.

    python bench/http.py [--seconds 6] [--rounds 3] [--concurrency 8] [--smoke]

One local cluster (the scheduler on Ray with its HTTP front, two agents serving MiniLM) on this
machine. Each round runs both, one after the other, for `--seconds` each, with `--concurrency`
clients sending the next request as soon as their last is answered:
  grpc:  hashserve's async client, SubmitJob then WatchJob to the result (what a gRPC customer
         does), one channel;
  http:  `POST /v1/embeddings` over one HTTP/1.1 keep-alive pool (what the OpenAI SDK does); the
         front itself calls SubmitJob and WatchJob over a loopback channel.
Both send a one-sentence interactive embedding. Counted: answers with a result in the measured
window, after a warm-up; medians over rounds. The last line's `http_vs_grpc` is the ratio of the
two rates (target: 0.8 or better).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py's name would hide the standard library's `http` from every import after this
# if this folder stayed first on the path (as it is for a script): it goes, the repository comes.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import statistics
import tempfile
import time
from typing import Any

import httpx

from bench.common import finish, parser, percentile, table
from hashserve.client import Client, embed_spec
from hashserve.local import AgentPlan, LocalCluster, free_port

MODEL = "all-minilm-l6-v2"
SENTENCE = "Grid operators pay large consumers to cut load during price spikes."


async def grpc_round(address: str, key: str, seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    spec = embed_spec(MODEL, [SENTENCE], "interactive")
    async with Client(address, key) as client:
        async def worker(stop_at: float) -> None:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                job = await client.wait((await client.submit(spec)).job.id, 60)
                if job.state == 4:  # JOB_STATE_SUCCEEDED
                    latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker(time.perf_counter() + 1.0) for _ in range(concurrency)))
        latencies.clear()  # the warm-up
        await asyncio.gather(*(worker(time.perf_counter() + seconds) for _ in range(concurrency)))
    return latencies


async def http_round(base_url: str, key: str, seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    body = {"model": MODEL, "input": SENTENCE, "encoding_format": "float"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        async def worker(stop_at: float) -> None:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                reply = await client.post("/embeddings", json=body)
                if reply.status_code == 200:
                    latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker(time.perf_counter() + 1.0) for _ in range(concurrency)))
        latencies.clear()
        await asyncio.gather(*(worker(time.perf_counter() + seconds) for _ in range(concurrency)))
    return latencies


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    return {
        "per_s": round(len(ms) / seconds, 2),
        "p50_ms": round(percentile(ms, 0.5), 2) if ms else 0.0,
        "p99_ms": round(percentile(ms, 0.99), 2) if ms else 0.0,
        "n": len(ms),
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    if args.smoke:
        args.seconds, args.rounds, args.concurrency = 1.0, 1, 2
    http_port = free_port()
    runs: dict[str, list[dict[str, float]]] = {"grpc": [], "http": []}
    with tempfile.TemporaryDirectory(prefix="hashserve-http-") as tmp:
        cluster = LocalCluster(
            workdir=Path(tmp),
            agents=[AgentPlan("http-1", "tx-odessa", "north_america", max_concurrent_jobs=2),
                    AgentPlan("http-2", "ny-massena", "north_america", max_concurrent_jobs=2)],
            settings_overrides={"http_port": http_port},
        )
        try:
            cluster.start_scheduler()
            cluster.start_agents()
            from tests.integration.cluster import wait_for_agents

            wait_for_agents(cluster, 2)
            assert cluster.credentials is not None
            key = cluster.credentials.api_key
            base_url = f"http://127.0.0.1:{http_port}/v1"
            for _ in range(args.rounds):
                runs["grpc"].append(summary(asyncio.run(grpc_round(
                    cluster.address, key, args.seconds, args.concurrency)), args.seconds))
                runs["http"].append(summary(asyncio.run(http_round(
                    base_url, key, args.seconds, args.concurrency)), args.seconds))
        finally:
            cluster.stop()
    medians: dict[str, dict[str, float]] = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()
    }
    grpc_rate = medians["grpc"]["per_s"]
    ratio = round(medians["http"]["per_s"] / grpc_rate, 3) if grpc_rate else 0.0
    print(table(
        [[name, m["per_s"], m["p50_ms"], m["p99_ms"], m["n"]] for name, m in medians.items()],
        ["front", "embeddings/s", "p50 ms", "p99 ms", "answers"],
    ))
    print(f"http / grpc: {ratio}")
    results: dict[str, Any] = {
        "medians": medians, "rounds": runs, "http_vs_grpc": ratio,
        "concurrency": args.concurrency, "seconds": args.seconds,
    }
    finish("http", args, results)


if __name__ == "__main__":
    main()
