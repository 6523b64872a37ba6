"""Authentication: key format, hashed storage, revocation, admin keys, agent tokens.

Runs against a real SQLite journal in a temporary folder, because "the journal never holds a raw
key" is a claim about the bytes on disk.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.api.agent_identity import AgentIdentities
from scheduler.api.auth import (
    Authenticator,
    AuthError,
    Principal,
    bearer_from_metadata,
    hash_secret,
    key_id_of,
    new_agent_token,
    new_api_key,
)
from scheduler.journal import SqliteJournal


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "journal.db")
    yield j
    j.close()


@pytest.fixture
def auth(journal: SqliteJournal) -> Authenticator:
    a = Authenticator(journal)
    a.create_tenant("acme")
    return a


def bearer(secret: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {secret}")]


def journal_bytes(folder: Path) -> bytes:
    """Every byte SQLite keeps for the journal: the database, its WAL and shared-memory index."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob("journal.db*")))


# ----- key format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "key_id"),
    [
        ("hsk_0a1b2c_s3cret", "0a1b2c"),
        ("hsk_0a1b2c_se_cr_et", "0a1b2c"),  # urlsafe secrets may contain "_"
        ("hsk__secret", ""),
        ("hsk_0a1b2c", ""),
        ("hsx_0a1b2c_secret", ""),
        ("", ""),
    ],
)
def test_key_id_of(key: str, key_id: str) -> None:
    assert key_id_of(key) == key_id


def test_new_api_keys_parse_and_differ() -> None:
    key_id, key = new_api_key()
    assert key.startswith(f"hsk_{key_id}_") and len(key_id) == 12
    assert key_id_of(key) == key_id
    assert len(key) >= 32  # what ensure_api_key demands of a bootstrap key
    assert new_api_key() != (key_id, key)
    assert new_agent_token().startswith("hsa_") and new_agent_token() != new_agent_token()


def test_hash_secret_is_sha256_hex() -> None:
    assert hash_secret("abc") == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ([("authorization", "Bearer k1")], "k1"),
        ([("Authorization", "bearer  k1 ")], "k1"),
        ([("x-other", "1"), ("authorization", b"Bearer k1")], "k1"),
    ],
)
def test_bearer_from_metadata(metadata: list[tuple[str, str | bytes]], token: str) -> None:
    assert bearer_from_metadata(metadata) == token


@pytest.mark.parametrize(
    "metadata",
    [None, [], [("authorization", "Basic k1")], [("authorization", "Bearer   ")],
     [("x-api-key", "Bearer k1")]],
)
def test_missing_or_malformed_credentials_are_refused(
    metadata: list[tuple[str, str | bytes]] | None,
) -> None:
    with pytest.raises(AuthError, match="missing credentials"):
        bearer_from_metadata(metadata)


# ----- customer and admin keys -----------------------------------------------------------------


def test_an_issued_key_authenticates_as_its_tenant(auth: Authenticator) -> None:
    key_id, key = auth.issue_api_key("acme")
    assert auth.customer(bearer(key)) == Principal("acme", key_id, admin=False)


@pytest.mark.parametrize("mangle", ["wrong secret", "unknown id", "not a key"])
def test_a_wrong_key_is_refused(auth: Authenticator, mangle: str) -> None:
    key_id, key = auth.issue_api_key("acme")
    bad = {
        "wrong secret": key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb"),
        "unknown id": key.replace(key_id, "ffffffffffff"),
        "not a key": "hello",
    }[mangle]
    with pytest.raises(AuthError, match="invalid or revoked API key"):
        auth.customer(bearer(bad))


def test_keys_are_stored_hashed_and_never_raw(
    auth: Authenticator, journal: SqliteJournal, tmp_path: Path
) -> None:
    key_id, key = auth.issue_api_key("acme")
    identities = AgentIdentities(journal, time.time, {}, frozenset())
    token = identities.issue_token("node-a", "site-a", "north_america").token
    row = journal.get_api_key(key_id)
    assert row is not None and row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    secret = key.split("_", 2)[2]
    on_disk = journal_bytes(tmp_path)
    # The hashes are there (so these are the right bytes to search) ...
    assert row.key_hash.encode() in on_disk and hash_secret(token).encode() in on_disk
    assert key_id.encode() in on_disk
    # ... the secrets are not, while open (WAL) nor after a checkpoint on close.
    for raw in (key, secret, token):
        assert raw.encode() not in on_disk
    journal.close()
    on_disk = journal_bytes(tmp_path)
    assert row.key_hash.encode() in on_disk
    for raw in (key, secret, token):
        assert raw.encode() not in on_disk


