"""End-to-end latency of one job through hashserve next to the model's own time, in one run.

    python bench/e2e.py [--n 50] [--smoke]

Starts a real local hashserve (Ray, the scheduler actor, one agent process, and the native front
where it is built, as `hashserve up` does), then for a one-sentence embedding (and a short
generation when llama-cpp-python is installed) measures:
  model:      the backend called directly in this process (what the job costs at minimum)
  in agent:   the same model as the agent ran it for each job (its measured `run_ms`), on a
              machine busy with the rest of hashserve; `vs agent` is each job's time less its own
  hashserve:  submit over gRPC -> journal -> placement -> agent -> inference -> result watched back,
              at the scheduler's own port, and for the embedding also through the native front
  floor:      the same processes, hops and synced commits with none of hashserve's logic
              (bench/job_path_floor.py), run with the cluster up, around the embeddings; what
              hashserve's logic adds is its overhead less the floor's (`above_floor_p50_ms`)
and prints p50/p90 of each and their ratio. Beside them, in the same run, the p50 of a bare
unary gRPC round trip between two processes of this machine (a health check against a
grpc.aio server in a child process): the floor under every hop of the path, which moves with
the machine's load, so the overhead is also given in round trips (`embed_overhead_in_rtts`).
The last line is JSON.
"""

from __future__ import annotations

import asyncio
import os
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
# The agents run with one inference thread per job (hashserve.local sets this for them); the
# model's own time is measured under the same setting, or the ratio would compare 2 cores to 1.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench.common import finish, parser
from bench.job_path_floor import floor_times
from hashserve.client import Client, embed_spec, generate_spec
from hashserve.local import AgentPlan, LocalCluster
from scheduler.front.native import native_front_binary

SENTENCE = "Grid operators pay large consumers to cut load during price spikes."
PROMPT = "Say hello to a new customer in one short sentence."
GEN_TOKENS = 16


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def direct_embed_ms(n: int) -> list[float]:
    from node_agent.backends.onnx_embedding import OnnxEmbeddingBackend

    backend = OnnxEmbeddingBackend()
    backend.embed([SENTENCE])  # warm
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        backend.embed([SENTENCE])
        times.append((time.perf_counter() - t0) * 1000)
    return times


def direct_generate_ms(n: int) -> list[float] | None:
    try:
        from node_agent.backends.base import GenerateParams
        from node_agent.backends.llama_cpp_generation import LlamaCppGenerationBackend

        backend = LlamaCppGenerationBackend()
    except Exception:
        return None
    params = GenerateParams(prompt=PROMPT, max_tokens=GEN_TOKENS, temperature=0.0)
    backend.generate(params, lambda _: None, lambda: False)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        backend.generate(params, lambda _: None, lambda: False)
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def through_hashserve(
    cluster: LocalCluster, n: int, generate: bool, address: str | None = None
) -> tuple[list[float], list[float]]:
    """Each job's time from submit to its result watched back, and the inference time its
    agent measured for it (`timings.run_ms`); at `address` (default: the scheduler's own)."""
    assert cluster.credentials is not None
    times = []
    run_ms = []
    async with Client(address or cluster.scheduler_address, cluster.credentials.api_key) as c:
        while True:
            models = {m.name: m.nodes_serving for m in (await c.models()).models}
            if models.get("all-minilm-l6-v2"):
                break
            await asyncio.sleep(0.2)
        spec = (
            generate_spec("smollm2-135m-instruct", PROMPT, GEN_TOKENS, "interactive")
            if generate
            else embed_spec("all-minilm-l6-v2", [SENTENCE], "interactive")
        )
        for i in range(n + 2):
            t0 = time.perf_counter()
            resp = await c.submit(spec)
            job = await c.wait(resp.job.id, 60)
            elapsed = (time.perf_counter() - t0) * 1000
            assert job.state == 4, job.error  # JOB_STATE_SUCCEEDED
            if i >= 2:  # the first two warm the agent's model and the channel
                times.append(elapsed)
                run_ms.append(job.timings.run_ms)
    return times, run_ms


