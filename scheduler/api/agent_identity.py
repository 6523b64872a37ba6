"""Who an agent is: enrollment with a bootstrap token, per-agent credentials, rotation, revocation.

After the Kubernetes kubelet's TLS bootstrap and its NodeRestriction admission plugin:
- a **bootstrap token** (`hsb_<id>_<secret>`) can only enroll. It is scoped to one site (and
  optionally a list of agent ids), and it is single-use or short-lived;
- enrolling gives the agent its **own credential**, bound to its agent id, site and region: a
  client certificate signed by the scheduler's agent CA (its SAN names the agent), or, where the
  scheduler has no agent CA, a per-agent token (`hsa_<secret>`);
- a stream acts only as the identity its credential binds: a hello naming another agent, site or
  region is refused, and so is anything about jobs not placed on it;
- a credential is renewed with itself before it expires, and revoked at once (its stream closes).

Only SHA-256 hashes reach the journal: of a token, or of a certificate's DER. The journal's rows
are read on every connect and enrollment, never cached, so a revocation written by any scheduler
applies to the next connect everywhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scheduler.api.auth import AGENT_TOKEN_PREFIX, AuthError, bearer_from_metadata, hash_secret
from scheduler.api.refusal import Refusal
from scheduler.control.agent_events import AgentRefusal
from scheduler.journal.base import ANY_AGENT, AgentCredentialKind, AgentCredentialRow, Journal

log = logging.getLogger("hashserve.scheduler.identity")

BOOTSTRAP_PREFIX = "hsb"
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_BOOTSTRAP_TTL_S = 3600.0
MAX_BOOTSTRAP_TTL_S = 7 * 86_400.0
MAX_BOOTSTRAP_USES = 10_000
MAX_CREDENTIAL_TTL_S = 400 * 86_400.0
MAX_CSR_BYTES = 16 * 1024
# The URI in an enrolled certificate's SAN; the agent id is its last segment.
AGENT_URI_PREFIX = "spiffe://hashserve/agent/"


@dataclass(frozen=True)
class AgentIdentity:
    """What one credential lets a stream act as."""

    credential_id: str
    kind: AgentCredentialKind
    agent_id: str
    site: str
    region: str
    expires_s: float

    @property
    def any_agent(self) -> bool:
        return self.agent_id == ANY_AGENT

    @classmethod
    def of(cls, row: AgentCredentialRow) -> AgentIdentity:
        return cls(row.credential_id, row.kind, row.agent_id, row.site, row.region, row.expires_s)


@dataclass(frozen=True)
class Issued:
    """A credential just issued: the secret part is shown once."""

    row: AgentCredentialRow
    token: str = ""
    certificate_pem: bytes = b""
    ca_pem: bytes = b""


class AgentRefused(Refusal):
    """A refusal of an agent credential or claim, with what it counts as."""

    def __init__(self, code: grpc.StatusCode, message: str,
                 what: AgentRefusal = AgentRefusal.CREDENTIAL) -> None:
        super().__init__(code, message)
        self.what = what


def refused(code: grpc.StatusCode, message: str,
            what: AgentRefusal = AgentRefusal.CREDENTIAL) -> AgentRefused:
    return AgentRefused(code, message, what)


def certificate_fingerprint(pem: bytes) -> str:
    """SHA-256 of the certificate's DER: how the journal finds a certificate's binding."""
    cert = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def agent_id_in_certificate(pem: bytes) -> str:
    """The agent id an enrolled certificate names in its SAN URI ("" if none)."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(AGENT_URI_PREFIX):
            return uri[len(AGENT_URI_PREFIX):]
    return ""


