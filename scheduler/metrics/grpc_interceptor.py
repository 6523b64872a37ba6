"""Counts and times every RPC a grpc.aio server handles, by service, method and status code.

`MetricsServerInterceptor` wraps each method handler the server resolves (unary and streaming, async
or the thread-pool sync kind) and records, when the call ends, one count in
`hashserve_grpc_server_handled_total` and its duration in `hashserve_grpc_server_handling_seconds`,
with `hashserve_grpc_server_started_total` counted as it begins (started minus handled is what is in
flight). Names and labels follow go-grpc-prometheus (grpc_service, grpc_method, grpc_type,
grpc_code), so the usual dashboards read them.

Labels stay bounded: only methods the server actually serves are counted (an unknown method gets no
handler and is left to gRPC's own UNIMPLEMENTED), and codes are the 17 of `grpc.StatusCode`. The
interceptor decides nothing about the call; it re-raises whatever the handler raises.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Histogram

# Unary calls take milliseconds; the agents' Connect streams and WatchJob live for minutes to days,
# so the top buckets are long (the +Inf bucket catches the rest).
HANDLING_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    300.0, 1800.0, 3600.0,
)  # fmt: skip

_CODE_NAMES: dict[Any, str] = {}
for _code in grpc.StatusCode:
    # The aio context reports codes as grpc.StatusCode or as the bare integer of cygrpc.
    _CODE_NAMES[_code] = _code.name
    _CODE_NAMES[_code.value[0]] = _code.name


class GrpcServerMetrics:
    """The gRPC server series, on a registry the caller owns (usually the scheduler's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_service", "grpc_method", "grpc_type"]
        self.started = Counter(
            "hashserve_grpc_server_started_total",
            "RPCs started on the server.",
            labels,
            registry=registry,
        )
        self.handled = Counter(
            "hashserve_grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.handling = Histogram(
            "hashserve_grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, as the server sees it.",
            labels,
            buckets=HANDLING_BUCKETS_S,
            registry=registry,
        )

    def record(self, method: _Method, code: str, seconds: float) -> None:
        handled = method.handled.get(code)
        if handled is None:
            handled = method.handled[code] = self.handled.labels(*method.labels, code)
        handled.inc()
        handling = method.handling
        if handling is None:
            handling = method.handling = self.handling.labels(*method.labels)
        handling.observe(seconds)


class _Method:
    """The labels of one resolved method, and its series, found once per method: a label
    lookup per call costs more than the increment it serves."""

    __slots__ = ("handled", "handling", "labels")

    def __init__(self, full_method: str, rpc_type: str) -> None:
        # "/hashserve.v1.CustomerService/SubmitJob" -> ("hashserve.v1.CustomerService", "SubmitJob")
        service, _, name = full_method.lstrip("/").rpartition("/")
        self.labels = (service or "unknown", name, rpc_type)
        self.handled: dict[str, Any] = {}  # status code -> its counter
        self.handling: Any = None  # the histogram's series


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


class _CodeRecordingContext:
    """Wraps the context a sync handler gets, which (unlike the aio one) cannot say its code.

    Everything is passed through; `set_code` and `abort` also remember the code they set.
    """

    def __init__(self, context: Any) -> None:
        self._context = context
        self._code: grpc.StatusCode | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code
        self._context.set_code(code)

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code = code
        self._context.abort(code, details)

    def code(self) -> grpc.StatusCode | None:
        return self._code


def _code_of(context: Any, error: BaseException | None) -> str:
    """The status the client will see, given how the handler ended."""
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    code = context.code()
    if code is not None:
        return _CODE_NAMES.get(code, "UNKNOWN")
    # No code set: a clean return is OK; any other exception becomes UNKNOWN in grpc.
    return "OK" if error is None else "UNKNOWN"


class MetricsServerInterceptor(aio.ServerInterceptor):
    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self._metrics = metrics
        # method -> (the handler it wrapped, the wrapper, the started counter): built once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        name = handler_call_details.method
        cached = self._wrapped.get(name)
        if cached is None or cached[0] is not handler:
            method = _Method(name, _rpc_type(handler))
            cached = (handler, self._wrapped_handler(handler, method),
                      self._metrics.started.labels(*method.labels))
            self._wrapped[name] = cached
        cached[2].inc()
        return cached[1]

    def _wrapped_handler(self, handler: grpc.RpcMethodHandler,
                         method: _Method) -> grpc.RpcMethodHandler:
        streaming = handler.response_streaming
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary, method, streaming),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap(handler.unary_stream, method, streaming),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(handler.stream_unary, method, streaming),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap(handler.stream_stream, method, streaming),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _wrap(
        self, behavior: Callable[..., Any], method: _Method, response_streaming: bool
    ) -> Callable[..., Any]:
        """A behaviour of the same kind (async generator, coroutine, sync) that records the call.

        The kind must match: the aio server runs coroutine functions and async generators on the
        event loop and plain functions on its thread pool, choosing by inspecting the handler. A
        streaming coroutine (one that calls `context.write`) ends when it returns.
        """
        metrics = self._metrics

        if inspect.isasyncgenfunction(behavior):

            async def async_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                start_s = time.perf_counter()
                error: BaseException | None = None
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as e:  # recorded, then re-raised untouched
                    error = e
                    raise
                finally:
                    metrics.record(method, _code_of(context, error), time.perf_counter() - start_s)

            return async_stream

        if inspect.iscoroutinefunction(behavior):

            async def coroutine(request: Any, context: Any) -> Any:
                start_s = time.perf_counter()
                error: BaseException | None = None
                try:
                    return await behavior(request, context)
                except BaseException as e:
                    error = e
                    raise
                finally:
                    metrics.record(method, _code_of(context, error), time.perf_counter() - start_s)

            return coroutine

        if response_streaming:
            # A sync generator, or a plain function that returns an iterator: either way the call
            # ends when the iteration does.

            def sync_stream(request: Any, grpc_context: Any) -> Iterator[Any]:
                context = _CodeRecordingContext(grpc_context)
                start_s = time.perf_counter()
                error: BaseException | None = None
                try:
                    yield from behavior(request, context)
                except BaseException as e:
                    error = e
                    raise
                finally:
                    metrics.record(method, _code_of(context, error), time.perf_counter() - start_s)

            return sync_stream

        def sync_call(request: Any, grpc_context: Any) -> Any:
            context = _CodeRecordingContext(grpc_context)
            start_s = time.perf_counter()
            error: BaseException | None = None
            try:
                return behavior(request, context)
            except BaseException as e:
                error = e
                raise
            finally:
                metrics.record(method, _code_of(context, error), time.perf_counter() - start_s)

        return sync_call
