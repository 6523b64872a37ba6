"""The agent-credential commands of the operators' CLI: `agent-token`, `bootstrap-token`,
`new-bootstrap-token`, `agent-credentials` and `revoke-agent`.

Their helpers are pure; the commands themselves run against a stand-in AdminService on loopback
(a plain gRPC server with canned answers), so what is sent and what is printed are both checked
without a scheduler.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from rich.console import Console
from typer.testing import CliRunner

from hashserve import admin_cli
from hashserve.admin_cli import new_bootstrap_token, revoke_target
from hashserve.admin_client import to_timestamp
from hashserve.admin_views import (
    agent_credential_records,
    agent_credentials_table,
    credential_kind,
    credential_scope,
)
from hashserve.cli import app
from hashserve.v1 import admin_pb2, admin_pb2_grpc, agent_pb2
from scheduler.api.agent_identity import AgentIdentities
from scheduler.api.auth import hash_secret
from scheduler.journal.base import AgentCredentialKind
from scheduler.journal.sqlite import SqliteJournal

runner = CliRunner()
KEY = "hsk_0123456789ab_" + "s" * 32
NOW_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY_S = 86_400.0


@pytest.fixture(autouse=True)
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run where no var/hashserve/credentials.env is, with no HASHSERVE_* in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("HASHSERVE_ADMIN_KEY", "HASHSERVE_SCHEDULER", "HASHSERVE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _cert(**values: object) -> admin_pb2.AgentCredential:
    fields: dict[str, object] = {
        "credential_id": "crt-1", "kind": agent_pb2.CREDENTIAL_KIND_CERTIFICATE,
        "agent_id": "tx-west-1-gpu-07", "site": "tx-west-1", "region": "north_america",
        "uses_left": -1, "issued_at": to_timestamp(NOW_S - DAY_S),
        "expires_at": to_timestamp(NOW_S + 6 * DAY_S), "last_used_at": to_timestamp(NOW_S - 60),
        "issued_by": "bt-abc",
    }
    fields.update(values)
    return admin_pb2.AgentCredential(**fields)  # type: ignore[arg-type]


def _bootstrap(**values: object) -> admin_pb2.AgentCredential:
    fields: dict[str, object] = {
        "credential_id": "bt-abc", "kind": agent_pb2.CREDENTIAL_KIND_BOOTSTRAP,
        "site": "tx-west-1", "region": "north_america", "uses_left": 2,
        "issued_at": to_timestamp(NOW_S - 600), "expires_at": to_timestamp(NOW_S + 3000),
        "issued_by": "admin key 0123456789ab",
    }
    fields.update(values)
    return admin_pb2.AgentCredential(**fields)  # type: ignore[arg-type]


# ----- pure helpers -----------------------------------------------------------------------------


def test_new_bootstrap_token_is_one_the_scheduler_registers(tmp_path: Path) -> None:
    token = new_bootstrap_token()
    assert re.fullmatch(r"hsb_[0-9a-f]{12}_[A-Za-z0-9_-]{32}", token), token
    assert new_bootstrap_token() != token
    journal = SqliteJournal(tmp_path / "journal.db")
    try:
        identities = AgentIdentities(journal, lambda: NOW_S, {"tx-west-1": "north_america"},
                                     frozenset({"north_america"}))
        # What the scheduler does with HASHSERVE_BOOTSTRAP_TOKEN at start-up; it raises on a
        # token of the wrong shape.
        identities.ensure_bootstrap(token, "tx-west-1", "", ("agent-a",), 3600.0, 2)
        row = journal.find_agent_credential(hash_secret(token))
    finally:
        journal.close()
    assert row is not None and row.kind is AgentCredentialKind.BOOTSTRAP
    assert row.credential_id == f"bt-{token.split('_')[1]}"
    assert (row.site, row.region, row.agent_ids, row.uses_left) == (
        "tx-west-1", "north_america", ("agent-a",), 2,
    )


def test_revoke_target_takes_exactly_one() -> None:
    assert revoke_target("agent-a", None) == ("", "agent-a")
    assert revoke_target(None, "crt-1") == ("crt-1", "")
    # A pasted bootstrap token stands for its credential id.
    assert revoke_target(None, "hsb_0123456789ab_" + "x" * 32) == ("bt-0123456789ab", "")
    for agent_id, credential in ((None, None), ("agent-a", "crt-1"), ("", "")):
        with pytest.raises(ValueError, match="one of them"):
            revoke_target(agent_id, credential)


def test_kind_names_and_scope() -> None:
    assert credential_kind(agent_pb2.CREDENTIAL_KIND_TOKEN) == "token"
    assert credential_kind(agent_pb2.CREDENTIAL_KIND_CERTIFICATE) == "certificate"
    assert credential_kind(agent_pb2.CREDENTIAL_KIND_BOOTSTRAP) == "bootstrap"
    assert credential_kind(99) == "unknown"
    assert credential_scope(_cert()) == "-"
    assert credential_scope(_bootstrap()) == "any agent id; 2 uses left"
    one = _bootstrap(agent_ids=["agent-a", "agent-b"], uses_left=1)
    assert credential_scope(one) == "agent-a, agent-b; 1 use left"


def test_records_for_json_and_csv() -> None:
    revoked = _cert(revoked_at=to_timestamp(NOW_S - 30))
    cert, boot = agent_credential_records([revoked, _bootstrap(agent_ids=["a", "b"])])
    assert cert["kind"] == "certificate" and cert["uses_left"] is None
    assert cert["revoked_at"] == "2025-12-31 23:59:30Z"
    assert cert["last_used_at"] == "2025-12-31 23:59:00Z"  # a revoked one keeps its last use
    assert boot["kind"] == "bootstrap" and boot["uses_left"] == 2
    assert boot["agent_ids"] == ["a", "b"] and boot["agent_id"] == ""
    assert boot["revoked_at"] == "" and boot["last_used_at"] == ""
    (flat,) = agent_credential_records([_bootstrap(agent_ids=["a", "b"])], flat=True)
    assert flat["agent_ids"] == "a b"
    json.dumps([cert, boot])  # plain values only


def test_table_shows_revoked_with_last_use_and_marks_expired() -> None:
    creds = [
        _cert(revoked_at=to_timestamp(NOW_S - 30)),
        _cert(credential_id="tok-2", kind=agent_pb2.CREDENTIAL_KIND_TOKEN,
              expires_at=to_timestamp(NOW_S - 1), last_used_at=None),
        _bootstrap(agent_ids=["agent-a"]),
    ]
    console = Console(width=300, record=True)
    console.print(agent_credentials_table(creds, NOW_S))
    lines = {ln.split("│")[1].strip(): ln for ln in console.export_text().splitlines()
             if ln.count("│") > 3}
    assert "2025-12-31 23:59:30Z" in lines["crt-1"]  # revoked at
    assert "2025-12-31 23:59:00Z" in lines["crt-1"]  # ... and last used
    assert "(expired)" in lines["tok-2"] and "never" in lines["tok-2"]
    assert "agent-a; 2 uses left" in lines["bt-abc"]
    assert "admin key 0123456789ab" in lines["bt-abc"]


# ----- the commands, against a stand-in AdminService --------------------------------------------


@dataclass
class FakeAdmin(admin_pb2_grpc.AdminServiceServicer):
    """Canned answers; remembers every request and the key it came with."""

    credentials: list[admin_pb2.AgentCredential] = field(default_factory=list)
    requests: list[object] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def _seen(self, request: object, context: grpc.ServicerContext) -> None:
        self.requests.append(request)
        self.keys.append(dict(context.invocation_metadata()).get("authorization", ""))

    def CreateAgentToken(self, request: admin_pb2.CreateAgentTokenRequest,
                         context: grpc.ServicerContext) -> admin_pb2.CreateAgentTokenResponse:
        self._seen(request, context)
        self.credentials.append(_cert(credential_id="tok-9", agent_id=request.agent_id,
                                      kind=agent_pb2.CREDENTIAL_KIND_TOKEN))
        return admin_pb2.CreateAgentTokenResponse(
            token="hsa_secret", credential_id="tok-9", expires_at=to_timestamp(NOW_S + DAY_S))

    def CreateBootstrapToken(
        self, request: admin_pb2.CreateBootstrapTokenRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreateBootstrapTokenResponse:
        self._seen(request, context)
        self.credentials.append(_bootstrap(credential_id="bt-9", agent_ids=request.agent_ids,
                                           uses_left=request.uses or 1))
        return admin_pb2.CreateBootstrapTokenResponse(
            token="hsb_000000000009_secret", credential_id="bt-9",
            expires_at=to_timestamp(NOW_S + 3600))

    def ListAgentCredentials(
        self, request: admin_pb2.ListAgentCredentialsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListAgentCredentialsResponse:
        self._seen(request, context)
        return admin_pb2.ListAgentCredentialsResponse(credentials=[
            c for c in self.credentials if not request.agent_id or c.agent_id == request.agent_id
        ])

    def RevokeAgentCredential(
        self, request: admin_pb2.RevokeAgentCredentialRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RevokeAgentCredentialResponse:
        self._seen(request, context)
        ids = [c.credential_id for c in self.credentials
               if request.credential_id == c.credential_id
               or (request.agent_id and request.agent_id == c.agent_id)]
        if not ids:
            context.abort(grpc.StatusCode.NOT_FOUND, "no live credential for 'nobody'")
        return admin_pb2.RevokeAgentCredentialResponse(revoked=ids, streams_closed=1)


@pytest.fixture
def fake() -> Iterator[tuple[FakeAdmin, str]]:
    servicer = FakeAdmin(credentials=[_cert(), _bootstrap()])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def invoke(address: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args, "--scheduler", address, "--admin-key", KEY])
    return result.exit_code, result.stdout, result.stderr


def test_agent_token_sends_the_binding_and_prints_the_token(fake: tuple[FakeAdmin, str]) -> None:
    servicer, address = fake
    code, out, err = invoke(address, "admin", "agent-token", "edge-1", "--site", "tx-west-1",
                            "--ttl-s", "600")
    assert code == 0, err
    assert out.strip() == "hsa_secret"  # stdout is the token alone
    assert "tok-9" in err and "revoke-agent --credential tok-9" in err
    request = servicer.requests[0]
    assert isinstance(request, admin_pb2.CreateAgentTokenRequest)
    assert (request.agent_id, request.site, request.region, request.ttl_s) == (
        "edge-1", "tx-west-1", "", 600.0,
    )
    assert servicer.keys[0] == f"Bearer {KEY}"
    code, out, _ = invoke(address, "admin", "agent-token", "edge-2", "--site", "tx-west-1",
                          "--json")
    d = json.loads(out.strip().splitlines()[-1])
    # The region is the one the scheduler bound (the fleet's), not the empty one asked for.
    assert d == {"agent_id": "edge-2", "site": "tx-west-1", "region": "north_america",
                 "credential_id": "tok-9", "expires_at": "2026-01-02 00:00:00Z",
                 "token": "hsa_secret"}


def test_bootstrap_token_scope_and_json(fake: tuple[FakeAdmin, str]) -> None:
    servicer, address = fake
    code, out, err = invoke(address, "admin", "bootstrap-token", "--site", "tx-west-1",
                            "--agent-id", "agent-a", "--agent-id", "agent-b", "--uses", "2",
                            "--json")
    assert code == 0, err
    request = servicer.requests[0]
    assert isinstance(request, admin_pb2.CreateBootstrapTokenRequest)
    assert list(request.agent_ids) == ["agent-a", "agent-b"] and request.uses == 2
    d = json.loads(out.strip().splitlines()[-1])
    assert d == {"credential_id": "bt-9", "site": "tx-west-1", "region": "north_america",
                 "agent_ids": ["agent-a", "agent-b"], "uses": 2,
                 "expires_at": "2026-01-01 01:00:00Z", "token": "hsb_000000000009_secret"}


@pytest.mark.parametrize(("args", "words"), [
    (["agent-token", "edge-1"], "--site"),
    (["agent-token", "edge-1", "--site", "s", "--ttl-s", "-1"], "--ttl-s"),
    (["bootstrap-token", "--site", "s", "--ttl-s", "nan"], "--ttl-s"),
    (["bootstrap-token", "--site", "s", "--uses", "-1"], "--uses"),
    (["revoke-agent"], "one of them"),
    (["revoke-agent", "agent-a", "--credential", "crt-1"], "one of them"),
])
def test_usage_errors_exit_2(args: list[str], words: str) -> None:
    result = runner.invoke(app, ["admin", *args, "--admin-key", KEY])
    assert result.exit_code == 2, result.output
    assert words in result.output


def test_agent_credentials_table_json_and_csv(
    fake: tuple[FakeAdmin, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    servicer, address = fake
    # The table is wide: print it on a wide console (it writes to the runner's stdout).
    monkeypatch.setattr(admin_cli, "out", Console(width=300))
    code, out, err = invoke(address, "admin", "agent-credentials", "--agent-id",
                            "tx-west-1-gpu-07", "--revoked", "--expired")
    assert code == 0, err
    rows = [ln.split("│")[1].strip() for ln in out.splitlines() if ln.startswith("│")]
    assert rows == ["crt-1"]  # only that agent's
    request = servicer.requests[0]
    assert isinstance(request, admin_pb2.ListAgentCredentialsRequest)
    assert (request.agent_id, request.include_revoked, request.include_expired) == (
        "tx-west-1-gpu-07", True, True,
    )
    _, out, _ = invoke(address, "admin", "agent-credentials", "--json")
    ids = [c["credential_id"] for c in json.loads(out.strip().splitlines()[-1])["credentials"]]
    assert ids == ["crt-1", "bt-abc"]
    _, out, _ = invoke(address, "admin", "agent-credentials", "--csv")
    header, *rows = out.strip().splitlines()
    assert header.startswith("credential_id,kind,agent_id,site,region,agent_ids,uses_left")
    assert len(rows) == 2 and rows[1].startswith("bt-abc,bootstrap,,tx-west-1")


def test_revoke_agent_prints_what_was_revoked(fake: tuple[FakeAdmin, str]) -> None:
    servicer, address = fake
    code, out, err = invoke(address, "admin", "revoke-agent", "tx-west-1-gpu-07")
    assert code == 0, err
    assert "revoked crt-1" in out and "1 open stream closed" in out
    request = servicer.requests[0]
    assert isinstance(request, admin_pb2.RevokeAgentCredentialRequest)
    assert (request.credential_id, request.agent_id) == ("", "tx-west-1-gpu-07")
    code, out, _ = invoke(address, "admin", "revoke-agent", "--credential", "bt-abc", "--json")
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1]) == {
        "agent_id": "", "credential_id": "bt-abc", "revoked": ["bt-abc"], "streams_closed": 1,
    }


def test_revoke_agent_not_found_exits_1_with_the_status(fake: tuple[FakeAdmin, str]) -> None:
    _, address = fake
    code, _, err = invoke(address, "admin", "revoke-agent", "nobody")
    assert code == 1
    assert "NOT_FOUND: no live credential for 'nobody'" in err
    assert "hashserve admin agent-credentials --agent-id nobody" in err


def test_the_new_commands_are_mounted() -> None:
    result = runner.invoke(app, ["admin", "--help"])
    assert result.exit_code == 0
    for name in ("agent-token", "bootstrap-token", "new-bootstrap-token", "agent-credentials",
                 "revoke-agent"):
        assert name in result.output
