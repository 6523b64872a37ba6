"""The alert rules and the metrics exposition, checked by Prometheus's own promtool.

promtool comes with Debian's `prometheus` package (`apt-get install -y prometheus`); CI installs
it. Without it these tests skip and say so; the pure checks (every alert has a unit test) run
anyway.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from node_agent.metrics import AgentMetrics
from scheduler.metrics.grpc_interceptor import GrpcServerMetrics, _Method
from scheduler.metrics.registry import SchedulerMetrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: apt-get install -y prometheus (Debian's package has it)",
)


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, timeout=120, check=False
    )


def alert_names() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t.get("alert_rule_test", [])}
    fired = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    names = alert_names()
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) - tested == set(), "alerts without a test"
    assert set(names) - fired == set(), "alerts never shown firing in a test"
    assert tested - set(names) == set(), "tests of alerts that do not exist"


def test_every_alert_has_severity_and_summary() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


@pytest.mark.prometheus
@needs_promtool
def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


@pytest.mark.prometheus
@needs_promtool
def test_promtool_test_rules() -> None:
    done = promtool("test", "rules", str(ALERTS_TEST))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


@pytest.mark.prometheus
@needs_promtool
def test_promtool_check_config() -> None:
    done = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def populated_scheduler_exposition() -> bytes:
    m = SchedulerMetrics(models=["all-minilm-l6-v2"])
    m.job_submitted("interactive", "all-minilm-l6-v2")
    m.job_finished(
        "interactive", "all-minilm-l6-v2", "succeeded", queue_s=0.1, run_s=0.2,
        latency_target_s=2.0,
    )  # fmt: skip
    m.set_queue_depth("flex", 3)
    m.job_reassigned("agent_lost")
    m.observe_placement_s(0.0001)
    m.placement_outcome("placed")
    m.set_hashprice(40.0)
    m.set_btc_price(95_000.0)
    m.set_feed_age("power", 60.0, 7200.0, zone="ERCOT-West")
    m.set_site(
        "tx-1", "north_america", price_usd_per_mwh=30.0, r_mine_usd_per_mwh=95.0,
        mining_mw=10.0, ai_mw=1.0, idle_mw=0.2, curtailed_mw=0.0,
        mining_revenue_usd_per_hour=950.0, ai_revenue_usd_per_hour=1500.0,
        power_cost_usd_per_hour=336.0, opportunity_price_usd_per_mwh=30.0, power_cap_mw=12.0,
    )  # fmt: skip
    m.mode_changed("tx-1", "north_america")
    m.set_feed_fallback("tx-1", "north_america", False)
    m.site_heartbeat("tx-1", "north_america", 1_700_000_000.0)
    m.set_node("n1", "tx-1", connected=True, gpu_utilization=0.5, power_draw_kw=1.1, jobs_running=2)
    grpc_metrics = GrpcServerMetrics(m.registry)
    method = _Method("/hashserve.v1.CustomerService/SubmitJob", "unary")
    grpc_metrics.started.labels(*method.labels).inc()
    grpc_metrics.record(method, "OK", 0.002)
    return generate_latest(m.registry)


def populated_agent_exposition() -> bytes:
    a = AgentMetrics(
        agent_id="n1", site="tx-1", region="north_america", gpu_kind="cpu",
        models=["all-minilm-l6-v2"],
    )  # fmt: skip
    a.set_connected(True)
    a.reconnected()
    a.set_fallback(False)
    a.job_started()
    a.job_ended("all-minilm-l6-v2", "succeeded", inference_s=0.01, prompt_tokens=12)
    a.set_power(1.1, 0.4)
    a.set_power_mode(10.0, 1.0, 0.0)
    return generate_latest(a.registry)


@pytest.mark.prometheus
@needs_promtool
@pytest.mark.parametrize("exposition", [populated_scheduler_exposition, populated_agent_exposition])
def test_promtool_check_metrics_finds_no_problems(exposition: object) -> None:
    assert callable(exposition)
    text = exposition()
    assert b"hashserve_" in text
    done = promtool("check", "metrics", stdin=text)
    problems = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0 and problems.strip() == "", problems


@pytest.mark.prometheus
@needs_promtool
def test_promtool_check_metrics_would_catch_a_bad_name() -> None:
    # The check above can fail: a name in milliseconds is reported.
    bad = b"# HELP x_milliseconds x\n# TYPE x_milliseconds gauge\nx_milliseconds 1.0\n"
    done = promtool("check", "metrics", stdin=bad)
    assert done.returncode != 0
