"""Each benchmark runs in --smoke mode (tiny sizes, seconds) and ends as its contract says: exit
status 0, a last line of JSON with the keys a comparison between commits reads, and the same JSON
saved under the results folder. Figures are not judged here (speed is the benchmarks' business,
not the tests'); only what must hold at any speed: the fast placer agreed with the scan on every
decision, every submit was acknowledged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scheduler.front.native import native_front_binary

REPO = Path(__file__).resolve().parents[2]

# bench -> keys of its last line besides the common ones
EXPECTED = {
    "placement": {"results", "summary", "cpu"},
    "submit": {"medians", "ratios", "summary", "rounds", "prefill"},
    "scale": {"planner", "core", "heap", "summary", "arrivals"},
    "http": {"medians", "rounds", "http_vs_grpc"},
    "failover": {"takeover_s", "lost", "duplicated", "takeovers_s", "lease_taken_s"},
    "prefix": {"results", "ttft_p50_ratio", "summary", "seed"},
    "e2e": {"results", "embed_overhead_p50_ms", "bare_rtt_p50_ms", "embed_overhead_in_rtts",
            "embed_overhead_vs_agent_run_p50_ms", "embed_overhead_via_native_front_p50_ms",
            "floor_overhead_vs_agent_run_p50_ms", "embed_overhead_above_floor_p50_ms"},
}
COMMON = {"bench", "smoke", "commit", "utc", "machine"}


def run_smoke(bench: str, results_dir: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / f"{bench}.py"), "--smoke",
         "--results-dir", str(results_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    doc: dict[str, Any] = json.loads(last)
    saved = list(results_dir.glob(f"{bench}-smoke-*.json"))
    assert len(saved) == 1, saved
    assert json.loads(saved[0].read_text()) == doc
    return doc


@pytest.mark.integration
@pytest.mark.parametrize("bench", sorted(EXPECTED))
def test_bench_runs_in_smoke_mode_and_ends_with_its_json(bench: str, tmp_path: Path) -> None:
    if bench == "failover":
        from tests.integration.postgres_server import unavailable_reason

        reason = unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
    if bench == "prefix":
        from tests.chaos.harness import llm_installed

        if not llm_installed():
            pytest.skip("llama-cpp-python or SmolLM2 is not installed")
    doc = run_smoke(bench, tmp_path)
    assert COMMON | EXPECTED[bench] <= set(doc), sorted(doc)
    assert doc["bench"] == bench and doc["smoke"] is True
    if bench == "placement":
        assert doc["summary"]["all_match_scan"] is True
        for size in doc["results"].values():
            assert size["mismatches_vs_scan"] == 0
            assert size["kept"]["n"] > 0 and size["first_fit"]["n"] > 0
    elif bench == "submit":
        for name, run in doc["medians"].items():
            assert run["errors"] == 0, name
            assert run["jobs_per_s"] > 0, name
        assert set(doc["ratios"]) >= {"full_vs_bare", "direct_vs_bare", "fronts_vs_bare",
                                      "normal_vs_bare", "batch_full_vs_bare_single"}
        # No native front died under the load (a restart fails the run itself).
        assert doc["front_exits"] == []
        assert doc["summary"]["service_sustained_without_errors"] is True
    elif bench == "failover":
        # Whatever the speed, the kill lost and repeated nothing, and a standby took over.
        assert (doc["lost"], doc["duplicated"]) == (0, 0)
        assert doc["acknowledged"] == doc["completed"] > 0
        assert len(doc["takeovers_s"]) == 1 and doc["takeover_s"] > 0
    elif bench == "prefix":
        # Both routings ran the whole workload and every job streamed a first token.
        for routing in ("prefix_aware", "least_loaded"):
            assert doc["results"][routing]["n"] == doc["conversations"] * doc["turns"]
        assert doc["ttft_p50_ratio"] > 0
    elif bench == "http":
        # Both fronts answered (the OpenAI-compatible one and the gRPC one, same cluster).
        assert doc["medians"]["http"]["n"] > 0 and doc["medians"]["grpc"]["n"] > 0
        assert doc["http_vs_grpc"] > 0
    elif bench == "e2e":
        # An embedding went through the service, and the round-trip floor was measured.
        assert doc["results"]["embed"]["n"] > 0 and doc["bare_rtt_p50_ms"] > 0
        # Its agent measured the model's run for every job (the paired overhead's basis).
        assert doc["results"]["embed"]["agent_run_p50_ms"] > 0
        # The floor's jobs went through its own three processes, the model run in its agent.
        assert doc["results"]["embed"]["floor_p50_ms"] > 0
        assert doc["floor_overhead_vs_agent_run_p50_ms"] > 0
        # Through the native front as well, wherever it is built (as `hashserve up` runs).
        if native_front_binary() is not None:
            assert doc["results"]["embed"]["via_native_front_p50_ms"] > 0
    else:
        assert doc["planner"]["sites"] > 0 and doc["core"]["fill_tick_placed"] > 0
        assert doc["arrivals"]["jobs"] > 0 and doc["arrivals"]["cost_us_per_job"] > 0
        assert doc["heap"]["heap_bytes_per_job_record"] > 0
