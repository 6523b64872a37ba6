"""AgentMetrics: what each method puts in the agent's own registry."""

from __future__ import annotations

import pytest

from node_agent.metrics import AgentMetrics

MODELS = ("all-minilm-l6-v2", "smollm2-135m-instruct")


def make_metrics() -> AgentMetrics:
    return AgentMetrics(agent_id="n1", site="tx-1", region="us", gpu_kind="cpu", models=MODELS)


def value(m: AgentMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_info_and_zero_baselines() -> None:
    m = make_metrics()
    info = {"agent_id": "n1", "site": "tx-1", "region": "us", "gpu_kind": "cpu"}
    assert value(m, "hashserve_agent_info", **info) == 1
    labels = {"model": "smollm2-135m-instruct", "outcome": "failed"}
    assert value(m, "hashserve_agent_jobs_completed_total", **labels) == 0
    assert value(m, "hashserve_agent_reconnects_total") == 0


def test_job_lifecycle() -> None:
    m = make_metrics()
    m.job_started()
    m.job_started()
    assert value(m, "hashserve_agent_jobs_running") == 2
    m.job_ended(
        "smollm2-135m-instruct", "succeeded", inference_s=1.5, prompt_tokens=20,
        completion_tokens=150, cached_prompt_tokens=12,
    )  # fmt: skip
    m.job_ended("all-minilm-l6-v2", "cancelled")  # cancelled before it ran
    assert value(m, "hashserve_agent_jobs_running") == 0
    ok = {"model": "smollm2-135m-instruct", "outcome": "succeeded"}
    assert value(m, "hashserve_agent_jobs_completed_total", **ok) == 1
    cancelled = {"model": "all-minilm-l6-v2", "outcome": "cancelled"}
    assert value(m, "hashserve_agent_jobs_completed_total", **cancelled) == 1
    gen = {"model": "smollm2-135m-instruct"}
    assert value(m, "hashserve_agent_inference_seconds_sum", **gen) == 1.5
    assert value(m, "hashserve_agent_inference_seconds_count", model="all-minilm-l6-v2") == 0
    assert value(m, "hashserve_agent_tokens_total", **gen, kind="completion") == 150
    assert value(m, "hashserve_agent_tokens_total", **gen, kind="prompt") == 20
    assert value(m, "hashserve_agent_tokens_total", **gen, kind="prompt_cached") == 12


def test_unknown_model_is_other_and_bad_outcome_raises() -> None:
    m = make_metrics()
    m.job_started()
    m.job_ended("mystery", "failed", inference_s=0.1)
    assert value(m, "hashserve_agent_jobs_completed_total", model="other", outcome="failed") == 1
    with pytest.raises(ValueError, match="outcome"):
        m.job_ended("all-minilm-l6-v2", "expired")


def test_connection_power_and_mode_in_base_units() -> None:
    m = make_metrics()
    m.set_connected(True)
    m.reconnected()
    m.set_fallback(True)
    m.set_power(power_draw_kw=1.4, gpu_utilization=0.5)
    m.set_power_mode(mining_mw=8.0, ai_mw=2.0, curtailed_mw=0.5)
    m.set_jobs_running(5)
    assert value(m, "hashserve_agent_connected") == 1
    assert value(m, "hashserve_agent_reconnects_total") == 1
    assert value(m, "hashserve_agent_fallback_active") == 1
    assert value(m, "hashserve_agent_power_draw_watts") == pytest.approx(1400.0)  # 1.4 kW
    assert value(m, "hashserve_agent_gpu_utilization_ratio") == 0.5
    assert value(m, "hashserve_agent_power_mode_watts", use="mining") == 8_000_000  # 8 MW
    assert value(m, "hashserve_agent_power_mode_watts", use="curtailed") == 500_000
    assert value(m, "hashserve_agent_jobs_running") == 5
    m.set_connected(False)
    assert value(m, "hashserve_agent_connected") == 0


def test_two_agents_in_one_process_do_not_clash() -> None:
    a, b = make_metrics(), make_metrics()
    a.reconnected()
    assert value(b, "hashserve_agent_reconnects_total") == 0
