"""The gRPC server: where customer, agent and admin messages enter and leave the process.

Adds the standard health service (grpc.health.v1) and server reflection so `grpcurl` works, and
server TLS when certificates are configured: mutual on the agents' own port, never on the
customers'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hashserve.v1 import (
    admin_pb2,
    agent_pb2,
    agent_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    intake_pb2,
    intake_pb2_grpc,
)
from scheduler.api.decode_guard import DecodeGuardInterceptor

# Large enough for a 64-text embedding batch or a batch submit; anything bigger is refused by gRPC
# with RESOURCE_EXHAUSTED before it reaches our code.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

SERVICE_NAMES = (
    customer_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)
ENROLLMENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentEnrollment"].full_name
INTAKE_SERVICE = intake_pb2.DESCRIPTOR.services_by_name["Intake"].full_name


def server_credentials(
    cert: str, key: str, client_ca: str | Sequence[str] | None
) -> grpc.ServerCredentials:
    """Server TLS; with client CAs (one file, or several: an old and a new CA while rotating),
    mutual TLS that requires a client certificate signed by one of them."""
    chain = Path(cert).read_bytes()
    private_key = Path(key).read_bytes()
    cas = [client_ca] if isinstance(client_ca, str) else list(client_ca or ())
    if cas:
        return grpc.ssl_server_credentials(
            [(private_key, chain)],
            root_certificates=b"\n".join(Path(ca).read_bytes().strip() for ca in cas) + b"\n",
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([(private_key, chain)])


def build_server(
    customer: customer_pb2_grpc.CustomerServiceServicer | None,
    agent: agent_pb2_grpc.AgentServiceServicer | None,
    admin: object | None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    enrollment: agent_pb2_grpc.AgentEnrollmentServicer | None = None,
    intake: intake_pb2_grpc.IntakeServicer | None = None,
    reuse_port: bool = False,
) -> tuple[grpc.aio.Server, health.HealthServicer]:
    """One port's server: the customers' (customer, admin, enrollment and, unless agents have
    their own port, agent services, and the fronts' intake) or the agents' (agent and
    enrollment). `reuse_port`: a front, several of which share one port (SO_REUSEPORT)."""
    server = grpc.aio.server(
        # The decode guard goes first so that every later layer sees only valid messages.
        interceptors=[DecodeGuardInterceptor(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # One scheduler per port: a second one must fail to bind, not share the port. Fronts
            # are stateless, so several share one and the kernel spreads connections over them.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    names: list[str] = []
    if customer is not None:
        customer_pb2_grpc.add_CustomerServiceServicer_to_server(customer, server)
        names.append(SERVICE_NAMES[0])
    if agent is not None:
        agent_pb2_grpc.add_AgentServiceServicer_to_server(agent, server)
        names.append(SERVICE_NAMES[1])
    if admin is not None:
        from hashserve.v1 import admin_pb2_grpc

        admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)  # type: ignore[arg-type]
        names.append(SERVICE_NAMES[2])
    if enrollment is not None:
        agent_pb2_grpc.add_AgentEnrollmentServicer_to_server(enrollment, server)
        names.append(ENROLLMENT_SERVICE)
    if intake is not None:
        intake_pb2_grpc.add_IntakeServicer_to_server(intake, server)
        names.append(INTAKE_SERVICE)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    return server, health_servicer


def mark_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES, ENROLLMENT_SERVICE, INTAKE_SERVICE):
        health_servicer.set(name, status)
