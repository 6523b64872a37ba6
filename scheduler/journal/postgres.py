"""The PostgreSQL journal: for a Ray cluster, where the journal must outlive any one node.

The same tables, rows and answers as the SQLite journal (scheduler/journal/sqlite.py), so a
scheduler moved from one to the other behaves alike; what differs is how the database gets there:
a URL (`postgresql://user:password@host:port/db`) instead of a file.

Transactions: every call is one explicit transaction (autocommit off), so a batch of submits or
a write of states and their decisions is all or nothing. Idempotent inserts use
`INSERT ... ON CONFLICT DO NOTHING` and then read the stored row in the same transaction: two
schedulers (or two connections) submitting the same key at once end with one job, because the
second insert waits for the first transaction and then sees its row.

Connections: one for writes and one for reads, each behind a lock, as in the SQLite journal: an
API-key lookup on every call does not queue behind a commit. When the server drops a connection
(a restart, a failover), the call reconnects once and runs again if that is safe: always for a
read, and for a write only when it broke before the commit was sent. A connection that breaks
during the commit leaves its outcome unknown; that, and a server that stays away, raise
`JournalUnavailable` naming the server (never the password).

What it leaves to others: the server itself (backups, replication, failover), and the schema's
future migrations (tables are created if missing, never altered).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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
    JournalUnavailable,
    Lease,
    TenantRow,
)
from scheduler.journal.codec import (
    ACCOUNTING_COLUMNS,
    BATCH_COLUMNS,
    CONSUME_BOOTSTRAP,
    CREDENTIAL_COLUMNS,
    FILE_COLUMNS,
    JOB_COLUMNS,
    MARKET_PRICE_COLUMNS,
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

T = TypeVar("T")

# Text keys compare byte by byte (COLLATE "C"), as SQLite compares them: the page order and the
# `job_id > after` cursor of list_jobs then do not depend on the server's locale.
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  job_id TEXT COLLATE "C" PRIMARY KEY, tenant TEXT COLLATE "C" NOT NULL, state TEXT NOT NULL,
  attempt BIGINT NOT NULL, node_id TEXT NOT NULL, site TEXT NOT NULL, region TEXT NOT NULL,
  idempotency_key TEXT COLLATE "C" NOT NULL, spec_hash TEXT NOT NULL, model TEXT NOT NULL,
  kind TEXT NOT NULL, tier TEXT NOT NULL, input_tokens BIGINT NOT NULL,
  output_tokens_est BIGINT NOT NULL, deadline_s DOUBLE PRECISION NOT NULL,
  allowed_regions TEXT NOT NULL, memory_mb BIGINT NOT NULL, value_usd DOUBLE PRECISION NOT NULL,
  spec_blob BYTEA NOT NULL, submitted_s DOUBLE PRECISION NOT NULL,
  assigned_s DOUBLE PRECISION NOT NULL, started_s DOUBLE PRECISION NOT NULL,
  finished_s DOUBLE PRECISION NOT NULL, lease_expires_s DOUBLE PRECISION NOT NULL,
  not_before_s DOUBLE PRECISION NOT NULL, error TEXT NOT NULL, result_blob BYTEA NOT NULL,
  run_ms DOUBLE PRECISION NOT NULL, energy_kwh DOUBLE PRECISION NOT NULL, history TEXT NOT NULL,
  tokens_used BIGINT NOT NULL DEFAULT 0, completion_tokens BIGINT NOT NULL DEFAULT 0,
  prefix_blocks TEXT NOT NULL DEFAULT '', load_ms DOUBLE PRECISION NOT NULL DEFAULT 0
);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS tokens_used BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS completion_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS prefix_blocks TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS load_ms DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
  ON jobs (tenant, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, job_id);
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (state)
  WHERE state IN ('queued', 'assigned', 'running');
CREATE TABLE IF NOT EXISTS tenants (
  name TEXT PRIMARY KEY, max_queued_jobs BIGINT NOT NULL,
  submits_per_second DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
  key_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
  admin BOOLEAN NOT NULL, created_s DOUBLE PRECISION NOT NULL,
  revoked_s DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS agent_credentials (
  credential_id TEXT PRIMARY KEY, kind TEXT NOT NULL, secret_hash TEXT NOT NULL UNIQUE,
  agent_id TEXT NOT NULL, site TEXT NOT NULL, region TEXT NOT NULL,
  issued_s DOUBLE PRECISION NOT NULL, expires_s DOUBLE PRECISION NOT NULL,
  agent_ids TEXT NOT NULL, uses_left BIGINT NOT NULL,
  revoked_s DOUBLE PRECISION NOT NULL DEFAULT 0, last_used_s DOUBLE PRECISION NOT NULL DEFAULT 0,
  issued_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS agent_credentials_agent ON agent_credentials (agent_id);
CREATE TABLE IF NOT EXISTS accounting (
  site TEXT NOT NULL, hour_start_s DOUBLE PRECISION NOT NULL,
  mining_mwh DOUBLE PRECISION NOT NULL, ai_mwh DOUBLE PRECISION NOT NULL,
  idle_mwh DOUBLE PRECISION NOT NULL, curtailed_mwh DOUBLE PRECISION NOT NULL,
  mining_revenue_usd DOUBLE PRECISION NOT NULL, ai_revenue_usd DOUBLE PRECISION NOT NULL,
  power_cost_usd DOUBLE PRECISION NOT NULL, covered_s DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (hour_start_s, site)
);
CREATE TABLE IF NOT EXISTS ops_state (
  key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_s DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS market_prices (
  zone TEXT NOT NULL, hour_start_s DOUBLE PRECISION NOT NULL,
  price_usd_per_mwh DOUBLE PRECISION NOT NULL, source TEXT NOT NULL, quotes INTEGER NOT NULL,
  PRIMARY KEY (hour_start_s, zone)
);
CREATE TABLE IF NOT EXISTS decisions (
  id BIGSERIAL PRIMARY KEY, t_s DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
  subject TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_subject ON decisions (subject);
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_s) WHERE state = 'succeeded';
CREATE TABLE IF NOT EXISTS files (
  file_id TEXT COLLATE "C" PRIMARY KEY, tenant TEXT COLLATE "C" NOT NULL, purpose TEXT NOT NULL,
  filename TEXT NOT NULL, bytes BIGINT NOT NULL, created_s DOUBLE PRECISION NOT NULL,
  expires_s DOUBLE PRECISION NOT NULL, content BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS files_tenant ON files (tenant, created_s);
CREATE TABLE IF NOT EXISTS batches (
  batch_id TEXT COLLATE "C" PRIMARY KEY, tenant TEXT COLLATE "C" NOT NULL,
  key_id TEXT NOT NULL, status TEXT NOT NULL, created_s DOUBLE PRECISION NOT NULL,
  doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_tenant ON batches (tenant, created_s);
CREATE TABLE IF NOT EXISTS leases (
  name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch BIGINT NOT NULL,
  expires_s DOUBLE PRECISION NOT NULL
);
"""