def _health_server(port_out: Any) -> None:
    import grpc
    from grpc_health.v1 import health_pb2_grpc
    from grpc_health.v1.health import aio as health_aio

    async def serve() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
        port_out.send(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


def bare_rtt_ms(n: int) -> float:
    """p50 of a unary gRPC call from this process to a bare server in another."""
    import multiprocessing as mp

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_health_server, args=(child,), daemon=True)
    proc.start()
    try:
        port = parent.recv()

        async def calls() -> list[float]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                out = []
                for i in range(n + 20):
                    t0 = time.perf_counter()
                    await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    if i >= 20:
                        out.append((time.perf_counter() - t0) * 1000)
                return out

        return statistics.median(asyncio.run(calls()))
    finally:
        proc.terminate()
        proc.join(5)


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=50, help="jobs per measurement")
    args = p.parse_args()
    n = 5 if args.smoke else args.n
    results: dict[str, dict[str, float]] = {}
    direct = {"embed": direct_embed_ms(n), "generate": direct_generate_ms(max(n // 5, 3))}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(
            workdir=Path(tmp),
            agents=[AgentPlan("bench-1", "tx-odessa", "north_america", max_concurrent_jobs=1)],
            # As `hashserve up` starts it: customers may also come in through the native front.
            native_front=native_front_binary() is not None,
        )
        try:
            cluster.start_scheduler()
            cluster.start_agents()
            rtt_before_ms = bare_rtt_ms(50 if args.smoke else 300)
            # The floor under the path (bench/job_path_floor.py), in two halves around the
            # embeddings through hashserve, with the cluster up: the same background load.
            floor_e2e, floor_run_ms = floor_times(max(n // 2, 3), SENTENCE)
            for kind, model_ms in direct.items():
                if model_ms is None:
                    continue
                e2e, agent_run_ms = asyncio.run(
                    through_hashserve(cluster, len(model_ms), kind == "generate"))
                if kind == "embed":
                    more_e2e, more_run_ms = floor_times(max(n // 2, 3), SENTENCE)
                    floor_e2e += more_e2e
                    floor_run_ms += more_run_ms
                m50, e50 = statistics.median(model_ms), statistics.median(e2e)
                results[kind] = {
                    "model_p50_ms": round(m50, 3),
                    # The same model as its agent ran it, job by job: what the agent measured
                    # around the backend call, on a machine busy with the rest of hashserve.
                    "agent_run_p50_ms": round(statistics.median(agent_run_ms), 3),
                    "overhead_vs_agent_run_p50_ms": round(statistics.median(
                        [t - r for t, r in zip(e2e, agent_run_ms, strict=True)]), 3),
                    "hashserve_p50_ms": round(e50, 3),
                    "hashserve_p90_ms": round(pct(e2e, 0.9), 3),
                    "overhead_p50_ms": round(e50 - m50, 3),
                    "ratio_p50": round(e50 / m50, 3),
                    "n": len(e2e),
                }
                if kind == "embed":
                    floor_ms = statistics.median(
                        [t - r for t, r in zip(floor_e2e, floor_run_ms, strict=True)])
                    results[kind]["floor_p50_ms"] = round(statistics.median(floor_e2e), 3)
                    results[kind]["floor_overhead_vs_agent_run_p50_ms"] = round(floor_ms, 3)
                    results[kind]["above_floor_p50_ms"] = round(
                        results[kind]["overhead_vs_agent_run_p50_ms"] - floor_ms, 3)
                if kind == "embed" and cluster.front is not None:
                    # The same jobs at the customers' port of `hashserve up`: the native front.
                    via_front, _ = asyncio.run(
                        through_hashserve(cluster, len(model_ms), False, cluster.address))
                    f50 = statistics.median(via_front)
                    results[kind]["via_native_front_p50_ms"] = round(f50, 3)
                    results[kind]["overhead_via_native_front_p50_ms"] = round(f50 - m50, 3)
            rtt_ms = statistics.median([rtt_before_ms, bare_rtt_ms(50 if args.smoke else 300)])
        finally:
            cluster.stop()
    print(
        f"{'job':<10}{'model p50':>12}{'in agent':>11}{'hashserve p50':>16}{'p90':>10}"
        f"{'overhead':>11}{'vs agent':>11}{'ratio':>8}"
    )
    for kind, r in results.items():
        print(
            f"{kind:<10}{r['model_p50_ms']:>10.2f}ms{r['agent_run_p50_ms']:>9.2f}ms"
            f"{r['hashserve_p50_ms']:>14.2f}ms{r['hashserve_p90_ms']:>8.2f}ms"
            f"{r['overhead_p50_ms']:>9.2f}ms{r['overhead_vs_agent_run_p50_ms']:>9.2f}ms"
            f"{r['ratio_p50']:>8.2f}"
        )
    embed = results.get("embed", {})
    overhead_ms = embed.get("overhead_p50_ms", float("nan"))
    if "via_native_front_p50_ms" in embed:
        print(f"embedding through the native front (`hashserve up`'s customers' port): p50 "
              f"{embed['via_native_front_p50_ms']:.2f} ms, overhead "
              f"{embed['overhead_via_native_front_p50_ms']:.2f} ms")
    if "floor_overhead_vs_agent_run_p50_ms" in embed:
        print(f"the job path's floor (its processes, hops and synced commits, none of its "
              f"logic): {embed['floor_overhead_vs_agent_run_p50_ms']:.2f} ms over its agent's "
              f"run; hashserve {embed['overhead_vs_agent_run_p50_ms']:.2f} ms, "
              f"{embed['above_floor_p50_ms']:.2f} ms above it")
    print(f"bare gRPC round trip p50 (two processes, before and after): {rtt_ms:.3f} ms")
    print(f"embedding overhead p50: {overhead_ms:.2f} ms over the model's own time, "
          f"{overhead_ms / rtt_ms:.1f} bare round trips (target: 3 ms or less)")
    finish("e2e", args, {"results": results, "bare_rtt_p50_ms": round(rtt_ms, 3),
                         "embed_overhead_in_rtts": round(overhead_ms / rtt_ms, 2),
                         "embed_overhead_p50_ms": embed.get("overhead_p50_ms"),
                         "embed_overhead_vs_agent_run_p50_ms":
                             embed.get("overhead_vs_agent_run_p50_ms"),
                         # The same path with none of hashserve's logic, and what the logic
                         # adds above it (both against each job's own agent run).
                         "floor_overhead_vs_agent_run_p50_ms":
                             embed.get("floor_overhead_vs_agent_run_p50_ms"),
                         "embed_overhead_above_floor_p50_ms": embed.get("above_floor_p50_ms"),
                         # None where the native front is not built.
                         "embed_overhead_via_native_front_p50_ms":
                             embed.get("overhead_via_native_front_p50_ms")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
