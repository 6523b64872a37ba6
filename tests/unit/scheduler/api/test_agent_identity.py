"""Agent credentials on a real SQLite journal with a fixed clock: what each credential allows."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from node_agent.credentials import new_key_and_csr
from scheduler.api.agent_identity import (
    AgentCa,
    AgentIdentities,
    AgentIdentity,
    AgentRefused,
    agent_id_in_certificate,
    certificate_fingerprint,
    is_loopback_host,
    is_loopback_peer,
    parse_csr,
)
from scheduler.api.auth import hash_secret
from scheduler.control.agent_events import AgentRefusal
from scheduler.core.fleet import Fleet
from scheduler.fleet import default_fleet_path, load_fleet
from scheduler.journal import SqliteJournal
from scheduler.journal.base import ANY_AGENT, AgentCredentialKind
from scheduler.runtime.app import agent_identities
from scheduler.settings import SchedulerSettings

T0_S = 1_800_000_000.0
SITE, REGION = "tx-odessa", "north_america"


class Clock:
    def __init__(self) -> None:
        self.now_s = T0_S

    def __call__(self) -> float:
        return self.now_s


def make_ca() -> AgentCa:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test agent CA")])
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return AgentCa(cert.public_bytes(serialization.Encoding.PEM),
                   key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))


@pytest.fixture
def fleet() -> Fleet:
    return load_fleet(default_fleet_path())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ids(tmp_path: Path, clock: Clock, fleet: Fleet) -> Iterator[AgentIdentities]:
    journal = SqliteJournal(tmp_path / "journal.db")
    yield AgentIdentities(journal, clock, {s.name: s.region for s in fleet.sites},
                          frozenset({"north_america", "europe"}), make_ca(), 3600.0)
    journal.close()


def settings_of(**values: object) -> SchedulerSettings:
    return SchedulerSettings.model_validate(values)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def code_of(err: pytest.ExceptionInfo[AgentRefused]) -> grpc.StatusCode:
    return err.value.code


def test_a_bootstrap_token_enrolls_its_site_only_and_once(ids: AgentIdentities) -> None:
    boot = ids.issue_bootstrap(SITE, agent_ids=("a1",))
    assert boot.row.region == REGION  # the fleet's region for the site
    assert boot.token.startswith("hsb_") and boot.row.uses_left == 1
    with pytest.raises(AgentRefused) as err:
        ids.enroll(bearer(boot.token), "a2", SITE, "", b"")  # not in its list
    assert code_of(err) is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(AgentRefused) as err:
        ids.enroll(bearer(boot.token), "a1", "de-ruhr", "", b"")  # another site
    assert code_of(err) is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(AgentRefused) as err:
        ids.enroll(bearer(boot.token), "a1", SITE, "", b"not a csr")  # a bad request...
    assert code_of(err) is grpc.StatusCode.INVALID_ARGUMENT
    issued = ids.enroll(bearer(boot.token), "a1", SITE, "", b"")  # ... did not spend it
    assert issued.row.kind is AgentCredentialKind.TOKEN
    assert (issued.row.agent_id, issued.row.site, issued.row.region) == ("a1", SITE, REGION)
    assert issued.row.issued_by == boot.row.credential_id
    with pytest.raises(AgentRefused, match="used up"):
        ids.enroll(bearer(boot.token), "a1", SITE, "", b"")


def test_a_bootstrap_token_expires_and_can_do_nothing_but_enroll(
    ids: AgentIdentities, clock: Clock
) -> None:
    boot = ids.issue_bootstrap(SITE, uses=10, ttl_s=60)
    with pytest.raises(AgentRefused) as err:
        ids.from_token(bearer(boot.token))
    assert code_of(err) is grpc.StatusCode.PERMISSION_DENIED
    assert err.value.what is AgentRefusal.BOOTSTRAP
    clock.now_s += 61
    with pytest.raises(AgentRefused, match="expired"):
        ids.enroll(bearer(boot.token), "a1", SITE, "", b"")


def test_limits_on_what_a_bootstrap_token_may_be(ids: AgentIdentities) -> None:
    for kwargs in ({"ttl_s": 8 * 86_400.0}, {"ttl_s": -1.0}, {"ttl_s": float("nan")},
                   {"uses": 10_001}, {"uses": -1}, {"agent_ids": ("../x",)}):
        with pytest.raises(AgentRefused) as err:
            ids.issue_bootstrap(SITE, **kwargs)  # type: ignore[arg-type]
        assert code_of(err) is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(AgentRefused, match="is in region north_america"):
        ids.issue_bootstrap(SITE, region="europe")
    with pytest.raises(AgentRefused, match="give its region"):
        ids.issue_bootstrap("not-in-the-fleet")
    assert ids.issue_bootstrap("not-in-the-fleet", region="europe").row.region == "europe"
    with pytest.raises(AgentRefused, match="unknown"):
        ids.issue_bootstrap("not-in-the-fleet", region="mars")


def test_a_certificate_names_its_agent_and_is_found_by_its_fingerprint(
    ids: AgentIdentities,
) -> None:
    boot = ids.issue_bootstrap(SITE)
    _, csr = new_key_and_csr("someone-else")  # the CSR's subject is ignored
    issued = ids.enroll(bearer(boot.token), "a1", SITE, REGION, csr)
    assert issued.row.kind is AgentCredentialKind.CERTIFICATE
    assert agent_id_in_certificate(issued.certificate_pem) == "a1"
    assert issued.row.secret_hash == certificate_fingerprint(issued.certificate_pem)
    identity = ids.from_certificate(issued.certificate_pem)
    assert (identity.agent_id, identity.site, identity.region) == ("a1", SITE, REGION)
    # Through a call: the certificate wins over any token in the metadata.
    via_call = ids.from_call({"x509_pem_cert": [issued.certificate_pem]}, bearer("hsa_x"),
                             "ipv4:10.0.0.7:4242")
    assert via_call == identity


def test_renewal_keeps_the_binding_and_only_for_its_own_identity(ids: AgentIdentities) -> None:
    token = ids.issue_token("a1", SITE)
    identity = ids.from_token(bearer(token.token))
    renewed = ids.renew(identity, "a1", SITE, REGION, b"")
    assert renewed.row.credential_id != token.row.credential_id
    assert (renewed.row.agent_id, renewed.row.site) == ("a1", SITE)
    assert renewed.row.issued_by == token.row.credential_id
    with pytest.raises(AgentRefused) as err:
        ids.renew(identity, "a2", SITE, REGION, b"")
    assert code_of(err) is grpc.StatusCode.PERMISSION_DENIED


def test_a_hello_must_match_the_binding(ids: AgentIdentities) -> None:
    identity = ids.from_token(bearer(ids.issue_token("a1", SITE).token))
    AgentIdentities.check_hello(identity, "a1", SITE, REGION)
    for claim in (("a2", SITE, REGION), ("a1", "de-ruhr", REGION), ("a1", SITE, "europe")):
        with pytest.raises(AgentRefused) as err:
            AgentIdentities.check_hello(identity, *claim)
        assert err.value.what is AgentRefusal.IDENTITY
    anyone = AgentIdentity("tok-x", AgentCredentialKind.TOKEN, ANY_AGENT, ANY_AGENT, ANY_AGENT,
                           0.0)
    AgentIdentities.check_hello(anyone, "whoever", "wherever", "europe")


def test_revocation_and_expiry_refuse_and_tell_the_streams(
    ids: AgentIdentities, clock: Clock
) -> None:
    told: list[list[str]] = []

    def close_streams(revoked: Sequence[str]) -> int:
        told.append(list(revoked))
        return 1

    ids.on_revoked.append(close_streams)
    first = ids.issue_token("a1", SITE)
    second = ids.issue_token("a1", SITE)
    other = ids.issue_token("a2", SITE, ttl_s=30)
    ids.from_token(bearer(first.token))  # used once: its last use is kept
    revoked, closed = ids.revoke(agent_id="a1")
    assert sorted(revoked) == sorted([first.row.credential_id, second.row.credential_id])
    assert closed == 1 and told == [revoked]
    with pytest.raises(AgentRefused, match="revoked"):
        ids.from_token(bearer(first.token))
    assert ids.revoke(agent_id="a1") == ([], 0)  # nothing live left
    listed = {r.credential_id: r for r in ids.list(include_revoked=True)}
    assert listed[first.row.credential_id].last_used_s == T0_S
    assert listed[first.row.credential_id].revoked_s == T0_S
    assert [r.credential_id for r in ids.list()] == [other.row.credential_id]
    clock.now_s += 31
    with pytest.raises(AgentRefused, match="expired"):
        ids.from_token(bearer(other.token))
    assert ids.list() == [] and len(ids.list(include_expired=True)) == 1


def test_the_any_agent_token_is_for_loopback_only(tmp_path: Path, fleet: Fleet) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    try:
        token = "hsa_" + "x" * 32
        regions = ["north_america"]
        with pytest.raises(ValueError, match="loopback"):
            agent_identities(settings_of(host="0.0.0.0", agent_token=token), journal,
                             fleet, regions)
        ids = agent_identities(settings_of(host="127.0.0.1", agent_token=token), journal,
                               fleet, regions)
        assert ids.from_call({}, bearer(token), "ipv4:127.0.0.1:5000").any_agent
        assert ids.from_call({}, bearer(token), "ipv6:[::1]:5000").any_agent
        with pytest.raises(AgentRefused, match="loopback"):
            ids.from_call({}, bearer(token), "ipv4:10.1.2.3:5000")
        assert journal.find_agent_credential(hash_secret(token)) is not None
    finally:
        journal.close()


def test_an_own_agent_port_needs_mutual_tls(tmp_path: Path, fleet: Fleet) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    try:
        with pytest.raises(ValueError, match="mutual TLS"):
            agent_identities(settings_of(agent_port=50052), journal, fleet, [])
        with pytest.raises(ValueError, match="go together"):
            agent_identities(settings_of(agent_ca_cert="ca.pem"), journal, fleet, [])
        with pytest.raises(ValueError, match="bootstrap_site"):
            agent_identities(settings_of(bootstrap_token="hsb_a_" + "b" * 30), journal,
                             fleet, [])
    finally:
        journal.close()


def test_a_bootstrap_token_from_the_environment_is_registered_once(
    tmp_path: Path, fleet: Fleet
) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    try:
        settings = settings_of(bootstrap_token="hsb_abc_" + "s" * 30, bootstrap_site=SITE,
                                     bootstrap_uses=2, bootstrap_ttl_s=600)
        ids = agent_identities(settings, journal, fleet, [])
        ids.enroll(bearer(settings.bootstrap_token or ""), "a1", SITE, "", b"")
        agent_identities(settings, journal, fleet, [])  # a restart does not refill it
        ids.enroll(bearer(settings.bootstrap_token or ""), "a2", SITE, "", b"")
        with pytest.raises(AgentRefused, match="used up"):
            ids.enroll(bearer(settings.bootstrap_token or ""), "a3", SITE, "", b"")
        with pytest.raises(ValueError, match="hsb_"):
            agent_identities(settings_of(bootstrap_token="short", bootstrap_site=SITE),
                             journal, fleet, [])
    finally:
        journal.close()


def test_certificate_requests_are_checked() -> None:
    _, good = new_key_and_csr("a1")
    assert parse_csr(good).subject
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a1")]))
           .sign(weak, hashes.SHA256()))
    for bad, why in ((csr.public_bytes(serialization.Encoding.PEM), "2048"),
                     (b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                      b"-----END CERTIFICATE REQUEST-----\n", "not a PEM"),
                     (b"x" * 20_000, "at most")):
        with pytest.raises(AgentRefused, match=why):
            parse_csr(bad)


@pytest.mark.parametrize(("peer", "loopback"), [
    ("ipv4:127.0.0.1:5000", True), ("ipv4:127.8.9.1:1", True), ("ipv6:[::1]:5000", True),
    ("unix:/run/hashserve.sock", True), ("ipv4:10.0.0.1:5000", False),
    ("ipv6:[2001:db8::1]:5000", False), ("ipv6:[::ffff:10.0.0.1]:1", False), ("", False),
    ("garbage", False), ("ipv4:localhost:1", False),
])
def test_loopback_peers(peer: str, loopback: bool) -> None:
    assert is_loopback_peer(peer) is loopback


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("localhost")
    assert is_loopback_host("::1")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("10.0.0.2")
    assert not is_loopback_host("scheduler.example.com")