# Two schedulers starting at once on an empty database would race in CREATE TABLE IF NOT EXISTS
# (it is not atomic against itself in PostgreSQL); an advisory lock makes them take turns. The
# number is arbitrary, fixed so that every hashserve process agrees on it.
_SCHEMA_LOCK = 0x68617368  # "hash"

_COLS = ", ".join(JOB_COLUMNS)
_MARKS = ", ".join("%s" for _ in JOB_COLUMNS)
_SELECT = f"SELECT {_COLS} FROM jobs"
_INSERT_NEW = (
    f"INSERT INTO jobs ({_COLS}) VALUES ({_MARKS}) "
    # Naming the partial index's predicate lets PostgreSQL infer it as the conflict target.
    # Only a clash on (tenant, key) is swallowed; a clash on job_id still raises.
    "ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key <> '' DO NOTHING "
    "RETURNING job_id"
)
_UPSERT = (
    f"INSERT INTO jobs ({_COLS}) VALUES ({_MARKS}) ON CONFLICT (job_id) DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c in JOB_COLUMNS if c != "job_id")
)
_ACTIVE = ("queued", "assigned", "running")
_CONNECT_TIMEOUT_S = 10
_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"


def _no_nul(value: object) -> object:
    # PostgreSQL text cannot hold U+0000 (SQLite's can); an agent's error message with one would
    # otherwise fail the whole write of a tick's job states. It becomes U+FFFD.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _job_row(rec: JobRecord) -> tuple[Any, ...]:
    return tuple(_no_nul(v) for v in to_row(rec))


