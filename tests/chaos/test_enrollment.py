"""Sites are trust boundaries: enrollment, per-agent identity, impersonation and revocation.

Two schedulers for the module, in this process, on loopback: `mtls` gives agents their own
mutual-TLS port and signs their certificates; `tokens` has no agent CA and enrolls agents with
per-agent tokens on its one port. Agents are spoken by hand (`WireAgent`), so every forbidden
attempt is sent exactly as a thief would send it; the last test runs a real agent process that
enrolls, serves a job, renews its certificate and reconnects with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashserve.local import AgentPlan, spawn_agent, stop_process
from hashserve.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    customer_pb2,
    jobs_pb2,
)
from node_agent.credentials import new_key_and_csr
from scheduler.api.agent_identity import (
    AgentCa,
    agent_id_in_certificate,
    certificate_fingerprint,
)
from scheduler.journal.base import AgentCredentialKind, AgentCredentialRow
from scheduler.journal.sqlite import SqliteJournal
from tests.chaos.harness import (
    EMBED,
    InProcessScheduler,
    WireAgent,
    bearer,
    embed_spec,
    issue_agent_token,
    run,
    wait_serving,
)
from tests.chaos.protofuzz import message_of

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
SITE, REGION = "wire-site", "north_america"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_certs.py"), "--out", str(out), "--agent",
         "handmade"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[InProcessScheduler]:
    with InProcessScheduler(
        Path(tmp_path_factory.mktemp("enroll-mtls")), tick_s=0.2,
        tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"),
        agent_ca_cert=str(pki / "ca.pem"), agent_ca_key=str(pki / "ca.key"), agent_port=0,
    ) as s:
        yield s


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessScheduler]:
    with InProcessScheduler(Path(tmp_path_factory.mktemp("enroll-tokens")), tick_s=0.2) as s:
        yield s


def tls(pki: Path, key_pem: bytes | None = None, cert_pem: bytes | None = None
        ) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(), private_key=key_pem,
        certificate_chain=cert_pem)


def customer_address(sched: InProcessScheduler) -> str:
    return f"127.0.0.1:{sched.port}"


def agent_address(sched: InProcessScheduler) -> str:
    assert sched.app is not None
    return f"127.0.0.1:{sched.app.agent_port}"


def channel(sched: InProcessScheduler, pki: Path | None) -> grpc.aio.Channel:
    if pki is None:
        return grpc.aio.insecure_channel(customer_address(sched))
    return grpc.aio.secure_channel(customer_address(sched), tls(pki))


async def admin_call(sched: InProcessScheduler, pki: Path | None, method: str,
                     request: object) -> object:
    async with channel(sched, pki) as ch:
        stub = admin_pb2_grpc.AdminServiceStub(ch)
        return await getattr(stub, method)(request, metadata=bearer(sched.credentials.admin_key),
                                           timeout=10)


def bootstrap(sched: InProcessScheduler, pki: Path | None, agent_ids: tuple[str, ...] = (),
              uses: int = 0, site: str = SITE) -> str:
    reply = run(admin_call(sched, pki, "CreateBootstrapToken",
                           admin_pb2.CreateBootstrapTokenRequest(
                               site=site, region=REGION, agent_ids=list(agent_ids), uses=uses)))
    assert isinstance(reply, admin_pb2.CreateBootstrapTokenResponse)
    assert reply.token.startswith("hsb_")
    return reply.token


async def enroll(sched: InProcessScheduler, pki: Path | None, token: str, agent_id: str,
                 site: str = SITE, csr: bool = True) -> tuple[agent_pb2.EnrollResponse, bytes]:
    """(the reply, the agent's private key PEM)."""
    key_pem, csr_pem = new_key_and_csr(agent_id) if csr else (b"", b"")
    async with channel(sched, pki) as ch:
        reply = await agent_pb2_grpc.AgentEnrollmentStub(ch).Enroll(
            agent_pb2.EnrollRequest(agent_id=agent_id, site=site, region=REGION,
                                    csr_pem=csr_pem),
            metadata=bearer(token) if token else (), timeout=10)
    return reply, key_pem


async def enroll_code(*args: object, **kwargs: object) -> grpc.StatusCode:
    try:
        await enroll(*args, **kwargs)  # type: ignore[arg-type]
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def connect_code(agent: WireAgent) -> grpc.StatusCode:
    """How the scheduler answers this agent's stream, opened as an agent opens it (with its
    hello): OK once welcomed, else the status."""
    await agent.connect()
    try:
        msg = await agent.recv(10)
        return grpc.StatusCode.OK if msg.WhichOneof("msg") == "welcome" else grpc.StatusCode.UNKNOWN
    except grpc.aio.AioRpcError as err:
        return err.code()
    finally:
        await agent.close()


def refused(sched: InProcessScheduler) -> dict[str, float]:
    def read(app: object) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in app.metrics.agent_refused.collect():  # type: ignore[attr-defined]
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["what"]] = sample.value
        return out
    return sched.on_loop(read)