def test_a_revoked_key_is_refused(auth: Authenticator, journal: SqliteJournal) -> None:
    key_id, key = auth.issue_api_key("acme")
    assert journal.revoke_api_key(key_id)
    with pytest.raises(AuthError, match="revoked"):
        auth.customer(bearer(key))
    assert not journal.revoke_api_key(key_id)  # revoking twice reports nothing revoked
    assert not journal.revoke_api_key("nope")


def test_admin_calls_need_an_admin_key(auth: Authenticator) -> None:
    _, customer_key = auth.issue_api_key("acme")
    admin_id, admin_key = auth.issue_api_key("ops", admin=True)
    with pytest.raises(AuthError, match="needs an admin key"):
        auth.admin(bearer(customer_key))
    assert auth.admin(bearer(admin_key)) == Principal("ops", admin_id, admin=True)
    # An admin key is also a customer key of its own tenant.
    assert auth.customer(bearer(admin_key)).tenant == "ops"


def test_bootstrap_key_is_registered_once(auth: Authenticator) -> None:
    _, key = new_api_key()
    auth.ensure_api_key(key, "ops", admin=True)
    auth.ensure_api_key(key, "ops", admin=True)  # a restart registers nothing new
    assert auth.admin(bearer(key)).tenant == "ops"


@pytest.mark.parametrize("key", ["hsk_abc_short", "not-a-key-at-all-but-long-enough-yes", ""])
def test_a_malformed_bootstrap_key_is_refused(auth: Authenticator, key: str) -> None:
    with pytest.raises(ValueError, match="bootstrap key"):
        auth.ensure_api_key(key, "ops", admin=True)


def test_a_verified_key_is_cached_briefly_and_forgotten_on_revoke(tmp_path: Path) -> None:
    from scheduler.api.auth import KEY_CACHE_S

    journal = SqliteJournal(tmp_path / "j.db")
    now = [0.0]
    auth = Authenticator(journal, clock=lambda: now[0])
    auth.create_tenant("acme")
    key_id, key = auth.issue_api_key("acme")
    meta = [("authorization", f"Bearer {key}")]
    assert auth.customer(meta).tenant == "acme"
    # Revoked behind this authenticator's back (another process): trusted until the cache ages.
    journal.revoke_api_key(key_id)
    assert auth.customer(meta).tenant == "acme"
    now[0] += KEY_CACHE_S
    with pytest.raises(AuthError):
        auth.customer(meta)
    # Revoked through it: refused at once.
    key_id2, key2 = auth.issue_api_key("acme")
    meta2 = [("authorization", f"Bearer {key2}")]
    auth.customer(meta2)
    auth.revoke_api_key(key_id2)
    with pytest.raises(AuthError):
        auth.customer(meta2)


def test_two_schedulers_registering_the_bootstrap_key_at_once_both_start(
    auth: Authenticator, journal: SqliteJournal,
) -> None:
    key = "hsk_boot_" + "s" * 30
    other = Authenticator(journal)
    other.ensure_api_key(key, "admin", admin=True)  # the other scheduler got there first...
    real_get = journal.get_api_key
    calls: list[str] = []

    def not_yet(key_id: str) -> object:
        calls.append(key_id)
        return None if len(calls) == 1 else real_get(key_id)  # ... after this one looked

    journal.get_api_key = not_yet  # type: ignore[method-assign, assignment]
    auth.ensure_api_key(key, "admin", admin=True)  # its insert fails; the stored key matches
    assert len(calls) == 2
    journal.get_api_key = real_get  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="different key"):
        auth.ensure_api_key("hsk_boot_" + "t" * 30, "admin", admin=True)
