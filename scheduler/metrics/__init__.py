"""Prometheus metrics for the scheduler: the registry, the gRPC interceptor, the HTTP endpoint.

This package only counts what the edges tell it; it decides nothing. The pure core never imports it
(the core returns data, the edge that acts on the data records it here).
"""

from __future__ import annotations

from scheduler.metrics.grpc_interceptor import GrpcServerMetrics, MetricsServerInterceptor
from scheduler.metrics.http_server import MetricsHttpServer, start_metrics_http_server
from scheduler.metrics.registry import SchedulerMetrics

__all__ = [
    "GrpcServerMetrics",
    "MetricsHttpServer",
    "MetricsServerInterceptor",
    "SchedulerMetrics",
    "start_metrics_http_server",
]