def nodes(sched: InProcessScheduler) -> set[str]:
    return sched.on_loop(lambda app: set(app.loop.core.nodes))


def test_enrollment_binds_the_certificate_and_spends_the_bootstrap_token(
    mtls: InProcessScheduler, pki: Path
) -> None:
    token = bootstrap(mtls, pki, ("enr-a",))

    async def go() -> None:
        reply, key_pem = await enroll(mtls, pki, token, "enr-a")
        assert reply.kind == agent_pb2.CREDENTIAL_KIND_CERTIFICATE
        assert (reply.agent_id, reply.site, reply.region) == ("enr-a", SITE, REGION)
        assert agent_id_in_certificate(reply.certificate_pem) == "enr-a"
        cert = x509.load_pem_x509_certificate(reply.certificate_pem)
        lifetime_s = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds()
        assert 6.9 * 86_400 < lifetime_s <= 7 * 86_400  # agent_credential_ttl_s
        # Single-use: the same token enrolls nothing more, not even the same agent.
        assert await enroll_code(mtls, pki, token, "enr-a") == grpc.StatusCode.UNAUTHENTICATED
        # The certificate opens the agents' port as that agent.
        agent = WireAgent(agent_address(mtls), "", "enr-a",
                          tls=tls(pki, key_pem, reply.certificate_pem))
        assert await connect_code(agent) == grpc.StatusCode.OK

    run(go())


def test_a_bootstrap_token_enrolls_only_its_site_and_agents_and_does_nothing_else(
    mtls: InProcessScheduler, tokens: InProcessScheduler, pki: Path
) -> None:
    scoped = bootstrap(mtls, pki, ("enr-b",), uses=5)
    as_agent = bootstrap(tokens, None, ("enr-b",))
    before = nodes(mtls)

    async def go() -> None:
        denied = grpc.StatusCode.PERMISSION_DENIED
        assert await enroll_code(mtls, pki, scoped, "enr-other") == denied
        assert await enroll_code(mtls, pki, scoped, "enr-b", site="tx-odessa") == denied
        assert await enroll_code(mtls, pki, "", "enr-b") == grpc.StatusCode.UNAUTHENTICATED
        assert await enroll_code(mtls, pki, "hsb_x_" + "A" * 30, "enr-b") == (
            grpc.StatusCode.UNAUTHENTICATED)
        # A customer key or an enrolled agent's token is not a bootstrap token.
        assert await enroll_code(mtls, pki, mtls.credentials.api_key, "enr-b") == (
            grpc.StatusCode.UNAUTHENTICATED)
        # Used as an agent's credential, a bootstrap token is refused (the token scheduler's
        # one port serves agents with bearer tokens).
        agent = WireAgent(customer_address(tokens), as_agent, "enr-b")
        assert await connect_code(agent) == denied
        # ... and it still enrolls, once: refusing it did not spend it.
        reply, _ = await enroll(tokens, None, as_agent, "enr-b", csr=False)
        assert reply.kind == agent_pb2.CREDENTIAL_KIND_TOKEN and reply.token.startswith("hsa_")

    run(go())
    assert nodes(mtls) == before
    assert refused(tokens).get("bootstrap", 0) >= 1
    assert refused(mtls).get("enrollment", 0) >= 5


