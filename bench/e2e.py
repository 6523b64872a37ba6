"""End-to-end latency of one job through hashserve next to the model's own time, in one run.

    python bench/e2e.py [--n 50] [--smoke]

Starts a real local hashserve (Ray, the scheduler actor, one agent process), then for a
one-sentence embedding (and a short generation when llama-cpp-python is installed) measures:
  model:      the backend called directly in this process (what the job costs at minimum)
  hashserve:  submit over gRPC -> journal -> placement -> agent -> inference -> result watched back
and prints p50/p90 of each and their ratio. The last line is JSON.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# bench/http.py's name would hide the standard library's `http` from every import after this
# if this folder stayed first on the path (as it is for a script): it goes, the repository comes.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The agents run with one inference thread per job (hashserve.local sets this for them); the
# model's own time is measured under the same setting, or the ratio would compare 2 cores to 1.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench.common import finish, parser
from hashserve.client import Client, embed_spec, generate_spec
from hashserve.local import AgentPlan, LocalCluster

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


async def through_hashserve(cluster: LocalCluster, n: int, generate: bool) -> list[float]:
    assert cluster.credentials is not None
    times = []
    async with Client(cluster.address, cluster.credentials.api_key) as c:
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
    return times


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
        )
        try:
            cluster.start_scheduler()
            cluster.start_agents()
            for kind, model_ms in direct.items():
                if model_ms is None:
                    continue
                e2e = asyncio.run(through_hashserve(cluster, len(model_ms), kind == "generate"))
                m50, e50 = statistics.median(model_ms), statistics.median(e2e)
                results[kind] = {
                    "model_p50_ms": round(m50, 3),
                    "hashserve_p50_ms": round(e50, 3),
                    "hashserve_p90_ms": round(pct(e2e, 0.9), 3),
                    "overhead_p50_ms": round(e50 - m50, 3),
                    "ratio_p50": round(e50 / m50, 3),
                    "n": len(e2e),
                }
        finally:
            cluster.stop()
    print(
        f"{'job':<10}{'model p50':>12}{'hashserve p50':>16}{'p90':>10}{'overhead':>11}{'ratio':>8}"
    )
    for kind, r in results.items():
        print(
            f"{kind:<10}{r['model_p50_ms']:>10.2f}ms{r['hashserve_p50_ms']:>14.2f}ms"
            f"{r['hashserve_p90_ms']:>8.2f}ms{r['overhead_p50_ms']:>9.2f}ms{r['ratio_p50']:>8.2f}"
        )
    embed = results.get("embed", {})
    print(f"embedding overhead p50: {embed.get('overhead_p50_ms', float('nan')):.2f} ms over "
          "the model's own time (target: 3 ms or less)")
    finish("e2e", args, {"results": results,
                         "embed_overhead_p50_ms": embed.get("overhead_p50_ms")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
