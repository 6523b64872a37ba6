"""The SQLite journal (WAL mode): the default on one machine.

Durability: every job is committed before its submit is answered. `synchronous=FULL` (the
default here) fsyncs each commit, surviving power loss; `NORMAL` survives a killed process but may
lose the last commits on power loss, and is several times faster on slow disks. A write with
`synced=False` (an assignment: recovery places the job again) runs at NORMAL whatever the level.

Throughput: one fsync per submit caps FULL at the disk's sync rate; `insert_job_groups` writes the
submits gathered while the last commit was on disk in one transaction (group commit), each still
all-or-nothing. Reads go through a second connection, so they never wait for a commit.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from scheduler.core.accounting import SiteHourRow
from scheduler.core.jobs import JobRecord
from scheduler.core.market import ZoneHourPrice
from scheduler.core.metering import MeteredJob
from scheduler.journal.base import (
    LEASE_NAME,
    AgentCredentialRow,
    ApiKeyRow,
    BatchRow,
    Fenced,
    FileRow,
    IdempotencyConflict,
    Lease,
    TenantRow,
)
from scheduler.journal.codec import (
    BATCH_COLUMNS,
    CONSUME_BOOTSTRAP,
    CREDENTIAL_COLUMNS,
    FILE_COLUMNS,
    JOB_COLUMNS,
    OPEN_BATCHES_SQL,
    accounting_query,
    accounting_row,
    accounting_values,
    batch_row,
    batch_values,
    credential_row,
    credential_values,
    file_row,
    file_values,
    from_row,
    lease_row,
    list_batches_query,
    list_files_query,
    list_jobs_query,
    market_price_query,
    market_price_row,
    market_price_values,
    metered_job,
    metered_jobs_query,
    renew_lease_sql,
    revoke_target,
    to_row,
    try_lease_sql,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  job_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL,
  node_id TEXT NOT NULL, site TEXT NOT NULL, region TEXT NOT NULL, idempotency_key TEXT NOT NULL,
  spec_hash TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL, tier TEXT NOT NULL,
  input_tokens INTEGER NOT NULL, output_tokens_est INTEGER NOT NULL, deadline_s REAL NOT NULL,
  allowed_regions TEXT NOT NULL, memory_mb INTEGER NOT NULL, value_usd REAL NOT NULL,
  spec_blob BLOB NOT NULL, submitted_s REAL NOT NULL, assigned_s REAL NOT NULL,
  started_s REAL NOT NULL, finished_s REAL NOT NULL, lease_expires_s REAL NOT NULL,
  not_before_s REAL NOT NULL, error TEXT NOT NULL, result_blob BLOB NOT NULL,
  run_ms REAL NOT NULL, energy_kwh REAL NOT NULL, history TEXT NOT NULL,
  tokens_used INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
  prefix_blocks TEXT NOT NULL DEFAULT '', load_ms REAL NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
  ON jobs (tenant, idempotency_key) WHERE idempotency_key != '';
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, job_id);
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (state)
  WHERE state IN ('queued', 'assigned', 'running');
CREATE TABLE IF NOT EXISTS tenants (
  name TEXT PRIMARY KEY, max_queued_jobs INTEGER NOT NULL, submits_per_second REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
  key_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
  admin INTEGER NOT NULL, created_s REAL NOT NULL, revoked_s REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS agent_credentials (
  credential_id TEXT PRIMARY KEY, kind TEXT NOT NULL, secret_hash TEXT NOT NULL UNIQUE,
  agent_id TEXT NOT NULL, site TEXT NOT NULL, region TEXT NOT NULL, issued_s REAL NOT NULL,
  expires_s REAL NOT NULL, agent_ids TEXT NOT NULL, uses_left INTEGER NOT NULL,
  revoked_s REAL NOT NULL DEFAULT 0, last_used_s REAL NOT NULL DEFAULT 0,
  issued_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS agent_credentials_agent ON agent_credentials (agent_id);
CREATE TABLE IF NOT EXISTS accounting (
  site TEXT NOT NULL, hour_start_s REAL NOT NULL, mining_mwh REAL NOT NULL, ai_mwh REAL NOT NULL,
  idle_mwh REAL NOT NULL, curtailed_mwh REAL NOT NULL, mining_revenue_usd REAL NOT NULL,
  ai_revenue_usd REAL NOT NULL, power_cost_usd REAL NOT NULL, covered_s REAL NOT NULL,
  PRIMARY KEY (hour_start_s, site)
);
CREATE TABLE IF NOT EXISTS ops_state (
  key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS market_prices (
  zone TEXT NOT NULL, hour_start_s REAL NOT NULL, price_usd_per_mwh REAL NOT NULL,
  source TEXT NOT NULL, quotes INTEGER NOT NULL,
  PRIMARY KEY (hour_start_s, zone)
);
CREATE TABLE IF NOT EXISTS decisions (
  id INTEGER PRIMARY KEY AUTOINCREMENT, t_s REAL NOT NULL, kind TEXT NOT NULL,
  subject TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_subject ON decisions (subject);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_s) WHERE state = 'succeeded';
CREATE TABLE IF NOT EXISTS files (
  file_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
  bytes INTEGER NOT NULL, created_s REAL NOT NULL, expires_s REAL NOT NULL, content BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS files_tenant ON files (tenant, created_s);
CREATE TABLE IF NOT EXISTS batches (
  batch_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, key_id TEXT NOT NULL, status TEXT NOT NULL,
  created_s REAL NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_tenant ON batches (tenant, created_s);
CREATE TABLE IF NOT EXISTS leases (
  name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch INTEGER NOT NULL, expires_s REAL NOT NULL
);
"""

