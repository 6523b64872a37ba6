"""The agent gRPC service: one bidirectional stream per node agent.

The first message must be a hello; its agent id must be one the token may claim. After that the
stream carries heartbeats, progress and outcomes up, and the session's outbox (assignments,
cancels, power modes, acks) down. When the stream ends, the session closes and the core starts the
agent's grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator
from typing import cast

import grpc

from hashserve.v1 import agent_pb2, agent_pb2_grpc
from scheduler.api import agent_codec
from scheduler.api.auth import Authenticator, AuthError
from scheduler.control.loop import ControlLoop

log = logging.getLogger("hashserve.scheduler.agents")
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HELLO_TIMEOUT_S = 10.0
# An 8-GPU H100 server draws about 10 kW; 100 kW leaves room for any one node, and no more.
MAX_NODE_POWER_KW = 100.0


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, loop: ControlLoop, auth: Authenticator) -> None:
        self.loop = loop
        self.auth = auth

    async def Connect(
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[agent_pb2.SchedulerMessage]:
        try:
            allowed_id = self.auth.agent(context.invocation_metadata())
        except AuthError as err:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        messages = request_iterator.__aiter__()
        try:
            first = await asyncio.wait_for(messages.__anext__(), HELLO_TIMEOUT_S)
        except (TimeoutError, StopAsyncIteration):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
        if first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
        hello = first.hello
        problem = _check_hello(hello, self.loop.known_regions)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if not Authenticator.may_claim(allowed_id, hello.agent_id):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this token may not act as agent {hello.agent_id!r}",
            )
        session = self.loop.open_session(agent_codec.decode_hello(hello))

        async def read() -> None:
            try:
                async for msg in messages:
                    event = agent_codec.decode(msg)
                    if event is not None:
                        self.loop.on_agent_message(session, event)
            except Exception as err:  # a broken stream ends the session, not the server
                log.info("agent %s stream ended: %s", session.node_id, err)
            finally:
                session.close()

        reader = asyncio.create_task(read(), name=f"agent-{hello.agent_id}")
        try:
            while True:
                out = await session.outbox.get()
                if out is None:
                    break
                msg = cast(agent_pb2.SchedulerMessage, out)  # only agent_codec fills outboxes
                msg.epoch = self.loop.epoch
                yield msg
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.loop.close_session(session)


def _check_hello(hello: agent_pb2.AgentHello, known_regions: frozenset[str]) -> str:
    if not AGENT_ID_RE.match(hello.agent_id):
        return "hello.agent_id must be 1-128 characters of letters, digits, '.', '_' or '-'"
    if not hello.site:
        return "hello.site is required"
    if known_regions and hello.region not in known_regions:
        return f"hello.region {hello.region[:40]!r} is unknown; known: {sorted(known_regions)}"
    if not hello.models:
        return "hello.models is empty: the agent serves nothing"
    if hello.max_concurrent_jobs > 1024:
        return "hello.max_concurrent_jobs is over 1024"
    for name, kw in (
        ("idle_power_kw", hello.idle_power_kw),
        ("busy_power_kw", hello.busy_power_kw),
    ):
        if not (math.isfinite(kw) and 0.0 <= kw <= MAX_NODE_POWER_KW):
            return f"hello.{name} is {kw}; it must be between 0 and {MAX_NODE_POWER_KW:g} kW"
    if hello.busy_power_kw and hello.idle_power_kw > hello.busy_power_kw:
        return "hello.idle_power_kw is above busy_power_kw"
    return ""
