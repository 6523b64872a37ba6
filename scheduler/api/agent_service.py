"""The agent gRPC service: one bidirectional stream per node agent.

The call's credential (a client certificate on the agent port, else a token) is checked first;
the first message must then be a hello naming exactly the agent, site and region the credential
binds. After that the stream carries heartbeats, progress and outcomes up, and the session's
outbox (assignments, cancels, power modes, acks) down. When the stream ends, the session closes
and the core starts the agent's grace period. A revoked credential's stream is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import cast

import grpc

from hashserve.v1 import agent_pb2, agent_pb2_grpc
from scheduler.api import agent_codec
from scheduler.api.agent_identity import AGENT_ID_RE, AgentIdentities, AgentRefused, Issued
from scheduler.api.convert import timestamp
from scheduler.api.refusal import Refusal
from scheduler.control.agent_events import AgentRefusal
from scheduler.control.loop import AgentSession, ControlLoop
from scheduler.journal.base import AgentCredentialKind

log = logging.getLogger("hashserve.scheduler.agents")
HELLO_TIMEOUT_S = 10.0
# How long a refused stream waits for the hello its agent is writing before it is told why.
REFUSAL_HEARS_HELLO_S = 1.0
# An 8-GPU H100 server draws about 10 kW; 100 kW leaves room for any one node, and no more.
MAX_NODE_POWER_KW = 100.0


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, loop: ControlLoop, identities: AgentIdentities) -> None:
        self.loop = loop
        self.identities = identities
        # Open streams by the credential they run on: a revocation closes them at once.
        self._streams: dict[str, set[AgentSession]] = {}
        identities.on_revoked.append(self.close_revoked)

    def close_revoked(self, credential_ids: Sequence[str]) -> int:
        closed = 0
        for credential_id in credential_ids:
            for session in self._streams.pop(credential_id, set()):
                session.revoke()
                closed += 1
        return closed

    async def Connect(
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[agent_pb2.SchedulerMessage]:
        messages = request_iterator.__aiter__()
        try:
            identity = await asyncio.to_thread(
                self.identities.from_call, context.auth_context(),
                context.invocation_metadata(), context.peer(),
            )
        except AgentRefused as err:
            self.loop.refused(err.what)
            # An agent writes its hello as it opens the stream. Aborted while that write is
            # out, its call can end on the transport's reset (INTERNAL) instead of this status,
            # and an agent told INTERNAL retries a credential it should give up on.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(messages.__anext__(), REFUSAL_HEARS_HELLO_S)
            await context.abort(err.code, err.message)
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
        try:
            AgentIdentities.check_hello(identity, hello.agent_id, hello.site, hello.region)
        except AgentRefused as err:
            self.loop.refused(err.what)
            log.warning("refused a hello as %s (site %s, %s) on credential %s of %s: %s",
                        hello.agent_id, hello.site[:64], hello.region[:64],
                        identity.credential_id, identity.agent_id, err.message)
            await context.abort(err.code, err.message)
        session = self.loop.open_session(agent_codec.decode_hello(hello))
        self._streams.setdefault(identity.credential_id, set()).add(session)

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
            streams = self._streams.get(identity.credential_id)
            if streams is not None:
                streams.discard(session)
                if not streams:
                    del self._streams[identity.credential_id]
        if session.revoked:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"credential {identity.credential_id} was revoked")


class AgentEnrollmentService(agent_pb2_grpc.AgentEnrollmentServicer):
    """Enroll (a bootstrap token) and Renew (the agent's current credential)."""

    def __init__(self, identities: AgentIdentities, refused: Callable[[AgentRefusal], None]):
        self.identities = identities
        self.refused = refused

    async def Enroll(
        self, request: agent_pb2.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.EnrollResponse:
        try:
            issued = await asyncio.to_thread(
                self.identities.enroll, context.invocation_metadata(), request.agent_id,
                request.site, request.region, request.csr_pem,
            )
        except Refusal as err:
            self.refused(AgentRefusal.ENROLLMENT)
            await context.abort(err.code, err.message)
        return _issued(issued)

    async def Renew(
        self, request: agent_pb2.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.EnrollResponse:
        try:
            identity = await asyncio.to_thread(
                self.identities.from_call, context.auth_context(),
                context.invocation_metadata(), context.peer(),
            )
            issued = await asyncio.to_thread(
                self.identities.renew, identity, request.agent_id, request.site, request.region,
                request.csr_pem,
            )
        except Refusal as err:
            self.refused(AgentRefusal.ENROLLMENT)
            await context.abort(err.code, err.message)
        return _issued(issued)


_KIND_TO_PROTO = {
    AgentCredentialKind.TOKEN: agent_pb2.CREDENTIAL_KIND_TOKEN,
    AgentCredentialKind.CERTIFICATE: agent_pb2.CREDENTIAL_KIND_CERTIFICATE,
    AgentCredentialKind.BOOTSTRAP: agent_pb2.CREDENTIAL_KIND_BOOTSTRAP,
}


def credential_kind(kind: AgentCredentialKind) -> agent_pb2.CredentialKind:
    return _KIND_TO_PROTO[kind]


def _issued(issued: Issued) -> agent_pb2.EnrollResponse:
    row = issued.row
    return agent_pb2.EnrollResponse(
        credential_id=row.credential_id, kind=credential_kind(row.kind), agent_id=row.agent_id,
        site=row.site, region=row.region, certificate_pem=issued.certificate_pem,
        ca_pem=issued.ca_pem, token=issued.token, expires_at=timestamp(row.expires_s),
    )


def _check_hello(hello: agent_pb2.AgentHello, known_regions: frozenset[str]) -> str:
    if not AGENT_ID_RE.match(hello.agent_id):
        return "hello.agent_id must be 1-128 characters of letters, digits, '.', '_' or '-'"
    if not hello.site:
        return "hello.site is required"
    if known_regions and hello.region not in known_regions:
        return f"hello.region {hello.region[:40]!r} is unknown; known: {sorted(known_regions)}"
    if not hello.models and not hello.loadable_models:
        return "hello.models and loadable_models are empty: the agent serves nothing"
    if len(hello.models) + len(hello.loadable_models) > 256:
        return "hello names over 256 models"
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
