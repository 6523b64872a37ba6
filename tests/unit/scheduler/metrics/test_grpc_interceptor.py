"""The gRPC metrics interceptor on a real grpc.aio server on loopback.

The standard health service gives a unary RPC (Check) and a long server stream written with
`context.write` (Watch); a small generic service covers the other shapes: async generators, client
and bidi streams, codes set with `set_code`, aborts, crashes, and the sync handlers an aio server
runs on its thread pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import CollectorRegistry

from scheduler.metrics.grpc_interceptor import GrpcServerMetrics, MetricsServerInterceptor

HEALTH = "grpc.health.v1.Health"
TEST = "test.Shapes"


async def _echo(request: bytes, context: aio.ServicerContext) -> bytes:
    return request


async def _not_found(request: bytes, context: aio.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.NOT_FOUND)
    context.set_details("no such thing")
    return b""


async def _invalid(request: bytes, context: aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")
    raise AssertionError("abort returned")


async def _crash(request: bytes, context: aio.ServicerContext) -> bytes:
    raise RuntimeError("handler bug")


async def _count_up(request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield str(i).encode()


async def _sum(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> bytes:
    total = 0
    async for r in requests:
        total += int(r)
    return str(total).encode()


async def _double(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for r in requests:
        yield r + r


def _sync_echo(request: bytes, context: Any) -> bytes:
    return request


def _sync_invalid(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")
    raise AssertionError("abort returned")


def _sync_busy(request: bytes, context: Any) -> bytes:
    context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
    return b""


def _sync_count_up(request: bytes, context: Any) -> Iterator[bytes]:
    for i in range(int(request)):
        yield str(i).encode()


_HANDLERS = {
    "Echo": grpc.unary_unary_rpc_method_handler(_echo),
    "NotFound": grpc.unary_unary_rpc_method_handler(_not_found),
    "Invalid": grpc.unary_unary_rpc_method_handler(_invalid),
    "Crash": grpc.unary_unary_rpc_method_handler(_crash),
    "CountUp": grpc.unary_stream_rpc_method_handler(_count_up),
    "Sum": grpc.stream_unary_rpc_method_handler(_sum),
    "Double": grpc.stream_stream_rpc_method_handler(_double),
    "SyncEcho": grpc.unary_unary_rpc_method_handler(_sync_echo),
    "SyncCountUp": grpc.unary_stream_rpc_method_handler(_sync_count_up),
    "SyncInvalid": grpc.unary_unary_rpc_method_handler(_sync_invalid),
    "SyncBusy": grpc.unary_unary_rpc_method_handler(_sync_busy),
}


async def _exercise(metrics: GrpcServerMetrics) -> None:
    server = aio.server(
        interceptors=[MetricsServerInterceptor(metrics)],
        migration_thread_pool=ThreadPoolExecutor(max_workers=2),
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(TEST, _HANDLERS)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await _calls(channel)
    finally:
        await server.stop(grace=None)


def _unary(channel: aio.Channel, name: str) -> Any:
    return channel.unary_unary(f"/{TEST}/{name}")


async def _expect(code: grpc.StatusCode, call: Any) -> None:
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code


async def _calls(channel: aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    await _expect(
        grpc.StatusCode.NOT_FOUND, stub.Check(health_pb2.HealthCheckRequest(service="nope"))
    )
    # Watch never ends by itself: read the first status, then the client cancels.
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()

    assert await _unary(channel, "Echo")(b"hi") == b"hi"
    assert await _unary(channel, "Echo")(b"again") == b"again"
    await _expect(grpc.StatusCode.NOT_FOUND, _unary(channel, "NotFound")(b""))
    await _expect(grpc.StatusCode.INVALID_ARGUMENT, _unary(channel, "Invalid")(b""))
    await _expect(grpc.StatusCode.UNKNOWN, _unary(channel, "Crash")(b""))
    await _expect(grpc.StatusCode.UNIMPLEMENTED, _unary(channel, "NoSuchMethod")(b""))

    got = [r async for r in channel.unary_stream(f"/{TEST}/CountUp")(b"3")]
    assert got == [b"0", b"1", b"2"]
    assert await channel.stream_unary(f"/{TEST}/Sum")(iter([b"1", b"2", b"3"])) == b"6"
    doubled = [r async for r in channel.stream_stream(f"/{TEST}/Double")(iter([b"a", b"b"]))]
    assert doubled == [b"aa", b"bb"]
    assert await _unary(channel, "SyncEcho")(b"sync") == b"sync"
    got = [r async for r in channel.unary_stream(f"/{TEST}/SyncCountUp")(b"2")]
    assert got == [b"0", b"1"]
    await _expect(grpc.StatusCode.INVALID_ARGUMENT, _unary(channel, "SyncInvalid")(b""))
    await _expect(grpc.StatusCode.RESOURCE_EXHAUSTED, _unary(channel, "SyncBusy")(b""))
    # The server records a cancelled Watch when its handler unwinds; give it a moment.
    await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    asyncio.run(_exercise(GrpcServerMetrics(registry)))
    return registry


def handled(
    registry: CollectorRegistry, service: str, method: str, rpc_type: str, code: str
) -> float | None:
    return registry.get_sample_value(
        "hashserve_grpc_server_handled_total",
        {"grpc_service": service, "grpc_method": method, "grpc_type": rpc_type, "grpc_code": code},
    )


@pytest.mark.parametrize(
    ("service", "method", "rpc_type", "code", "count"),
    [
        (HEALTH, "Check", "unary", "OK", 1),
        (HEALTH, "Check", "unary", "NOT_FOUND", 1),  # aborted by the servicer
        (HEALTH, "Watch", "server_stream", "CANCELLED", 1),  # client went away
        (TEST, "Echo", "unary", "OK", 2),
        (TEST, "NotFound", "unary", "NOT_FOUND", 1),  # set_code, then a normal return
        (TEST, "Invalid", "unary", "INVALID_ARGUMENT", 1),
        (TEST, "Crash", "unary", "UNKNOWN", 1),
        (TEST, "CountUp", "server_stream", "OK", 1),
        (TEST, "Sum", "client_stream", "OK", 1),
        (TEST, "Double", "bidi_stream", "OK", 1),
        (TEST, "SyncEcho", "unary", "OK", 1),
        (TEST, "SyncCountUp", "server_stream", "OK", 1),
        (TEST, "SyncInvalid", "unary", "INVALID_ARGUMENT", 1),
        (TEST, "SyncBusy", "unary", "RESOURCE_EXHAUSTED", 1),
    ],
)
def test_each_call_is_counted_once_with_its_status(
    registry: CollectorRegistry, service: str, method: str, rpc_type: str, code: str, count: int
) -> None:
    assert handled(registry, service, method, rpc_type, code) == count


def test_no_other_codes_were_recorded(registry: CollectorRegistry) -> None:
    # Echo succeeded twice and nothing else: no stray series such as Echo/UNKNOWN.
    assert handled(registry, TEST, "Echo", "unary", "UNKNOWN") is None
    assert handled(registry, TEST, "Crash", "unary", "OK") is None


def test_unknown_methods_make_no_series(registry: CollectorRegistry) -> None:
    for metric in registry.collect():
        for sample in metric.samples:
            assert sample.labels.get("grpc_method") != "NoSuchMethod"


def test_started_matches_handled_and_durations_are_observed(registry: CollectorRegistry) -> None:
    labels = {"grpc_service": TEST, "grpc_method": "Echo", "grpc_type": "unary"}
    assert registry.get_sample_value("hashserve_grpc_server_started_total", labels) == 2
    assert registry.get_sample_value("hashserve_grpc_server_handling_seconds_count", labels) == 2
    total_s = registry.get_sample_value("hashserve_grpc_server_handling_seconds_sum", labels)
    assert total_s is not None and total_s > 0
