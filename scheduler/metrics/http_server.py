"""Serves one registry's metrics over HTTP for Prometheus to scrape (`/metrics`, any path works).

A thin wrapper over prometheus_client's threaded WSGI server that reports the port it actually
bound (port 0 asks the OS for a free one, which tests and several servers in one process need) and
hands back a function that stops it. The scheduler and the agents both use it; what goes in the
registry is theirs to decide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from prometheus_client import CollectorRegistry, start_http_server


class MetricsHttpServer(NamedTuple):
    port: int
    stop: Callable[[], None]


def start_metrics_http_server(
    registry: CollectorRegistry, host: str = "0.0.0.0", port: int = 0
) -> MetricsHttpServer:
    """Start serving `registry` on `host:port` in a daemon thread; returns (bound port, stop)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:  # idempotent, so a shutdown path may call it twice
            return
        stopped = True
        server.shutdown()
        server.server_close()
        thread.join(timeout=5.0)

    return MetricsHttpServer(port=int(server.server_port), stop=stop)
