"""A front's Prometheus series: the gRPC server's (scheduler/metrics/grpc_interceptor.py, the
names the scheduler's own port and the native front export too, so one dashboard reads every
engine), and its intake's batches to the leader. Served on the front's `metrics_port`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from scheduler.metrics.grpc_interceptor import GrpcServerMetrics

# As front.cc's: a batch holds at most `max_batch_items` (<= 1024) customers' calls.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class FrontMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.grpc = GrpcServerMetrics(self.registry)
        self.batch_submits = Histogram(
            "hashserve_front_intake_batch_submits",
            "Customers' submit calls per batch sent to the leader.",
            buckets=BATCH_BUCKETS, registry=self.registry)
        self.batches = Counter(
            "hashserve_front_intake_batches_total",
            "Batches of submits sent to the leader, by the call's status.",
            ["grpc_code"], registry=self.registry)
        self.resent = Counter(
            "hashserve_front_intake_resent_total",
            "Keyed submits sent to the leader again after it did not answer.",
            registry=self.registry)