def test_impersonation_is_refused_with_every_kind_of_credential(
    mtls: InProcessScheduler, tokens: InProcessScheduler, pki: Path
) -> None:
    """The bootstrap token (above), another agent's token or certificate, an expired one, a
    revoked one, none at all, one from another CA: each refused, and nothing changes."""
    token = bootstrap(mtls, pki, ("imp-a", "imp-b"), uses=2)
    token_b = issue_agent_token(tokens.journal_path, "imp-b")
    before_mtls, before_tokens = nodes(mtls), nodes(tokens)
    ca = AgentCa.from_files(str(pki / "ca.pem"), str(pki / "ca.key"))

    async def go() -> None:
        cert_b, key_b = await enroll(mtls, pki, token, "imp-b")
        denied = grpc.StatusCode.PERMISSION_DENIED
        # Another agent's token, and another agent's certificate.
        assert await connect_code(WireAgent(customer_address(tokens), token_b, "imp-a")) == denied
        as_a = WireAgent(agent_address(mtls), "", "imp-a",
                         tls=tls(pki, key_b, cert_b.certificate_pem))
        assert await connect_code(as_a) == denied
        # Its own id, but another site or region than the credential binds.
        at_other_site = WireAgent(customer_address(tokens), token_b, "imp-b", site="tx-odessa")
        assert await connect_code(at_other_site) == denied
        elsewhere = WireAgent(agent_address(mtls), "", "imp-b", region="europe",
                              tls=tls(pki, key_b, cert_b.certificate_pem))
        assert await connect_code(elsewhere) == denied
        # No certificate at all, and one from another CA or never enrolled: the handshake (or
        # the journal) refuses it.
        bare = WireAgent(agent_address(mtls), mtls.credentials.agent_token, "imp-a",
                         tls=tls(pki))
        assert await connect_code(bare) == grpc.StatusCode.UNAVAILABLE
        handmade = WireAgent(agent_address(mtls), "", "handmade", tls=tls(
            pki, (pki / "agents/handmade.key").read_bytes(),
            (pki / "agents/handmade.pem").read_bytes()))
        assert await connect_code(handmade) == grpc.StatusCode.UNAUTHENTICATED
        # An expired certificate, bound in the journal all the same: the handshake refuses it.
        key_pem, csr_pem = new_key_and_csr("imp-old")
        now = time.time()
        old_pem = ca.sign(x509.load_pem_x509_csr(csr_pem), "imp-old", SITE, now - 7200,
                          now - 3600)
        journal = SqliteJournal(mtls.journal_path)
        try:
            journal.add_agent_credential(AgentCredentialRow(
                "crt-old", AgentCredentialKind.CERTIFICATE, certificate_fingerprint(old_pem),
                "imp-old", SITE, REGION, now - 7200, now - 3600))
        finally:
            journal.close()
        expired = WireAgent(agent_address(mtls), "", "imp-old",
                            tls=tls(pki, key_pem, old_pem))
        assert await connect_code(expired) == grpc.StatusCode.UNAVAILABLE
        # A revoked token: the same agent, its own id and site, after the admin revoked it.
        await admin_call(tokens, None, "RevokeAgentCredential",
                         admin_pb2.RevokeAgentCredentialRequest(agent_id="imp-b"))
        revoked = WireAgent(customer_address(tokens), token_b, "imp-b")
        assert await connect_code(revoked) == grpc.StatusCode.UNAUTHENTICATED

    run(go())
    assert nodes(mtls) == before_mtls and nodes(tokens) == before_tokens
    counts = refused(tokens)
    assert counts.get("identity", 0) >= 2 and counts.get("credential", 0) >= 1
    assert refused(mtls).get("identity", 0) >= 2


