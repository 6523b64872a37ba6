"""Requests that are not valid messages get INVALID_ARGUMENT, not UNKNOWN.

grpc.aio decodes a request before any handler runs; bytes that are not the method's message
(corrupt data, invalid UTF-8 in a string field) raise inside gRPC, which answers UNKNOWN and logs a
traceback. This interceptor, placed first, swaps each method's deserializer for one that never
raises: it hands an `Undecodable` marker on, and the wrapped handler aborts the call with
INVALID_ARGUMENT and a message saying what was wrong.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True)
class Undecodable:
    reason: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as err:  # any decode failure is the caller's bad bytes
            return Undecodable(f"{type(err).__name__}: {err}"[:300])

    return decode


async def _refuse(context: grpc.aio.ServicerContext, method: str, bad: Undecodable) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request to {method} is not a valid message ({bad.reason})",
    )


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        # method -> (the handler it wrapped, the wrapper): built once per method, not per call,
        # since this runs ahead of every request.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, details.method)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    @staticmethod
    def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        behaviour = (
            handler.unary_unary or handler.unary_stream or handler.stream_unary
            or handler.stream_stream
        )
        if not (inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)):
            # A synchronous servicer (the standard health service) runs in gRPC's thread pool;
            # it is left as it is.
            return handler
        decode = _tolerant(handler.request_deserializer)
        encode = handler.response_serializer

        async def checked(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            async for item in requests:
                if isinstance(item, Undecodable):
                    await _refuse(context, method, item)
                yield item

        if handler.unary_unary is not None:
            uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, Undecodable):
                    await _refuse(context, method, request)
                return await uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, decode, encode)
        if handler.unary_stream is not None:
            us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, Undecodable):
                    await _refuse(context, method, request)
                async for out in us(request, context):
                    yield out

            return grpc.unary_stream_rpc_method_handler(unary_stream, decode, encode)
        if handler.stream_unary is not None:
            su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                return await su(checked(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, decode, encode)
        ss = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async for out in ss(checked(requests, context), context):
                yield out

        return grpc.stream_stream_rpc_method_handler(stream_stream, decode, encode)
