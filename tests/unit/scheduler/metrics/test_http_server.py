"""The metrics HTTP endpoint: binds an ephemeral port, serves the registry, stops cleanly."""

from __future__ import annotations

import httpx
import pytest

from scheduler.metrics.http_server import start_metrics_http_server
from scheduler.metrics.registry import SchedulerMetrics


def test_serves_the_registry_on_an_ephemeral_port_and_stops() -> None:
    metrics = SchedulerMetrics()
    metrics.set_hashprice(40.25)
    server = start_metrics_http_server(metrics.registry, "127.0.0.1", 0)
    port, stop = server  # unpacks like the (port, stop) pair it is
    try:
        assert port > 0
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0)
        assert response.status_code == 200
        assert "hashserve_hashprice_usd_per_phs_day 40.25" in response.text
        # Only this registry: nothing from prometheus_client's global one (process_*, python_*).
        assert "python_gc_objects_collected_total" not in response.text
    finally:
        stop()
    stop()  # a second stop is harmless
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0)


def test_two_servers_in_one_process() -> None:
    a, b = SchedulerMetrics(), SchedulerMetrics()
    a.set_btc_price(1.0)
    b.set_btc_price(2.0)
    sa = start_metrics_http_server(a.registry, "127.0.0.1", 0)
    sb = start_metrics_http_server(b.registry, "127.0.0.1", 0)
    try:
        assert sa.port != sb.port
        text_b = httpx.get(f"http://127.0.0.1:{sb.port}/metrics", timeout=5.0).text
        assert "hashserve_bitcoin_price_usd 2.0" in text_b
    finally:
        sa.stop()
        sb.stop()