def test_an_expired_token_is_refused(tokens: InProcessScheduler) -> None:
    journal = SqliteJournal(tokens.journal_path)
    try:
        from scheduler.api.agent_identity import AgentIdentities

        issued = AgentIdentities(journal, lambda: time.time() - 10_000, {}, frozenset()
                                 ).issue_token("exp-a", SITE, REGION, ttl_s=60)
    finally:
        journal.close()
    code = run(connect_code(WireAgent(customer_address(tokens), issued.token, "exp-a")))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_revocation_closes_the_open_stream_at_once_and_is_listed_with_its_last_use(
    mtls: InProcessScheduler, pki: Path
) -> None:
    token = bootstrap(mtls, pki, ("rev-a",))

    async def go() -> None:
        reply, key_pem = await enroll(mtls, pki, token, "rev-a")
        agent = WireAgent(agent_address(mtls), "", "rev-a",
                          tls=tls(pki, key_pem, reply.certificate_pem))
        await agent.connect()
        assert (await agent.recv(10)).WhichOneof("msg") == "welcome"
        agent.beat(0.3)
        await asyncio.sleep(0.5)
        started = time.monotonic()
        revoked = await admin_call(mtls, pki, "RevokeAgentCredential",
                                   admin_pb2.RevokeAgentCredentialRequest(agent_id="rev-a"))
        assert isinstance(revoked, admin_pb2.RevokeAgentCredentialResponse)
        assert list(revoked.revoked) == [reply.credential_id] and revoked.streams_closed == 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while True:
                await agent.recv(5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert time.monotonic() - started < 2.0
        await agent.close()
        again = WireAgent(agent_address(mtls), "", "rev-a",
                          tls=tls(pki, key_pem, reply.certificate_pem))
        assert await connect_code(again) == grpc.StatusCode.UNAUTHENTICATED
        listed = await admin_call(mtls, pki, "ListAgentCredentials",
                                  admin_pb2.ListAgentCredentialsRequest(agent_id="rev-a",
                                                                        include_revoked=True))
        assert isinstance(listed, admin_pb2.ListAgentCredentialsResponse)
        (row,) = listed.credentials
        assert row.credential_id == reply.credential_id and row.HasField("revoked_at")
        assert row.HasField("last_used_at") and row.last_used_at.seconds <= row.revoked_at.seconds
        live = await admin_call(mtls, pki, "ListAgentCredentials",
                                admin_pb2.ListAgentCredentialsRequest(agent_id="rev-a"))
        assert isinstance(live, admin_pb2.ListAgentCredentialsResponse)
        assert not live.credentials

    run(go())
    assert "rev-a" not in sched_sessions(mtls)


def sched_sessions(sched: InProcessScheduler) -> set[str]:
    return sched.on_loop(lambda app: set(app.loop.sessions))


FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
CLEAR = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
         grpc.StatusCode.PERMISSION_DENIED}


def test_fuzzed_enrollment_gets_clear_answers_and_issues_only_what_the_token_allows(
    tokens: InProcessScheduler,
) -> None:
    wide = bootstrap(tokens, None, uses=10_000)  # any agent id at wire-site
    other_site = bootstrap(tokens, None, site="tx-odessa")
    seen: list[tuple[grpc.StatusCode, str, str]] = []

    @FUZZ
    @given(
        request=message_of(agent_pb2.EnrollRequest.DESCRIPTOR, hints={
            "agent_id": st.one_of(st.from_regex(r"\Afz-[a-z0-9]{1,12}\Z"), st.text(max_size=200)),
            "site": st.sampled_from([SITE, SITE, SITE, "tx-odessa", "", "../x", SITE + "\x00"]),
            "region": st.sampled_from([REGION, REGION, "", "europe", "mars"]),
            "csr_pem": st.one_of(st.just(b""), st.binary(max_size=300),
                                 st.just(new_key_and_csr("fz-x")[1])),
        }),
        which=st.sampled_from(["wide", "wide", "wide", "other", "none", "garbage", "customer"]),
    )
    def one(request: agent_pb2.EnrollRequest, which: str) -> None:
        token = {"wide": wide, "other": other_site, "none": "", "garbage": "hsb_" + "z" * 40,
                 "customer": tokens.credentials.api_key}[which]

        async def go() -> tuple[grpc.StatusCode, str]:
            async with channel(tokens, None) as ch:
                try:
                    reply = await agent_pb2_grpc.AgentEnrollmentStub(ch).Enroll(
                        request, metadata=bearer(token) if token else (), timeout=10)
                except grpc.aio.AioRpcError as err:
                    assert err.details(), "a refusal says why"
                    return err.code(), ""
                return grpc.StatusCode.OK, f"{reply.agent_id}|{reply.site}|{reply.kind}"

        code, bound = run(go())
        assert code in CLEAR or code == grpc.StatusCode.FAILED_PRECONDITION, code
        if code == grpc.StatusCode.OK:
            # Only the wide token enrolls, only at its site, as the agent asked, with a token
            # (this scheduler has no CA; a CSR is FAILED_PRECONDITION).
            assert which == "wide" and request.site == SITE and not request.csr_pem
            assert bound == f"{request.agent_id}|{SITE}|{agent_pb2.CREDENTIAL_KIND_TOKEN}"
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            assert which == "wide" and request.csr_pem
        seen.append((code, which, request.agent_id))

    one()
    ok = [s for s in seen if s[0] == grpc.StatusCode.OK]
    assert ok, "the fuzz never reached a successful enrollment"
    assert {code for code, _, _ in seen} - {grpc.StatusCode.OK}, "nothing was refused"
    # Every credential issued is one of the OK answers (the fuzz ran against a live journal).
    journal = SqliteJournal(tokens.journal_path)
    try:
        issued = [r for r in journal.list_agent_credentials()
                  if r.issued_by == f"bt-{wide.split('_')[1]}"]
    finally:
        journal.close()
    assert len(issued) == len(ok)
    run(wait_serving(customer_address(tokens), 5.0))  # and the scheduler still serves