def describe(url: str) -> str:
    """`user@host:port/db` for messages: enough to find the server, never the password."""
    try:
        d = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparseable URL)"
    host = d.get("host") or "localhost"
    port = d.get("port") or 5432
    return f"{d.get('user') or ''}@{host}:{port}/{d.get('dbname') or ''}".lstrip("@")


class _Link:
    """One connection and its lock; reconnects at most once per call."""

    def __init__(self, conninfo: str, where: str, read_only: bool) -> None:
        self._conninfo = conninfo
        self._where = where
        self._read_only = read_only
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        # Run first in every guarded transaction (the fence check of a write).
        self.guard: Callable[[psycopg.Connection[Any]], None] | None = None
        with self._lock:
            self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=False)
        except psycopg.OperationalError as e:
            raise JournalUnavailable(
                f"cannot reach the PostgreSQL journal at {self._where}: {e}".strip()
            ) from e
        if self._read_only:
            conn.read_only = True
        self._conn = conn
        return conn

    def run(self, work: Callable[[psycopg.Connection[Any]], T], *, replayable: bool,
            guarded: bool = True) -> T:
        """`work` inside one transaction, committed on return, rolled back on an exception.

        replayable: running `work` twice is harmless even if the first run committed (reads).
        Otherwise it is run again only when the connection broke before the commit was sent.
        """
        with self._lock:
            if self._closed:
                raise JournalUnavailable(f"the journal at {self._where} is closed")
            for attempt in (1, 2):
                conn = self._conn
                if conn is None or conn.closed:
                    conn = self._connect()
                committing = False
                try:
                    with conn.transaction():
                        if guarded and self.guard is not None:
                            self.guard(conn)
                        result = work(conn)
                        committing = True  # the block's exit sends COMMIT
                    return result
                except psycopg.OperationalError as e:
                    if not (conn.broken or conn.closed):
                        raise  # a live connection refused the statement: not ours to retry
                    self._conn = None
                    conn.close()
                    if committing and not replayable:
                        raise JournalUnavailable(
                            f"the connection to the PostgreSQL journal at {self._where} broke "
                            "while committing: the write may or may not have been stored"
                        ) from e
                    if attempt == 2:
                        raise JournalUnavailable(
                            f"lost the PostgreSQL journal at {self._where} twice in one call: {e}"
                        ) from e
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresJournal:
    def __init__(self, url: str) -> None:
        self.url = url
        self.where = describe(url)
        params: dict[str, Any] = {"application_name": "hashserve-journal"}
        if "connect_timeout" not in conninfo_to_dict(url):
            params["connect_timeout"] = _CONNECT_TIMEOUT_S
        conninfo = make_conninfo(url, **params)
        self._write = _Link(conninfo, self.where, read_only=False)
        self._write.run(_create_schema, replayable=True)
        self._read = _Link(conninfo, self.where, read_only=True)
        self._epoch: int | None = None  # the fence (`fence`), stamped on each decision row

    def close(self) -> None:
        self._write.close()
        self._read.close()

    # ----- the leader lease ------------------------------------------------------------------
    # PostgreSQL's clock decides expiry, so schedulers on machines whose clocks differ agree.
    # A write's fence check takes the lease row FOR SHARE: a takeover (an UPDATE of that row)
    # waits for writes in flight to commit, and every write after it sees the new epoch.

    def try_lease(self, holder: str, ttl_s: float) -> tuple[Lease | None, Lease | None]:
        def work(c: psycopg.Connection[Any]) -> tuple[Lease | None, Lease | None]:
            got = lease_row(c.execute(try_lease_sql("%s", _NOW), (LEASE_NAME, holder, ttl_s))
                            .fetchone())
            current = lease_row(c.execute(
                "SELECT holder, epoch, expires_s FROM leases WHERE name=%s", (LEASE_NAME,)
            ).fetchone())
            return got, current

        return self._write.run(work, replayable=False, guarded=False)

    def renew_lease(self, holder: str, epoch: int, ttl_s: float) -> bool:
        return int(self._write.run(
            lambda c: c.execute(renew_lease_sql("%s", _NOW),
                                (ttl_s, LEASE_NAME, holder, epoch)).rowcount,
            replayable=True, guarded=False,
        )) == 1

    def release_lease(self, holder: str, epoch: int) -> None:
        self._write.run(
            lambda c: c.execute(
                "UPDATE leases SET expires_s = 0 WHERE name=%s AND holder=%s AND epoch=%s",
                (LEASE_NAME, holder, epoch),
            ),
            replayable=True, guarded=False,
        )

    def fence(self, epoch: int | None) -> None:
        self._epoch = epoch
        if epoch is None:
            self._write.guard = None
            return

        def check(c: psycopg.Connection[Any]) -> None:
            row = c.execute("SELECT epoch FROM leases WHERE name=%s FOR SHARE",
                            (LEASE_NAME,)).fetchone()
            if row is None or int(row[0]) != epoch:
                raise Fenced(
                    f"this scheduler's lease (epoch {epoch}) was taken over (epoch "
                    f"{None if row is None else int(row[0])}): it may write nothing more"
                )

        self._write.guard = check

    # ----- jobs ---------------------------------------------------------------------------

    def insert_jobs(self, records: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        if not records:
            return []
        return self._write.run(lambda conn: _insert(conn, records), replayable=False)

    def insert_job_groups(
        self, groups: Sequence[Sequence[JobRecord]]
    ) -> list[list[tuple[JobRecord, bool]] | Exception]:
        """One transaction per group (a round trip each); SQLite's version shares one commit."""
        out: list[list[tuple[JobRecord, bool]] | Exception] = []
        for group in groups:
            try:
                out.append(self.insert_jobs(group))
            except IdempotencyConflict as err:
                out.append(err)
        return out

    def write_jobs(
        self,
        records: Sequence[JobRecord],
        decisions: Sequence[tuple[float, str, str, str]] = (),
        *,
        synced: bool = True,
    ) -> None:
        if not records and not decisions:
            return

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                if not synced:
                    # Asynchronous commit: the server answers before its WAL is on disk.
                    cur.execute("SET LOCAL synchronous_commit = off")
                if records:
                    cur.executemany(_UPSERT, [_job_row(r) for r in records])
                if decisions:
                    cur.executemany(
                        "INSERT INTO decisions (t_s, kind, subject, detail, epoch) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        [(*(_no_nul(v) for v in d), self._epoch or 0) for d in decisions],
                    )

        self._write.run(work, replayable=False)

    def job_by_key(self, tenant: str, key: str) -> JobRecord | None:
        if not key:
            return None
        row = self._read.run(
            lambda c: c.execute(
                f"{_SELECT} WHERE tenant=%s AND idempotency_key=%s AND idempotency_key <> ''",
                (tenant, key),
            ).fetchone(),
            replayable=True,
        )
        return from_row(row) if row else None

    def get_job(self, job_id: str) -> JobRecord | None:
        row = self._read.run(
            lambda c: c.execute(f"{_SELECT} WHERE job_id=%s", (job_id,)).fetchone(),
            replayable=True,
        )
        return from_row(row) if row else None

    def list_jobs(
        self, tenant: str, state: str | None, page_size: int, after_job_id: str
    ) -> list[JobRecord]:
        sql, args = list_jobs_query(_SELECT, "%s", tenant, state, page_size, after_job_id)
        rows = self._read.run(lambda c: c.execute(sql, args).fetchall(), replayable=True)
        return [from_row(r) for r in rows]

    def load_active_jobs(self) -> list[JobRecord]:
        rows = self._read.run(
            lambda c: c.execute(
                f"{_SELECT} WHERE state = ANY(%s) ORDER BY submitted_s, job_id", (list(_ACTIVE),)
            ).fetchall(),
            replayable=True,
        )
        return [from_row(r) for r in rows]

    def count_jobs_by_state(self) -> dict[str, int]:
        rows = self._read.run(
            lambda c: c.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall(),
            replayable=True,
        )
        return {str(s): int(n) for s, n in rows}

    # ----- credentials --------------------------------------------------------------------

    def upsert_tenant(self, tenant: TenantRow) -> None:
        self._write.run(
            lambda c: c.execute(
                "INSERT INTO tenants (name, max_queued_jobs, submits_per_second) "
                "VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "max_queued_jobs=excluded.max_queued_jobs, "
                "submits_per_second=excluded.submits_per_second",
                (tenant.name, tenant.max_queued_jobs, tenant.submits_per_second),
            ),
            replayable=True,  # an upsert of the same values: twice is once
        )

    def get_tenant(self, name: str) -> TenantRow | None:
        row = self._read.run(
            lambda c: c.execute(
                "SELECT name, max_queued_jobs, submits_per_second FROM tenants WHERE name=%s",
                (name,),
            ).fetchone(),
            replayable=True,
        )
        return TenantRow(row[0], int(row[1]), float(row[2])) if row else None

    def add_api_key(self, key_id: str, key_hash: str, tenant: str, admin: bool) -> None:
        self._write.run(
            lambda c: c.execute(
                "INSERT INTO api_keys (key_id, key_hash, tenant, admin, created_s) "
                "VALUES (%s, %s, %s, %s, %s)",
                (key_id, key_hash, tenant, admin, time.time()),
            ),
            replayable=False,
        )

    def get_api_key(self, key_id: str) -> ApiKeyRow | None:
        row = self._read.run(
            lambda c: c.execute(
                "SELECT key_id, key_hash, tenant, admin, revoked_s FROM api_keys "
                "WHERE key_id=%s",
                (key_id,),
            ).fetchone(),
            replayable=True,
        )
        return ApiKeyRow(row[0], row[1], row[2], bool(row[3]), row[4] > 0) if row else None

    def revoke_api_key(self, key_id: str) -> bool:
        rowcount = self._write.run(
            lambda c: c.execute(
                "UPDATE api_keys SET revoked_s=%s WHERE key_id=%s AND revoked_s=0",
                (time.time(), key_id),
            ).rowcount,
            replayable=False,
        )
        return rowcount > 0

    def add_agent_credential(self, row: AgentCredentialRow) -> None:
        self._write.run(
            lambda c: c.execute(
                f"INSERT INTO agent_credentials ({CREDENTIAL_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                credential_values(row),
            ),
            replayable=False,
        )

    def find_agent_credential(self, secret_hash: str) -> AgentCredentialRow | None:
        row = self._read.run(
            lambda c: c.execute(
                f"SELECT {CREDENTIAL_COLUMNS} FROM agent_credentials WHERE secret_hash=%s",
                (secret_hash,),
            ).fetchone(),
            replayable=True,
        )
        return credential_row(row) if row else None

    def list_agent_credentials(self, agent_id: str = "") -> list[AgentCredentialRow]:
        where, args = ("WHERE agent_id=%s", (agent_id,)) if agent_id else ("", ())
        rows = self._read.run(
            lambda c: c.execute(
                f"SELECT {CREDENTIAL_COLUMNS} FROM agent_credentials {where} "
                "ORDER BY issued_s DESC, credential_id",
                args,
            ).fetchall(),
            replayable=True,
        )
        return [credential_row(r) for r in rows]

    def consume_bootstrap(self, credential_id: str, now_s: float) -> bool:
        rowcount = self._write.run(
            lambda c: c.execute(CONSUME_BOOTSTRAP, (now_s, credential_id, now_s)).rowcount,
            replayable=False,
        )
        return bool(rowcount and rowcount > 0)

    def touch_agent_credential(self, credential_id: str, now_s: float) -> None:
        self._write.run(
            lambda c: c.execute(
                "UPDATE agent_credentials SET last_used_s=%s WHERE credential_id=%s",
                (now_s, credential_id),
            ),
            replayable=True,
        )

    def revoke_agent_credentials(
        self, now_s: float, credential_id: str = "", agent_id: str = ""
    ) -> list[str]:
        target = revoke_target(credential_id, agent_id)
        if target is None:
            return []
        column, value = target
        rows = self._write.run(
            lambda c: c.execute(
                f"UPDATE agent_credentials SET revoked_s=%s WHERE {column}=%s AND revoked_s=0 "
                "RETURNING credential_id",
                (now_s, value),
            ).fetchall(),
            replayable=False,
        )
        return sorted(str(r[0]) for r in rows)

    def put_ops_state(self, key: str, value_json: str | None) -> None:
        if value_json is None:
            self._write.run(
                lambda c: c.execute("DELETE FROM ops_state WHERE key=%s", (key,)),
                replayable=True,
            )
            return
        self._write.run(
            lambda c: c.execute(
                "INSERT INTO ops_state (key, value, updated_s) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET "
                "value=excluded.value, updated_s=excluded.updated_s",
                (key, value_json, time.time()),
            ),
            replayable=True,
        )

    def put_accounting_rows(self, rows: Sequence[SiteHourRow]) -> None:
        if not rows:
            return
        values = [accounting_values(r) for r in rows]
        self._write.run(
            lambda c: c.cursor().executemany(
                f"INSERT INTO accounting ({ACCOUNTING_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (hour_start_s, site) DO "
                "UPDATE SET mining_mwh=excluded.mining_mwh, ai_mwh=excluded.ai_mwh, "
                "idle_mwh=excluded.idle_mwh, curtailed_mwh=excluded.curtailed_mwh, "
                "mining_revenue_usd=excluded.mining_revenue_usd, "
                "ai_revenue_usd=excluded.ai_revenue_usd, "
                "power_cost_usd=excluded.power_cost_usd, covered_s=excluded.covered_s",
                values,
            ),
            replayable=True,
        )

    def accounting_rows(
        self, site: str = "", start_s: float = -math.inf, end_s: float = math.inf
    ) -> list[SiteHourRow]:
        sql, args = accounting_query("%s", site, start_s, end_s)
        rows = self._read.run(lambda c: c.execute(sql, args).fetchall(), replayable=True)
        return [accounting_row(r) for r in rows]

    def forget_accounting_before(self, hour_start_s: float) -> int:
        return int(self._write.run(
            lambda c: c.execute(
                "DELETE FROM accounting WHERE hour_start_s < %s", (hour_start_s,)
            ).rowcount,
            replayable=True,
        ))

    def put_market_prices(self, rows: Sequence[ZoneHourPrice]) -> None:
        if not rows:
            return
        values = [market_price_values(r) for r in rows]
        self._write.run(
            lambda c: c.cursor().executemany(
                f"INSERT INTO market_prices ({MARKET_PRICE_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s) ON CONFLICT (hour_start_s, zone) DO UPDATE SET "
                "price_usd_per_mwh=excluded.price_usd_per_mwh, source=excluded.source, "
                "quotes=excluded.quotes",
                values,
            ),
            replayable=True,
        )

    def market_prices(
        self, zone: str = "", start_s: float = -math.inf, end_s: float = math.inf
    ) -> list[ZoneHourPrice]:
        sql, args = market_price_query("%s", zone, start_s, end_s)
        rows = self._read.run(lambda c: c.execute(sql, args).fetchall(), replayable=True)
        return [market_price_row(r) for r in rows]

    def forget_market_prices_before(self, hour_start_s: float) -> int:
        return int(self._write.run(
            lambda c: c.execute(
                "DELETE FROM market_prices WHERE hour_start_s < %s", (hour_start_s,)
            ).rowcount,
            replayable=True,
        ))

    def metered_jobs(
        self, tenant: str = "", start_s: float = -math.inf, end_s: float = math.inf
    ) -> list[MeteredJob]:
        sql, args = metered_jobs_query("%s", tenant, start_s, end_s)
        rows = self._read.run(lambda c: c.execute(sql, args).fetchall(), replayable=True)
        return [metered_job(r) for r in rows]

    def put_file(self, row: FileRow) -> None:
        values = file_values(row)
        self._write.run(
            lambda c: c.execute(
                f"INSERT INTO files ({FILE_COLUMNS}, content) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (file_id) DO UPDATE SET "
                "expires_s=excluded.expires_s, content=excluded.content, bytes=excluded.bytes",
                values,
            ),
            replayable=True,
        )

    def get_file(self, file_id: str) -> FileRow | None:
        row = self._read.run(
            lambda c: c.execute(
                f"SELECT {FILE_COLUMNS}, content FROM files WHERE file_id=%s", (file_id,)
            ).fetchone(),
            replayable=True,
        )
        return None if row is None else file_row(row, bytes(row[7]))

    def list_files(self, tenant: str, purpose: str = "") -> list[FileRow]:
        sql, args = list_files_query("%s", tenant, purpose)
        rows = self._read.run(lambda c: c.execute(sql, args).fetchall(), replayable=True)
        return [file_row(r) for r in rows]

    def delete_file(self, file_id: str) -> bool:
        return int(self._write.run(
            lambda c: c.execute("DELETE FROM files WHERE file_id=%s", (file_id,)).rowcount,
            replayable=True,
        )) > 0

    def forget_files_expired(self, now_s: float) -> int:
        return int(self._write.run(
            lambda c: c.execute("DELETE FROM files WHERE expires_s <= %s", (now_s,)).rowcount,
            replayable=True,
        ))

    def put_batch(self, row: BatchRow) -> None:
        values = batch_values(row)
        self._write.run(
            lambda c: c.execute(
                f"INSERT INTO batches ({BATCH_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (batch_id) DO UPDATE SET status=excluded.status, doc=excluded.doc",
                values,
            ),
            replayable=True,
        )

    def get_batch(self, batch_id: str) -> BatchRow | None:
        row = self._read.run(
            lambda c: c.execute(
                f"SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id=%s", (batch_id,)
            ).fetchone(),
            replayable=True,
        )
        return None if row is None else batch_row(row)

    def list_batches(self, tenant: str, limit: int, after_batch_id: str = "") -> list[BatchRow]:
        sql, args = list_batches_query("%s", tenant, limit, after_batch_id)
        rows = self._read.run(lambda c: c.execute(sql, args).fetchall(), replayable=True)
        return [batch_row(r) for r in rows]

    def open_batches(self) -> list[BatchRow]:
        rows = self._read.run(lambda c: c.execute(OPEN_BATCHES_SQL).fetchall(), replayable=True)
        return [batch_row(r) for r in rows]

    def load_ops_state(self) -> dict[str, str]:
        rows = self._read.run(
            lambda c: c.execute("SELECT key, value FROM ops_state ORDER BY key").fetchall(),
            replayable=True,
        )
        return {str(k): str(v) for k, v in rows}

    def decisions_for(self, subject: str) -> list[tuple[float, str, str]]:
        """(t_s, kind, json detail) recorded about a job or site, oldest first."""
        rows = self._read.run(
            lambda c: c.execute(
                "SELECT t_s, kind, detail FROM decisions WHERE subject=%s ORDER BY id",
                (subject,),
            ).fetchall(),
            replayable=True,
        )
        return [(float(t), str(k), str(d)) for t, k, d in rows]


def _create_schema(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def _insert(
    conn: psycopg.Connection[Any], records: Sequence[JobRecord]
) -> list[tuple[JobRecord, bool]]:
    """Inside a transaction: insert new jobs, return stored ones for known keys."""
    out: list[tuple[JobRecord, bool]] = []
    with conn.cursor() as cur:
        # All inserts in one round trip (psycopg pipelines executemany); a row comes back for
        # each job inserted, none for one whose key was taken.
        cur.executemany(_INSERT_NEW, [_job_row(r) for r in records], returning=True)
        inserted: list[bool] = []
        while True:
            inserted.append(cur.fetchone() is not None)
            if not cur.nextset():
                break
        for rec, fresh in zip(records, inserted, strict=True):
            if fresh:
                out.append((rec, False))
                continue
            # The key is taken, by an earlier job or one of this batch. ON CONFLICT waited for
            # any transaction writing it to end, and under READ COMMITTED this new statement
            # sees that transaction's row.
            row = cur.execute(
                f"{_SELECT} WHERE tenant=%s AND idempotency_key=%s AND idempotency_key <> ''",
                (rec.tenant, rec.idempotency_key),
            ).fetchone()
            if row is None:
                raise RuntimeError(
                    f"idempotency key {rec.idempotency_key!r} conflicted but no job holds it"
                )
            existing = from_row(row)
            if existing.spec_hash != rec.spec_hash:
                raise IdempotencyConflict(existing)
            out.append((existing, True))
    return out
