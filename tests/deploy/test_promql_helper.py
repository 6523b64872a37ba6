"""The PromQL name lexer used by the deploy tests, on hand-picked expressions."""

from __future__ import annotations

import pytest

from tests.deploy.promql import defined_series_names, used_metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="x"} == 0', {"up"}),
        ("time() - a_timestamp_seconds > 300", {"a_timestamp_seconds"}),
        (
            'sum by (tier) (rate(a_total{tier="i", x=~"a|b"}[10m]))'
            " / sum by (tier) (rate(b_total[5m]))",
            {"a_total", "b_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m]))) > 1e-3",
            {"h_bucket"},
        ),
        ("(w > 0) and on (site, region) (p > 1.05 * r)", {"w", "p", "r"}),
        ('x{a="sum(fake_metric)"} offset 5m', {"x"}),
    ],
)
def test_used_metric_names(expr: str, names: set[str]) -> None:
    assert used_metric_names(expr) == names


def test_defined_names_have_the_suffixes_prometheus_shows() -> None:
    names = defined_series_names()
    assert "hashserve_jobs_submitted_total" in names
    assert "hashserve_jobs_submitted" not in names
    assert "hashserve_job_queue_wait_seconds_bucket" in names
    assert "hashserve_grpc_server_handled_total" in names
    assert "hashserve_agent_connected" in names
