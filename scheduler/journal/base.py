"""The durable journal's interface: jobs, credentials and decisions, written before acting.

Two backends implement it: SQLite in WAL mode (one machine, the default) and PostgreSQL (a Ray
cluster, where the journal must outlive any one node). Both are chosen by URL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from scheduler.core.accounting import SiteHourRow
from scheduler.core.jobs import JobRecord
from scheduler.core.market import ZoneHourPrice
from scheduler.core.metering import MeteredJob


class JournalUnavailable(ConnectionError):
    """The journal cannot be reached, or a commit's outcome is unknown (a retry with the same
    idempotency key is then the safe way on)."""


class Fenced(JournalUnavailable):
    """A write by a scheduler whose leader lease was taken over: refused, nothing written. The
    process must stop serving; another scheduler leads now."""


@dataclass(frozen=True)
class Lease:
    """The scheduler's leader lease. `epoch` grows by one at every change of holder: it fences
    every write (`Journal.fence`), so an old leader that wakes from a pause changes nothing."""

    holder: str
    epoch: int
    expires_s: float  # the journal's own clock (PostgreSQL's, across machines)


LEASE_NAME = "scheduler"


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request body."""

    def __init__(self, existing: JobRecord) -> None:
        super().__init__(
            f"idempotency key {existing.idempotency_key!r} was already used for job "
            f"{existing.job_id} with a different request"
        )
        self.existing = existing


@dataclass(frozen=True)
class ApiKeyRow:
    key_id: str
    key_hash: str
    tenant: str
    admin: bool
    revoked: bool


class AgentCredentialKind(StrEnum):
    TOKEN = "token"  # hsa_..., a bearer token bound to one agent, site and region
    CERTIFICATE = "certificate"  # an X.509 client certificate, found by its SHA-256 fingerprint
    BOOTSTRAP = "bootstrap"  # hsb_..., can only enroll agents of one site


# An agent credential bound to every agent id, site and region: the local cluster's, accepted
# only from loopback.
ANY_AGENT = "*"


@dataclass(frozen=True)
class AgentCredentialRow:
    """An agent's credential, or a bootstrap token, as the journal keeps it (`secret_hash`:
    SHA-256 of the token, or of the certificate's DER)."""

    credential_id: str
    kind: AgentCredentialKind
    secret_hash: str
    agent_id: str  # "" for a bootstrap token
    site: str
    region: str
    issued_s: float
    expires_s: float  # 0: never
    agent_ids: tuple[str, ...] = ()  # a bootstrap token's scope; empty: any agent at the site
    uses_left: int = -1  # a bootstrap token's enrollments left; -1: not counted
    revoked_s: float = 0.0
    last_used_s: float = 0.0
    issued_by: str = ""

    def expired(self, now_s: float) -> bool:
        return 0.0 < self.expires_s <= now_s


@dataclass(frozen=True)
class TenantRow:
    name: str
    max_queued_jobs: int
    submits_per_second: float


@dataclass(frozen=True)
class FileRow:
    """A file a tenant uploaded (a batch's input) or a batch wrote (its output and errors)."""

    file_id: str
    tenant: str
    purpose: str
    filename: str
    size_bytes: int
    created_s: float
    expires_s: float
    content: bytes | None = None  # None when listed without it


@dataclass(frozen=True)
class BatchRow:
    """A Batch API batch: its OpenAI batch object as JSON (`doc`), and what is queried on."""

    batch_id: str
    tenant: str
    key_id: str  # the API key that created it (its runner acts as that tenant)
    status: str
    created_s: float
    doc: str


