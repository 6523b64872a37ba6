"""The agent's own credential: enrolled once with a bootstrap token, kept in the state directory,
renewed before it expires.

The private key is made here and never leaves the machine: the scheduler signs a certificate
request for it (`AgentEnrollment.Enroll`), or, when the agent talks plain gRPC or the scheduler
has no agent CA, hands out a per-agent token instead. Both are bound to this agent's id, site and
region. Files are written atomically with mode 0600 (systemd: `StateDirectory=`, which only the
agent's user can read).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hashserve.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger("hashserve.agent.credentials")

CREDENTIAL_FILE = "credential.json"
KEY_FILE = "agent.key"
CERT_FILE = "agent.pem"
# Renew once this share of the credential's life has passed (kubelet rotates at 70-90%).
RENEW_AT_SHARE = 2 / 3


class EnrollmentError(Exception):
    """The agent has no usable credential and cannot get one (said why)."""


@dataclass(frozen=True)
class StoredCredential:
    credential_id: str
    kind: str  # "token" or "certificate"
    agent_id: str
    site: str
    region: str
    issued_s: float
    expires_s: float
    token: str = ""

    @property
    def renew_at_s(self) -> float:
        return self.issued_s + RENEW_AT_SHARE * (self.expires_s - self.issued_s)

    def binds(self, agent_id: str, site: str, region: str) -> bool:
        return (self.agent_id, self.site, self.region) == (agent_id, site, region)


def _write_private(path: Path, data: bytes) -> None:
    """Atomically, mode 0600: a crash leaves the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CredentialStore:
    """The state directory's credential.json, agent.key and agent.pem."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)

    def load(self) -> tuple[StoredCredential, bytes, bytes] | None:
        """(credential, key PEM, certificate PEM; both empty for a token), or None."""
        path = self.dir / CREDENTIAL_FILE
        if not path.exists():
            return None
        try:
            cred = StoredCredential(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as err:
            log.warning("ignoring unreadable %s: %s", path, err)
            return None
        if cred.kind == "certificate":
            try:
                return cred, (self.dir / KEY_FILE).read_bytes(), (self.dir / CERT_FILE).read_bytes()
            except OSError as err:
                log.warning("ignoring the stored certificate: %s", err)
                return None
        return cred, b"", b""

    def save(self, cred: StoredCredential, key_pem: bytes = b"", cert_pem: bytes = b"") -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if cred.kind == "certificate":
            _write_private(self.dir / KEY_FILE, key_pem)
            _write_private(self.dir / CERT_FILE, cert_pem)
        _write_private(self.dir / CREDENTIAL_FILE,
                       json.dumps(asdict(cred), indent=1).encode("utf-8"))


def new_key_and_csr(agent_id: str) -> tuple[bytes, bytes]:
    """A fresh P-256 key (PKCS#8 PEM) and a certificate request for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


async def request_credential(
    channel: grpc.aio.Channel,
    *,
    renew: bool,
    bearer: str,
    agent_id: str,
    site: str,
    region: str,
    want_certificate: bool,
    timeout_s: float = 15.0,
) -> tuple[StoredCredential, bytes, bytes]:
    """Enroll (with a bootstrap token) or renew (with the current credential: a token as
    `bearer`, or the client certificate the channel carries). Returns what to store."""
    stub = agent_pb2_grpc.AgentEnrollmentStub(channel)
    metadata = (("authorization", f"Bearer {bearer}"),) if bearer else ()
    key_pem, csr_pem = new_key_and_csr(agent_id) if want_certificate else (b"", b"")
    call = stub.Renew if renew else stub.Enroll
    request = agent_pb2.EnrollRequest(agent_id=agent_id, site=site, region=region,
                                      csr_pem=csr_pem)
    try:
        reply = await call(request, metadata=metadata, timeout=timeout_s)
    except grpc.aio.AioRpcError as err:
        if err.code() is grpc.StatusCode.FAILED_PRECONDITION and want_certificate:
            # The scheduler has no agent CA: it issues tokens only.
            log.info("the scheduler issues no certificates (%s); taking a token", err.details())
            return await request_credential(
                channel, renew=renew, bearer=bearer, agent_id=agent_id, site=site,
                region=region, want_certificate=False, timeout_s=timeout_s)
        raise
    kind = "certificate" if reply.kind == agent_pb2.CREDENTIAL_KIND_CERTIFICATE else "token"
    cred = StoredCredential(
        credential_id=reply.credential_id, kind=kind, agent_id=reply.agent_id, site=reply.site,
        region=reply.region, issued_s=time.time(),
        expires_s=reply.expires_at.seconds + reply.expires_at.nanos / 1e9, token=reply.token,
    )
    return cred, key_pem if kind == "certificate" else b"", bytes(reply.certificate_pem)