def parse_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """A PKCS#10 request that is well formed, signed by its own key, and of a key we accept."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                      f"csr_pem is {len(csr_pem)} bytes; at most {MAX_CSR_BYTES}")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        key = csr.public_key()
        valid = csr.is_signature_valid
    except (ValueError, TypeError, InvalidSignature, x509.UnsupportedGeneralNameType) as err:
        raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                      f"csr_pem is not a PEM certificate request: {str(err)[:120]}") from err
    if not valid:
        raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                      "csr_pem's signature does not match its key")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"csr_pem's EC curve {key.curve.name} is not P-256 or P-384")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"csr_pem's RSA key has {key.key_size} bits; at least 2048")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                      "csr_pem's key must be EC P-256/P-384, RSA 2048+ or Ed25519")
    return csr


class AgentCa:
    """The CA that signs enrolled agents' client certificates (and that the agent port trusts).

    The request's subject and extensions are ignored: what the certificate says comes from the
    credential's binding alone."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("the agent CA key must be an EC or RSA private key")
        self.key = key
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def from_files(cls, cert_path: str, key_path: str) -> AgentCa:
        with open(cert_path, "rb") as cert, open(key_path, "rb") as key:
            return cls(cert.read(), key.read())

    def sign(self, csr: x509.CertificateSigningRequest, agent_id: str, site: str,
             not_before_s: float, not_after_s: float) -> bytes:
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, agent_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
        ])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(csr.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            # A minute's slack for clocks that disagree a little.
            .not_valid_before(dt.datetime.fromtimestamp(not_before_s - 60, dt.UTC))
            .not_valid_after(dt.datetime.fromtimestamp(not_after_s, dt.UTC))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(
                x509.SubjectAlternativeName([
                    x509.UniformResourceIdentifier(AGENT_URI_PREFIX + agent_id),
                ]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)


def is_loopback_peer(peer: str) -> bool:
    """gRPC's peer string ("ipv4:127.0.0.1:5123", "ipv6:[::1]:5123", "unix:...")."""
    if peer.startswith("unix:"):
        return True
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    elif kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]")
    else:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ensure_any_agent_token(journal: Journal, token: str, now_s: float) -> None:
    """Register the local cluster's "*" token once (it is accepted from loopback only)."""
    if journal.find_agent_credential(hash_secret(token)) is None:
        journal.add_agent_credential(AgentCredentialRow(
            f"tok-{secrets.token_hex(6)}", AgentCredentialKind.TOKEN, hash_secret(token),
            ANY_AGENT, ANY_AGENT, ANY_AGENT, now_s, 0.0, issued_by="environment",
        ))


@dataclass
class AgentIdentities:
    """Issues, checks, renews and revokes agent credentials, all through the journal."""

    journal: Journal
    clock: Callable[[], float]
    # The fleet's region for each site: a credential for a known site binds its region.
    region_of_site: Mapping[str, str]
    known_regions: frozenset[str]
    ca: AgentCa | None = None
    credential_ttl_s: float = 7 * 86_400.0
    # Called with the credential ids just revoked; returns how many streams it closed.
    on_revoked: list[Callable[[Sequence[str]], int]] = field(default_factory=list)

    # ----- issuing --------------------------------------------------------------------------

    def _binding(self, agent_id: str, site: str, region: str) -> tuple[str, str, str]:
        if not AGENT_ID_RE.match(agent_id):
            raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                          "agent_id must be 1-128 letters, digits, '.', '_' or '-'")
        return (agent_id, *self._site(site, region))

    def _site(self, site: str, region: str) -> tuple[str, str]:
        if not SITE_RE.match(site):
            raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                          "site must be 1-64 letters, digits, '.', '_' or '-'")
        fleet_region = self.region_of_site.get(site)
        if fleet_region is not None and region and region != fleet_region:
            raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"site {site} is in region {fleet_region}, not {region[:40]!r}")
        region = region or fleet_region or ""
        if not region:
            raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"site {site} is not in the fleet file: give its region")
        if self.known_regions and region not in self.known_regions:
            raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"region {region[:40]!r} is unknown; known: {sorted(self.known_regions)}")
        return site, region

    def _ttl(self, ttl_s: float, default_s: float, max_s: float) -> float:
        if not (ttl_s == ttl_s) or ttl_s < 0 or ttl_s > max_s:  # NaN, negative, too long
            raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"ttl_s must be between 0 (the default) and {max_s:g} s")
        return ttl_s or default_s

    def issue_bootstrap(self, site: str, region: str = "", agent_ids: Sequence[str] = (),
                        ttl_s: float = 0.0, uses: int = 0, issued_by: str = "") -> Issued:
        token_id = secrets.token_hex(6)
        token = f"{BOOTSTRAP_PREFIX}_{token_id}_{secrets.token_urlsafe(24)}"
        row = self._add_bootstrap(token, token_id, site, region, agent_ids, ttl_s, uses,
                                  issued_by)
        log.info("bootstrap token %s for site %s (%s), %d use(s), for %.0f s", row.credential_id,
                 row.site, ", ".join(row.agent_ids) or "any agent id", row.uses_left,
                 row.expires_s - row.issued_s)
        return Issued(row, token=token)

    def ensure_bootstrap(self, token: str, site: str, region: str, agent_ids: Sequence[str],
                         ttl_s: float, uses: int) -> None:
        """Register a bootstrap token given from outside (a deployment's secret) once: a restart
        neither extends nor refills it."""
        if self.journal.find_agent_credential(hash_secret(token)) is not None:
            return
        if not token.startswith(BOOTSTRAP_PREFIX + "_") or len(token) < 32:
            raise ValueError("a bootstrap token must read hsb_<id>_<secret of 20+ characters>; "
                             "make one with `hashserve admin new-bootstrap-token`")
        try:
            self._add_bootstrap(token, token.split("_")[1] or secrets.token_hex(6), site, region,
                                agent_ids, ttl_s, uses, "environment")
        except Refusal as err:
            raise ValueError(f"bootstrap token settings: {err.message}") from None

    def _add_bootstrap(self, token: str, token_id: str, site: str, region: str,
                       agent_ids: Sequence[str], ttl_s: float, uses: int,
                       issued_by: str) -> AgentCredentialRow:
        site, region = self._site(site, region)
        for agent_id in agent_ids:
            if not AGENT_ID_RE.match(agent_id):
                raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"agent id {agent_id[:40]!r} is not an agent id")
        if not 0 <= uses <= MAX_BOOTSTRAP_USES:
            raise refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"uses must be between 0 (single-use) and {MAX_BOOTSTRAP_USES}")
        ttl_s = self._ttl(ttl_s, DEFAULT_BOOTSTRAP_TTL_S, MAX_BOOTSTRAP_TTL_S)
        now = self.clock()
        row = AgentCredentialRow(
            f"bt-{token_id}", AgentCredentialKind.BOOTSTRAP, hash_secret(token), "", site,
            region, now, now + ttl_s, tuple(dict.fromkeys(agent_ids)), uses or 1,
            issued_by=issued_by,
        )
        self.journal.add_agent_credential(row)
        return row

    def issue_token(self, agent_id: str, site: str, region: str = "", ttl_s: float = 0.0,
                    issued_by: str = "") -> Issued:
        """A per-agent token from an admin (an agent that cannot run enrollment)."""
        agent_id, site, region = self._binding(agent_id, site, region)
        ttl_s = self._ttl(ttl_s, self.credential_ttl_s, MAX_CREDENTIAL_TTL_S)
        return self._issue_token(agent_id, site, region, ttl_s, issued_by)

    def _issue_token(self, agent_id: str, site: str, region: str, ttl_s: float,
                     issued_by: str) -> Issued:
        token = f"{AGENT_TOKEN_PREFIX}_{secrets.token_urlsafe(24)}"
        now = self.clock()
        row = AgentCredentialRow(
            f"tok-{secrets.token_hex(6)}", AgentCredentialKind.TOKEN, hash_secret(token),
            agent_id, site, region, now, now + ttl_s, issued_by=issued_by,
        )
        self.journal.add_agent_credential(row)
        return Issued(row, token=token)

    def ensure_any_agent_token(self, token: str) -> None:
        ensure_any_agent_token(self.journal, token, self.clock())

    def _issue_for(self, agent_id: str, site: str, region: str, csr_pem: bytes,
                   issued_by: str) -> Issued:
        """The agent's own credential: a certificate for its CSR, or a token without one."""
        if not csr_pem:
            return self._issue_token(agent_id, site, region, self.credential_ttl_s, issued_by)
        if self.ca is None:
            raise refused(grpc.StatusCode.FAILED_PRECONDITION,
                          "this scheduler has no agent CA (agent_ca_cert/agent_ca_key): send "
                          "no csr_pem, and take a token")
        csr = parse_csr(csr_pem)
        now = self.clock()
        expires = now + self.credential_ttl_s
        pem = self.ca.sign(csr, agent_id, site, now, expires)
        row = AgentCredentialRow(
            f"crt-{secrets.token_hex(6)}", AgentCredentialKind.CERTIFICATE,
            certificate_fingerprint(pem), agent_id, site, region, now, expires,
            issued_by=issued_by,
        )
        self.journal.add_agent_credential(row)
        return Issued(row, certificate_pem=pem, ca_pem=self.ca.cert_pem)

    # ----- enrolling and renewing ------------------------------------------------------------

    def enroll(self, metadata: Sequence[tuple[str, str | bytes]] | None, agent_id: str,
               site: str, region: str, csr_pem: bytes) -> Issued:
        """A bootstrap token's one power: an agent of its site gets its own credential."""
        try:
            token = bearer_from_metadata(metadata)
        except AuthError as err:
            raise refused(grpc.StatusCode.UNAUTHENTICATED, str(err)) from err
        row = self.journal.find_agent_credential(hash_secret(token))
        now = self.clock()
        if row is None or row.kind is not AgentCredentialKind.BOOTSTRAP:
            raise refused(grpc.StatusCode.UNAUTHENTICATED, "not a bootstrap token")
        if row.revoked_s:
            raise refused(grpc.StatusCode.UNAUTHENTICATED, "this bootstrap token is revoked")
        if row.expired(now):
            raise refused(grpc.StatusCode.UNAUTHENTICATED, "this bootstrap token has expired")
        agent_id, site, region = self._binding(agent_id, site, region or row.region)
        if not hmac.compare_digest(site, row.site) or region != row.region:
            raise refused(grpc.StatusCode.PERMISSION_DENIED,
                          f"this bootstrap token enrolls agents of site {row.site} "
                          f"({row.region}) only")
        if row.agent_ids and agent_id not in row.agent_ids:
            raise refused(grpc.StatusCode.PERMISSION_DENIED,
                          f"this bootstrap token does not enroll agent {agent_id}")
        if csr_pem:
            parse_csr(csr_pem)  # a bad request must not spend a single-use token
        if not self.journal.consume_bootstrap(row.credential_id, now):
            raise refused(grpc.StatusCode.UNAUTHENTICATED, "this bootstrap token is used up")
        issued = self._issue_for(agent_id, site, region, csr_pem, row.credential_id)
        log.info("agent %s (site %s, %s) enrolled with %s: %s %s", agent_id, site, region,
                 row.credential_id, issued.row.kind.value, issued.row.credential_id)
        return issued

    def renew(self, identity: AgentIdentity, agent_id: str, site: str, region: str,
              csr_pem: bytes) -> Issued:
        """A new credential for the same binding, asked for with the current one."""
        if identity.any_agent:
            raise refused(grpc.StatusCode.PERMISSION_DENIED,
                          "the local cluster's '*' token is not renewed")
        self.check_hello(identity, agent_id, site, region)
        issued = self._issue_for(identity.agent_id, identity.site, identity.region, csr_pem,
                                 identity.credential_id)
        log.info("agent %s renewed %s as %s", identity.agent_id, identity.credential_id,
                 issued.row.credential_id)
        return issued

    # ----- checking -------------------------------------------------------------------------

    def _live(self, row: AgentCredentialRow | None, what: str) -> AgentIdentity:
        now = self.clock()
        if row is None:
            raise refused(grpc.StatusCode.UNAUTHENTICATED, f"unknown {what}")
        if row.kind is AgentCredentialKind.BOOTSTRAP:
            raise refused(grpc.StatusCode.PERMISSION_DENIED,
                          "a bootstrap token can only enroll (AgentEnrollment.Enroll)",
                          AgentRefusal.BOOTSTRAP)
        if row.revoked_s:
            raise refused(grpc.StatusCode.UNAUTHENTICATED, f"this {what} is revoked")
        if row.expired(now):
            raise refused(grpc.StatusCode.UNAUTHENTICATED,
                          f"this {what} has expired: enroll again with a bootstrap token")
        self.journal.touch_agent_credential(row.credential_id, now)
        return AgentIdentity.of(row)

    def from_token(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> AgentIdentity:
        try:
            token = bearer_from_metadata(metadata)
        except AuthError as err:
            raise refused(grpc.StatusCode.UNAUTHENTICATED, str(err)) from err
        return self._live(self.journal.find_agent_credential(hash_secret(token)), "agent token")

    def from_certificate(self, pem: bytes) -> AgentIdentity:
        """The binding of a client certificate the TLS handshake already verified."""
        try:
            fingerprint = certificate_fingerprint(pem)
            named = agent_id_in_certificate(pem)
        except ValueError as err:
            raise refused(grpc.StatusCode.UNAUTHENTICATED, "unreadable client certificate") from err
        identity = self._live(self.journal.find_agent_credential(fingerprint),
                              "client certificate")
        if not hmac.compare_digest(named, identity.agent_id):
            raise refused(grpc.StatusCode.UNAUTHENTICATED,
                          "the client certificate's SAN does not name its agent")
        return identity

    def from_call(self, auth_context: Mapping[str, Sequence[bytes]],
                  metadata: Sequence[tuple[str, str | bytes]] | None,
                  peer: str) -> AgentIdentity:
        """A call's agent identity: its client certificate where it has one, else its token.
        The '*' token is accepted from loopback only."""
        certs = auth_context.get("x509_pem_cert") or ()
        if certs:
            return self.from_certificate(certs[0])
        identity = self.from_token(metadata)
        if identity.any_agent and not is_loopback_peer(peer):
            raise refused(grpc.StatusCode.PERMISSION_DENIED,
                          "the local cluster's '*' token is accepted from loopback only; "
                          "enroll this agent with a bootstrap token")
        return identity

    @staticmethod
    def check_hello(identity: AgentIdentity, agent_id: str, site: str, region: str) -> None:
        """An agent acts only as itself: its id, site and region are the credential's."""
        if identity.any_agent:
            return
        for what, claimed, bound in (("agent", agent_id, identity.agent_id),
                                     ("site", site, identity.site),
                                     ("region", region, identity.region)):
            if not hmac.compare_digest(claimed.encode(), bound.encode()):
                raise refused(grpc.StatusCode.PERMISSION_DENIED,
                              f"this credential may not act as {what} {claimed[:128]!r}",
                              AgentRefusal.IDENTITY)

    # ----- revoking and listing ---------------------------------------------------------------

    def revoke(self, credential_id: str = "", agent_id: str = "") -> tuple[list[str], int]:
        """(credential ids revoked, streams closed)."""
        ids = self.journal.revoke_agent_credentials(self.clock(), credential_id, agent_id)
        closed = sum(listener(ids) for listener in self.on_revoked) if ids else 0
        if ids:
            log.warning("agent credentials revoked: %s (%d stream(s) closed)", ", ".join(ids),
                        closed)
        return ids, closed

    def list(self, agent_id: str = "", include_revoked: bool = False,
             include_expired: bool = False) -> list[AgentCredentialRow]:
        now = self.clock()
        return [
            row for row in self.journal.list_agent_credentials(agent_id)
            if (include_revoked or not row.revoked_s)
            and (include_expired or not row.expired(now) or row.revoked_s)
        ]
