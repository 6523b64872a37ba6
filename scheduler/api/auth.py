"""Who is calling: API keys for customers and admins (agents: `agent_identity.py`).

Keys and tokens are random secrets; only their SHA-256 is stored, so a stolen journal reveals no
credential. An API key reads `hsk_<key id>_<secret>`: the public key id finds the row, then the
stored hash is compared with `hmac.compare_digest`, so the time taken does not depend on how much
of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.journal.base import Journal, TenantRow

KEY_PREFIX = "hsk"
AGENT_TOKEN_PREFIX = "hsa"


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str
    admin: bool


class AuthError(Exception):
    pass


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def bearer_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    raise AuthError("missing credentials: send metadata 'authorization: Bearer <key>'")


def bearer_metadata(key: str) -> tuple[tuple[str, str]]:
    """The call metadata that carries `key` (what `bearer_from_metadata` reads)."""
    return (("authorization", f"Bearer {key}"),)


def key_id_of(key: str) -> str:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1]:
        return ""
    return parts[1]


def new_api_key() -> tuple[str, str]:
    """(key_id, full key). The key id is public (it names the key in logs and revocations)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(24)}"


def new_agent_token() -> str:
    """A secret for the local cluster's '*' agent token."""
    return f"{AGENT_TOKEN_PREFIX}_{secrets.token_urlsafe(24)}"


# A verified key is trusted this long without asking the journal again. A revocation through this
# scheduler takes effect at once; one written to the journal by another process, within this.
KEY_CACHE_S = 5.0
KEY_CACHE_MAX = 10_000


class Authenticator:
    def __init__(self, journal: Journal, clock: Callable[[], float] = time.monotonic) -> None:
        self.journal = journal
        self._clock = clock
        # The full key -> (principal, verified at). Keyed by the secret itself, in memory only, so
        # a hit is exactly as strong as the check it skips.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def customer(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        key = bearer_from_metadata(metadata)
        now = self._clock()
        hit = self._verified.get(key)
        if hit is not None and now - hit[1] < KEY_CACHE_S:
            return hit[0]
        row = self.journal.get_api_key(key_id_of(key))
        if row is None or not hmac.compare_digest(row.key_hash, hash_secret(key)) or row.revoked:
            self._verified.pop(key, None)
            raise AuthError("invalid or revoked API key")
        principal = Principal(row.tenant, row.key_id, row.admin)
        if len(self._verified) >= KEY_CACHE_MAX:
            self._verified.clear()
        self._verified[key] = (principal, now)
        return principal

    def revoke_api_key(self, key_id: str) -> bool:
        """Revoke in the journal and forget the key here at once."""
        revoked = self.journal.revoke_api_key(key_id)
        self._verified = {k: v for k, v in self._verified.items() if v[0].key_id != key_id}
        return revoked

    def admin(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        principal = self.customer(metadata)
        if not principal.admin:
            raise AuthError("this call needs an admin key")
        return principal

    # ----- issuing --------------------------------------------------------------------------

    def create_tenant(self, name: str, max_queued_jobs: int = 10_000, rate: float = 200.0) -> None:
        self.journal.upsert_tenant(TenantRow(name, max_queued_jobs, rate))

    def issue_api_key(self, tenant: str, admin: bool = False) -> tuple[str, str]:
        key_id, key = new_api_key()
        self.journal.add_api_key(key_id, hash_secret(key), tenant, admin)
        return key_id, key

    def ensure_api_key(self, key: str, tenant: str, admin: bool) -> None:
        """Register a key given from outside (bootstrap admin key from the environment)."""
        key_id = key_id_of(key)
        if not key_id or len(key) < 32:
            raise ValueError(
                "a bootstrap key must read hsk_<id>_<secret of 20+ characters>; "
                "make one with `hashserve admin new-key`"
            )
        row = self.journal.get_api_key(key_id)
        if row is None:
            try:
                self.journal.add_api_key(key_id, hash_secret(key), tenant, admin)
                return
            except Exception:
                # Two schedulers (a leader and its standby) starting at once both register
                # the bootstrap key: the second insert fails, and the stored key is the same.
                row = self.journal.get_api_key(key_id)
                if row is None:
                    raise
        if not hmac.compare_digest(row.key_hash, hash_secret(key)):
            raise ValueError(
                f"a different key with id {key_id} is already registered: give the new key a "
                "new id (revoke the old one with `hashserve admin revoke-key`)"
            )