class Journal(Protocol):
    def close(self) -> None: ...

    # The leader lease (one row, `LEASE_NAME`), decided by the journal's own clock.
    def try_lease(self, holder: str, ttl_s: float) -> tuple[Lease | None, Lease | None]:
        """Take the lease if it is free or expired, or extend it if `holder` has it. Returns
        (the lease now held by `holder` or None, the lease as it stands)."""
        ...

    def renew_lease(self, holder: str, epoch: int, ttl_s: float) -> bool:
        """Extend the lease if (holder, epoch) still has it."""
        ...

    def release_lease(self, holder: str, epoch: int) -> None:
        """Let the lease go at once (a clean stop), so a standby need not wait it out."""
        ...

    def fence(self, epoch: int | None) -> None:
        """From now on every write first checks, in its own transaction, that the lease's
        epoch is still `epoch`, and raises `Fenced` (writing nothing) when it is not."""
        ...

    # jobs
    def insert_jobs(self, records: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        """Insert new jobs in one transaction; returns (job, deduplicated) per input.

        A job whose (tenant, idempotency key) exists with the same spec hash returns the stored
        job with deduplicated=True; with another hash the whole batch raises IdempotencyConflict.
        """
        ...

    def insert_job_groups(
        self, groups: Sequence[Sequence[JobRecord]]
    ) -> list[list[tuple[JobRecord, bool]] | Exception]:
        """Several submits at once (group commit): each group all or nothing, as `insert_jobs`;
        a group refused for its idempotency key gets the exception in its place."""
        ...

    def write_jobs(
        self,
        records: Sequence[JobRecord],
        decisions: Sequence[tuple[float, str, str, str]] = (),
        *,
        synced: bool = True,
    ) -> None:
        """Upsert job states, and record the decisions that made them, in one transaction.

        A decision row is (t_s, kind, subject, json detail): "placement" and "outcome" rows let an
        operator ask why a job went where it did, and a test count the answers a job got.

        `synced=False` skips the wait for the disk: the commit survives a killed process, but a
        power cut (or the database server's crash) may take it, with the unsynced commits just
        before it and never one before a later synced commit. For what recovery re-derives (an
        assignment or a start lost is a job placed again), not for what a customer was told.
        """
        ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def job_by_key(self, tenant: str, key: str) -> JobRecord | None:
        """The tenant's job made with this idempotency key, if any ("" never matches)."""
        ...

    def list_jobs(
        self, tenant: str, state: str | None, page_size: int, after_job_id: str
    ) -> list[JobRecord]: ...

    def load_active_jobs(self) -> list[JobRecord]: ...

    def count_jobs_by_state(self) -> dict[str, int]: ...

    # credentials
    def upsert_tenant(self, tenant: TenantRow) -> None: ...

    def get_tenant(self, name: str) -> TenantRow | None: ...

    def add_api_key(self, key_id: str, key_hash: str, tenant: str, admin: bool) -> None: ...

    def get_api_key(self, key_id: str) -> ApiKeyRow | None: ...

    def revoke_api_key(self, key_id: str) -> bool: ...

    def add_agent_credential(self, row: AgentCredentialRow) -> None: ...

    def find_agent_credential(self, secret_hash: str) -> AgentCredentialRow | None: ...

    def list_agent_credentials(self, agent_id: str = "") -> list[AgentCredentialRow]:
        """Every credential and bootstrap token (of one agent, when given), newest first."""
        ...

    def consume_bootstrap(self, credential_id: str, now_s: float) -> bool:
        """Take one use of a live bootstrap token, atomically (two agents racing for a
        single-use token: one wins). False when none is left, or it is revoked or expired."""
        ...

    def touch_agent_credential(self, credential_id: str, now_s: float) -> None: ...

    def revoke_agent_credentials(
        self, now_s: float, credential_id: str = "", agent_id: str = ""
    ) -> list[str]:
        """Revoke one credential, or every live one of an agent; the ids revoked."""
        ...

    def decisions_for(self, subject: str) -> list[tuple[float, str, str]]: ...

    # Operations state that must survive a restart (site overrides and demand-response windows,
    # node drains, ops market values), as JSON under a key such as "site:tx-odessa".
    def put_ops_state(self, key: str, value_json: str | None) -> None:
        """Store `value_json` under `key`; None deletes it."""
        ...

    def load_ops_state(self) -> dict[str, str]: ...

    # Metering: the succeeded jobs that finished in [start_s, end_s) ("" tenant: all tenants).
    def metered_jobs(
        self, tenant: str = "", start_s: float = -math.inf, end_s: float = math.inf
    ) -> list[MeteredJob]: ...

    # Batch API files and batches. A file's content is read only by `get_file`.
    def put_file(self, row: FileRow) -> None: ...

    def get_file(self, file_id: str) -> FileRow | None: ...

    def list_files(self, tenant: str, purpose: str = "") -> list[FileRow]: ...

    def delete_file(self, file_id: str) -> bool: ...

    def forget_files_expired(self, now_s: float) -> int: ...

    def put_batch(self, row: BatchRow) -> None: ...

    def get_batch(self, batch_id: str) -> BatchRow | None: ...

    def list_batches(self, tenant: str, limit: int, after_batch_id: str = "") -> list[BatchRow]:
        """Newest first; `after_batch_id` is the last of the previous page."""
        ...

    def open_batches(self) -> list[BatchRow]:
        """Batches not yet in a final state (a restarted scheduler resumes them)."""
        ...

    # The accounting ledger, one row per site and market hour (replaced as the hour fills up).
    def put_accounting_rows(self, rows: Sequence[SiteHourRow]) -> None: ...

    def accounting_rows(
        self, site: str = "", start_s: float = -math.inf, end_s: float = math.inf
    ) -> list[SiteHourRow]:
        """Rows of hours starting in [start_s, end_s), by hour then site; site "" for all."""
        ...

    def forget_accounting_before(self, hour_start_s: float) -> int: ...

    # Live market prices, one row per zone and market hour (replaced as the hour's quotes come).
    def put_market_prices(self, rows: Sequence[ZoneHourPrice]) -> None: ...

    def market_prices(
        self, zone: str = "", start_s: float = -math.inf, end_s: float = math.inf
    ) -> list[ZoneHourPrice]:
        """Rows of hours starting in [start_s, end_s), by hour then zone; zone "" for all."""
        ...

    def forget_market_prices_before(self, hour_start_s: float) -> int: ...