def test_a_real_agent_enrolls_serves_renews_and_reconnects(
    tmp_path: Path, pki: Path
) -> None:
    """`hashserve agent` with only a bootstrap token: it enrolls on the customers' port, runs a
    job on the agents' mTLS port, renews at two thirds of a 15 s certificate, and reconnects with
    the new one; a restart uses the stored certificate (the single-use token is spent)."""
    with InProcessScheduler(
        tmp_path / "sched", tick_s=0.2, tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"), agent_ca_cert=str(pki / "ca.pem"),
        agent_ca_key=str(pki / "ca.key"), agent_port=0, agent_credential_ttl_s=15.0,
    ) as sched:
        token_file = tmp_path / "bootstrap-token"
        token_file.write_text(bootstrap(sched, pki, ("real-a",)))
        state = tmp_path / "state"
        env = {
            "HASHSERVE_AGENT_BOOTSTRAP_TOKEN_FILE": str(token_file),
            "HASHSERVE_AGENT_STATE_DIR": str(state),
            "HASHSERVE_AGENT_ENROLL_ADDRESS": customer_address(sched),
            "HASHSERVE_AGENT_TLS_CA": str(pki / "ca.pem"),
        }
        plan = AgentPlan("real-a", SITE, REGION, backends=(f"{EMBED}=onnx",))
        proc = spawn_agent(plan, agent_address(sched), "", tmp_path / "agent.log",
                           extra_env=env)
        try:
            first = _wait_for_credential(sched, "real-a", lambda ids: len(ids) >= 1)
            assert (state / "agent.pem").exists()
            assert (state / "agent.key").stat().st_mode & 0o077 == 0  # only the agent reads it
            _run_one_job(sched, pki)
            # Renewed at ~10 s: a second certificate, and the agent back on it.
            ids = _wait_for_credential(sched, "real-a", lambda ids: len(ids) >= 2, 30)
            assert first[0] in ids
            _wait_connected(sched, "real-a")
            _run_one_job(sched, pki)
        finally:
            stop_process(proc)
        log = (tmp_path / "agent.log").read_text()
        assert "enrolled as real-a" in log and "renewed" in log, log[-3000:]
        # Restarted, it uses what it stored: the spent bootstrap token is not needed.
        proc = spawn_agent(plan, agent_address(sched), "", tmp_path / "agent2.log",
                           extra_env=env)
        try:
            _wait_connected(sched, "real-a")
        finally:
            stop_process(proc)
        assert "enrolled as" not in (tmp_path / "agent2.log").read_text()


def _wait_for_credential(sched: InProcessScheduler, agent_id: str, enough: object,
                         timeout_s: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        journal = SqliteJournal(sched.journal_path)
        try:
            ids = [r.credential_id for r in journal.list_agent_credentials(agent_id)]
        finally:
            journal.close()
        if enough(ids):  # type: ignore[operator]
            return ids
        assert time.monotonic() < deadline, f"credentials of {agent_id}: {ids}"
        time.sleep(0.3)


def _wait_connected(sched: InProcessScheduler, agent_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while agent_id not in sched_sessions(sched):
        assert time.monotonic() < deadline, f"{agent_id} never connected"
        time.sleep(0.2)


def _run_one_job(sched: InProcessScheduler, pki: Path) -> None:
    async def go() -> None:
        async with grpc.aio.secure_channel(customer_address(sched), tls(pki)) as ch:
            from hashserve.v1 import customer_pb2_grpc

            stub = customer_pb2_grpc.CustomerServiceStub(ch)
            key = bearer(sched.credentials.api_key)
            job = await stub.SubmitJob(customer_pb2.SubmitJobRequest(spec=embed_spec("hi")),
                                       metadata=key, timeout=10)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                got = await stub.GetJob(customer_pb2.GetJobRequest(job_id=job.job.id),
                                        metadata=key, timeout=10)
                if got.state == jobs_pb2.JOB_STATE_SUCCEEDED:
                    return
                await asyncio.sleep(0.2)
            raise AssertionError(f"job never succeeded: {got}")

    run(go())

