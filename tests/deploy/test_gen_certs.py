"""scripts/gen_certs.py: the certificates it makes verify, and carry gRPC TLS end to end.

The end-to-end case serves the standard health service with the scheduler's own
`server_credentials` (mutual TLS) on loopback and calls it the way an agent does: with the CA,
its client certificate, and a server-name override.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from scheduler.api.server import server_credentials

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_certs.py"
OPENSSL = shutil.which("openssl")
BACKENDS = [
    pytest.param("openssl", marks=pytest.mark.skipif(OPENSSL is None, reason="no openssl command")),
    pytest.param(
        "cryptography",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("cryptography") is None,
            reason="the cryptography package is not installed",
        ),
    ),
]


def gen(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def openssl(*args: str) -> str:
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module", params=BACKENDS)
def pki(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"pki-{request.param}")
    done = gen(
        out, "--backend", request.param, "--server-name", "scheduler.test",
        "--server-name", "10.9.8.7", "--agent", "agent-a",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_files_and_key_modes(pki: Path) -> None:
    for name in ("ca.pem", "ca.key", "server.pem", "server.key"):
        assert (pki / name).is_file(), name
    for key in (pki / "ca.key", pki / "server.key", pki / "agents" / "agent-a.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command")
def test_certificates_verify_and_carry_the_right_names(pki: Path) -> None:
    ca = str(pki / "ca.pem")
    openssl("verify", "-CAfile", ca, "-purpose", "sslserver", str(pki / "server.pem"))
    openssl("verify", "-CAfile", ca, "-purpose", "sslclient", str(pki / "agents/agent-a.pem"))
    server = openssl("x509", "-in", str(pki / "server.pem"), "-noout", "-text")
    for name in ("DNS:localhost", "DNS:scheduler.test", "IP Address:127.0.0.1",
                 "IP Address:10.9.8.7", "TLS Web Server Authentication"):  # fmt: skip
        assert name in server, name
    agent = openssl("x509", "-in", str(pki / "agents/agent-a.pem"), "-noout", "-text")
    assert "CN = agent-a" in agent
    assert "TLS Web Client Authentication" in agent
    assert "TLS Web Server Authentication" not in agent
    ca_text = openssl("x509", "-in", ca, "-noout", "-text")
    assert "CA:TRUE" in ca_text


def test_a_second_run_reuses_the_ca_and_keeps_existing_certs(pki: Path) -> None:
    ca_before = (pki / "ca.pem").read_bytes()
    server_before = (pki / "server.pem").read_bytes()
    done = gen(pki, "--agent", "agent-b")
    assert done.returncode == 0, done.stderr
    assert (pki / "ca.pem").read_bytes() == ca_before
    assert (pki / "server.pem").read_bytes() == server_before
    assert "kept" in done.stdout
    if OPENSSL is not None:
        openssl("verify", "-CAfile", str(pki / "ca.pem"), str(pki / "agents/agent-b.pem"))


def test_bad_agent_ids_are_refused(tmp_path: Path) -> None:
    done = gen(tmp_path, "--agent", "../../etc/passwd")
    assert done.returncode == 2
    assert "agent id" in done.stderr
    assert not (tmp_path / "ca.pem").exists()


async def _health_over_tls(pki: Path, client_dir: Path | None, use_cert: bool) -> object:
    """Serve health with mutual TLS; call it as an agent would. Returns the status or the code."""
    server = aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    creds = server_credentials(
        str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem")
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        client = client_dir or pki
        channel_creds = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(client / "agents/agent-a.key").read_bytes() if use_cert else None,
            certificate_chain=(client / "agents/agent-a.pem").read_bytes() if use_cert else None,
        )
        # The agent dials an IP but checks the certificate's DNS name (--tls-server-name).
        options = [("grpc.ssl_target_name_override", "scheduler.test")]
        async with aio.secure_channel(f"127.0.0.1:{port}", channel_creds, options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            except aio.AioRpcError as err:
                return err.code()
            return reply.status
    finally:
        await server.stop(grace=None)


@pytest.mark.integration
def test_mutual_tls_end_to_end(pki: Path, tmp_path: Path) -> None:
    ok = asyncio.run(_health_over_tls(pki, None, use_cert=True))
    assert ok == health_pb2.HealthCheckResponse.SERVING
    # No client certificate: the handshake fails.
    assert asyncio.run(_health_over_tls(pki, None, use_cert=False)) == grpc.StatusCode.UNAVAILABLE
    # A client certificate from another CA: refused too.
    other = tmp_path / "other"
    assert gen(other, "--agent", "agent-a", "--no-server").returncode == 0
    refused = asyncio.run(_health_over_tls(pki, other, use_cert=True))
    assert refused == grpc.StatusCode.UNAVAILABLE