_COLS = ", ".join(JOB_COLUMNS)
_MARKS = ", ".join("?" for _ in JOB_COLUMNS)
# Skipped (no error) when the tenant already used the idempotency key; any other conflict (a
# duplicate job id) still fails.
_INSERT_NEW = (
    f"INSERT INTO jobs ({_COLS}) VALUES ({_MARKS}) "
    "ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key != '' DO NOTHING"
)
_UPSERT = (
    f"INSERT INTO jobs ({_COLS}) VALUES ({_MARKS}) ON CONFLICT(job_id) DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c in JOB_COLUMNS if c != "job_id")
)


class SqliteJournal:
    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One connection writes, used from the scheduler's event loop (or a thread it hands a
        # group commit to); the lock guards against two threads writing at once.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._synchronous = synchronous.upper()
        self._db.execute(f"PRAGMA synchronous={self._synchronous}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._epoch: int | None = None  # set by `fence`: every job write checks it
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "tokens_used" not in columns:  # a journal written before jobs kept their tokens
            self._db.execute("ALTER TABLE jobs ADD COLUMN tokens_used INTEGER NOT NULL DEFAULT 0")
        if "epoch" not in {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}:
            # The leader epoch that wrote each decision (0: before leases, or unfenced).
            self._db.execute("ALTER TABLE decisions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
        if "prefix_blocks" not in columns:  # ... or their prompts' prefix chains
            self._db.execute("ALTER TABLE jobs ADD COLUMN prefix_blocks TEXT NOT NULL DEFAULT ''")
        if "completion_tokens" not in columns:  # ... or their completion tokens apart
            self._db.execute(
                "ALTER TABLE jobs ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0"
            )
        if "load_ms" not in columns:  # ... or their cold starts
            self._db.execute("ALTER TABLE jobs ADD COLUMN load_ms REAL NOT NULL DEFAULT 0")
        # A second connection reads (API keys on every call, jobs, tenants). In WAL mode a reader
        # sees every committed transaction and never waits for a writer, so a read does not
        # queue behind a commit that is waiting for the disk. (":memory:" is one database per
        # connection: there, reads share the writer.)
        if self.path == ":memory:":
            self._read, self._read_lock = self._db, self._lock
        else:
            self._read = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._read_lock = threading.Lock()
            self._read.execute("PRAGMA busy_timeout=5000")
            self._read.execute("PRAGMA query_only=ON")

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._read is not self._db:
            with self._read_lock:
                self._read.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            yield self._read

    def set_synchronous(self, synchronous: str) -> None:
        """Change how durable later commits are (FULL, NORMAL or EXTRA; see the module doc)."""
        level = synchronous.upper()
        if level not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        with self._lock:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    def synchronous(self) -> str:
        """The durability level in force (SQLite reports it as a number)."""
        with self._lock:
            level = int(self._db.execute("PRAGMA synchronous").fetchone()[0])
        return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(level, str(level))

    # ----- jobs ---------------------------------------------------------------------------

    def insert_jobs(self, records: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        with self._lock:
            if len(records) == 1 and self._epoch is None:
                # One insert is its own transaction: no BEGIN and COMMIT round trips. A refusal
                # (a conflicting key, a duplicate id) is raised before anything is written.
                return self._insert(records)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._check_fence()
                out = self._insert(records)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return out

    def insert_job_groups(
        self, groups: Sequence[Sequence[JobRecord]]
    ) -> list[list[tuple[JobRecord, bool]] | Exception]:
        """Several submits' jobs in one transaction: one commit (one fsync under FULL) for all.

        Group commit: a caller that gathers the submits arriving while the previous commit was
        on disk writes them all here. Each group keeps `insert_jobs`' contract on its own: all of
        its jobs or none. A group whose idempotency key conflicts (or that breaks a constraint)
        is rolled back to its savepoint and gets its exception in its place in the answer; the
        other groups are written. Groups see the jobs of the groups before them, so a key used
        twice dedups as it would in two calls one after the other.
        """
        out: list[list[tuple[JobRecord, bool]] | Exception] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._check_fence()
                for group in groups:
                    # One statement needs no savepoint: SQLite undoes a statement that fails,
                    # and a conflicting key's insert wrote nothing. (Each statement lets the
                    # GIL go and come back, which on a busy core is a switch.)
                    nested = len(group) > 1
                    if nested:
                        self._db.execute("SAVEPOINT submit")
                    try:
                        result: list[tuple[JobRecord, bool]] | Exception = self._insert(group)
                    except (IdempotencyConflict, sqlite3.IntegrityError) as refused:
                        if nested:
                            self._db.execute("ROLLBACK TO submit")
                        result = refused
                    if nested:
                        self._db.execute("RELEASE submit")
                    out.append(result)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return out

    # ----- the leader lease ------------------------------------------------------------------
    # On one machine the clock is this machine's. Job writes (the ones a failover could lose
    # or repeat) are fenced; ops state, accounting and files are not (PostgreSQL fences all).

    def try_lease(self, holder: str, ttl_s: float) -> tuple[Lease | None, Lease | None]:
        now_s = time.time()
        with self._lock:
            got = lease_row(self._db.execute(
                try_lease_sql("?", "?"), (LEASE_NAME, holder, now_s, ttl_s, now_s)
            ).fetchone())
            current = lease_row(self._db.execute(
                "SELECT holder, epoch, expires_s FROM leases WHERE name=?", (LEASE_NAME,)
            ).fetchone())
        return got, current

    def renew_lease(self, holder: str, epoch: int, ttl_s: float) -> bool:
        with self._lock:
            cur = self._db.execute(renew_lease_sql("?", "?"),
                                   (time.time(), ttl_s, LEASE_NAME, holder, epoch))
        return int(cur.rowcount) == 1

    def release_lease(self, holder: str, epoch: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE leases SET expires_s = 0 WHERE name=? AND holder=? AND epoch=?",
                (LEASE_NAME, holder, epoch),
            )

    def fence(self, epoch: int | None) -> None:
        self._epoch = epoch

    def _check_fence(self) -> None:
        if self._epoch is None:
            return
        row = self._db.execute("SELECT epoch FROM leases WHERE name=?", (LEASE_NAME,)).fetchone()
        if row is None or int(row[0]) != self._epoch:
            raise Fenced(
                f"this scheduler's lease (epoch {self._epoch}) was taken over "
                f"(epoch {None if row is None else int(row[0])}): it may write nothing more"
            )

    def _insert(self, records: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        """Insert new jobs, return the stored ones for keys already used (in a transaction when
        there are several). A new key, the common case, costs one statement: the insert is
        skipped by the key's unique index when the key is taken, and only then is it read."""
        out: list[tuple[JobRecord, bool]] = []
        for rec in records:
            if self._db.execute(_INSERT_NEW, to_row(rec)).rowcount == 1:
                out.append((rec, False))
                continue
            existing = self._by_key(rec.tenant, rec.idempotency_key)
            if existing is None:  # skipped, yet no job holds the key: cannot be; refuse
                raise sqlite3.IntegrityError(f"job {rec.job_id} was not inserted")
            if existing.spec_hash != rec.spec_hash:
                raise IdempotencyConflict(existing)
            out.append((existing, True))
        return out

    def _by_key(self, tenant: str, key: str) -> JobRecord | None:
        if not key:
            return None
        # The `!= ''` lets SQLite use the partial unique index (its WHERE clause must be implied
        # by the query's); without it the lookup scans every job of the tenant.
        row = self._db.execute(
            f"SELECT {_COLS} FROM jobs WHERE tenant=? AND idempotency_key=? "
            "AND idempotency_key != ''",
            (tenant, key),
        ).fetchone()
        return from_row(row) if row else None

    def write_jobs(
        self,
        records: Sequence[JobRecord],
        decisions: Sequence[tuple[float, str, str, str]] = (),
        *,
        synced: bool = True,
    ) -> None:
        if not records and not decisions:
            return
        with self._lock:
            # WAL mode: NORMAL writes the commit's frames without an fsync; the next synced
            # commit's fsync of the WAL makes them durable too.
            lazy = not synced and self._synchronous != "NORMAL"
            if lazy:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._write_jobs(records, decisions)
            finally:
                if lazy:
                    self._db.execute(f"PRAGMA synchronous={self._synchronous}")

    def _write_jobs(
        self, records: Sequence[JobRecord], decisions: Sequence[tuple[float, str, str, str]]
    ) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._check_fence()
            self._db.executemany(_UPSERT, [to_row(r) for r in records])
            if decisions:
                self._db.executemany(
                    "INSERT INTO decisions (t_s, kind, subject, detail, epoch) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(*d, self._epoch or 0) for d in decisions],
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def job_by_key(self, tenant: str, key: str) -> JobRecord | None:
        if not key:
            return None
        with self._reading() as db:
            row = db.execute(
                f"SELECT {_COLS} FROM jobs WHERE tenant=? AND idempotency_key=? "
                "AND idempotency_key != ''",
                (tenant, key),
            ).fetchone()
        return from_row(row) if row else None

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._reading() as db:
            row = db.execute(
                f"SELECT {_COLS} FROM jobs WHERE job_id=?", (job_id,)
            ).fetchone()
        return from_row(row) if row else None

    def list_jobs(
        self, tenant: str, state: str | None, page_size: int, after_job_id: str
    ) -> list[JobRecord]:
        sql, args = list_jobs_query(
            f"SELECT {_COLS} FROM jobs", "?", tenant, state, page_size, after_job_id
        )
        with self._reading() as db:
            rows = db.execute(sql, args).fetchall()
        return [from_row(r) for r in rows]

    def load_active_jobs(self) -> list[JobRecord]:
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {_COLS} FROM jobs WHERE state IN ('queued', 'assigned', 'running')"
            ).fetchall()
        return [from_row(r) for r in rows]

    def count_jobs_by_state(self) -> dict[str, int]:
        with self._reading() as db:
            rows = db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        return {str(s): int(n) for s, n in rows}

    # ----- credentials --------------------------------------------------------------------

    def upsert_tenant(self, tenant: TenantRow) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO tenants VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "max_queued_jobs=excluded.max_queued_jobs, "
                "submits_per_second=excluded.submits_per_second",
                (tenant.name, tenant.max_queued_jobs, tenant.submits_per_second),
            )

    def get_tenant(self, name: str) -> TenantRow | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT name, max_queued_jobs, submits_per_second FROM tenants WHERE name=?",
                (name,),
            ).fetchone()
        return TenantRow(row[0], int(row[1]), float(row[2])) if row else None

    def add_api_key(self, key_id: str, key_hash: str, tenant: str, admin: bool) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys (key_id, key_hash, tenant, admin, created_s) "
                "VALUES (?, ?, ?, ?, ?)",
                (key_id, key_hash, tenant, int(admin), time.time()),
            )

    def get_api_key(self, key_id: str) -> ApiKeyRow | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT key_id, key_hash, tenant, admin, revoked_s FROM api_keys WHERE key_id=?",
                (key_id,),
            ).fetchone()
        return ApiKeyRow(row[0], row[1], row[2], bool(row[3]), row[4] > 0) if row else None

    def revoke_api_key(self, key_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE api_keys SET revoked_s=? WHERE key_id=? AND revoked_s=0",
                (time.time(), key_id),
            )
        return cur.rowcount > 0

    def add_agent_credential(self, row: AgentCredentialRow) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT INTO agent_credentials ({CREDENTIAL_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                credential_values(row),
            )

    def find_agent_credential(self, secret_hash: str) -> AgentCredentialRow | None:
        with self._reading() as db:
            row = db.execute(
                f"SELECT {CREDENTIAL_COLUMNS} FROM agent_credentials WHERE secret_hash=?",
                (secret_hash,),
            ).fetchone()
        return credential_row(row) if row else None

    def list_agent_credentials(self, agent_id: str = "") -> list[AgentCredentialRow]:
        where, args = ("WHERE agent_id=?", (agent_id,)) if agent_id else ("", ())
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {CREDENTIAL_COLUMNS} FROM agent_credentials {where} "
                "ORDER BY issued_s DESC, credential_id",
                args,
            ).fetchall()
        return [credential_row(r) for r in rows]

    def consume_bootstrap(self, credential_id: str, now_s: float) -> bool:
        with self._lock:
            cur = self._db.execute(CONSUME_BOOTSTRAP.replace("%s", "?"),
                                   (now_s, credential_id, now_s))
        return cur.rowcount > 0

    def touch_agent_credential(self, credential_id: str, now_s: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE agent_credentials SET last_used_s=? WHERE credential_id=?",
                (now_s, credential_id),
            )

    def revoke_agent_credentials(
        self, now_s: float, credential_id: str = "", agent_id: str = ""
    ) -> list[str]:
        target = revoke_target(credential_id, agent_id)
        if target is None:
            return []
        column, value = target
        with self._lock:
            rows = self._db.execute(
                f"UPDATE agent_credentials SET revoked_s=? WHERE {column}=? AND revoked_s=0 "
                "RETURNING credential_id",
                (now_s, value),
            ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def put_ops_state(self, key: str, value_json: str | None) -> None:
        with self._lock:
            if value_json is None:
                self._db.execute("DELETE FROM ops_state WHERE key=?", (key,))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO ops_state VALUES (?, ?, ?)",
                    (key, value_json, time.time()),
                )

    def load_ops_state(self) -> dict[str, str]:
        with self._reading() as db:
            rows = db.execute("SELECT key, value FROM ops_state ORDER BY key").fetchall()
        return {str(k): str(v) for k, v in rows}

    def put_accounting_rows(self, rows: Sequence[SiteHourRow]) -> None:
        if not rows:
            return
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO accounting VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [accounting_values(r) for r in rows],
            )

    def accounting_rows(
        self, site: str = "", start_s: float = -math.inf, end_s: float = math.inf
    ) -> list[SiteHourRow]:
        sql, args = accounting_query("?", site, start_s, end_s)
        with self._reading() as db:
            rows = db.execute(sql, args).fetchall()
        return [accounting_row(r) for r in rows]

    def forget_accounting_before(self, hour_start_s: float) -> int:
        with self._lock:
            cur = self._db.execute("DELETE FROM accounting WHERE hour_start_s < ?", (hour_start_s,))
        return int(cur.rowcount)

    def put_market_prices(self, rows: Sequence[ZoneHourPrice]) -> None:
        if not rows:
            return
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO market_prices VALUES (?, ?, ?, ?, ?)",
                [market_price_values(r) for r in rows],
            )

    def market_prices(
        self, zone: str = "", start_s: float = -math.inf, end_s: float = math.inf
    ) -> list[ZoneHourPrice]:
        sql, args = market_price_query("?", zone, start_s, end_s)
        with self._reading() as db:
            rows = db.execute(sql, args).fetchall()
        return [market_price_row(r) for r in rows]

    def forget_market_prices_before(self, hour_start_s: float) -> int:
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM market_prices WHERE hour_start_s < ?", (hour_start_s,)
            )
        return int(cur.rowcount)

    def metered_jobs(
        self, tenant: str = "", start_s: float = -math.inf, end_s: float = math.inf
    ) -> list[MeteredJob]:
        sql, args = metered_jobs_query("?", tenant, start_s, end_s)
        with self._reading() as db:
            rows = db.execute(sql, args).fetchall()
        return [metered_job(r) for r in rows]

    def put_file(self, row: FileRow) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", file_values(row)
            )

    def get_file(self, file_id: str) -> FileRow | None:
        with self._reading() as db:
            row = db.execute(
                f"SELECT {FILE_COLUMNS}, content FROM files WHERE file_id=?", (file_id,)
            ).fetchone()
        return None if row is None else file_row(row, bytes(row[7]))

    def list_files(self, tenant: str, purpose: str = "") -> list[FileRow]:
        sql, args = list_files_query("?", tenant, purpose)
        with self._reading() as db:
            return [file_row(r) for r in db.execute(sql, args).fetchall()]

    def delete_file(self, file_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM files WHERE file_id=?", (file_id,))
        return int(cur.rowcount) > 0

    def forget_files_expired(self, now_s: float) -> int:
        with self._lock:
            cur = self._db.execute("DELETE FROM files WHERE expires_s <= ?", (now_s,))
        return int(cur.rowcount)

    def put_batch(self, row: BatchRow) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?)", batch_values(row)
            )

    def get_batch(self, batch_id: str) -> BatchRow | None:
        with self._reading() as db:
            row = db.execute(
                f"SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id=?", (batch_id,)
            ).fetchone()
        return None if row is None else batch_row(row)

    def list_batches(self, tenant: str, limit: int, after_batch_id: str = "") -> list[BatchRow]:
        sql, args = list_batches_query("?", tenant, limit, after_batch_id)
        with self._reading() as db:
            return [batch_row(r) for r in db.execute(sql, args).fetchall()]

    def open_batches(self) -> list[BatchRow]:
        with self._reading() as db:
            return [batch_row(r) for r in db.execute(OPEN_BATCHES_SQL).fetchall()]

    def decisions_for(self, subject: str) -> list[tuple[float, str, str]]:
        """(t_s, kind, json detail) recorded about a job or site, oldest first."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT t_s, kind, detail FROM decisions WHERE subject=? ORDER BY id", (subject,)
            ).fetchall()
        return [(float(t), str(k), str(d)) for t, k, d in rows]
