"""JobRecord <-> journal row. Shared by the SQLite and PostgreSQL backends."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from scheduler.core.accounting import SiteHourRow
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord, JobSpecData
from scheduler.core.market import ZoneHourPrice
from scheduler.core.metering import MeteredJob
from scheduler.core.models import ModelKind, Tier
from scheduler.journal.base import (
    AgentCredentialKind,
    AgentCredentialRow,
    BatchRow,
    FileRow,
    Lease,
)

JOB_COLUMNS = (
    "job_id", "tenant", "state", "attempt", "node_id", "site", "region", "idempotency_key",
    "spec_hash", "model", "kind", "tier", "input_tokens", "output_tokens_est", "deadline_s",
    "allowed_regions", "memory_mb", "value_usd", "spec_blob", "submitted_s", "assigned_s",
    "started_s", "finished_s", "lease_expires_s", "not_before_s", "error", "result_blob",
    "run_ms", "energy_kwh", "history", "tokens_used", "completion_tokens", "prefix_blocks",
    "load_ms",
)


def to_row(r: JobRecord) -> tuple[Any, ...]:
    s = r.spec
    return (
        r.job_id, r.tenant, r.state.value, r.attempt, r.node_id, r.site, r.region,
        r.idempotency_key, r.spec_hash, s.model, s.kind.value, s.tier.value, s.input_tokens,
        s.output_tokens_est, s.deadline_s, ",".join(sorted(s.allowed_regions)), s.memory_mb,
        s.value_usd, r.spec_blob, r.submitted_s, r.assigned_s, r.started_s, r.finished_s,
        r.lease_expires_s, r.not_before_s, r.error, r.result_blob, r.run_ms, r.energy_kwh,
        json.dumps(list(r.history)), r.tokens_used, r.completion_tokens,
        ",".join(f"{h:016x}" for h in r.spec.prefix_blocks), r.load_ms,
    )


def from_row(row: tuple[Any, ...]) -> JobRecord:
    d = dict(zip(JOB_COLUMNS, row, strict=True))
    spec = JobSpecData(
        model=d["model"],
        kind=ModelKind(d["kind"]),
        tier=Tier(d["tier"]),
        input_tokens=int(d["input_tokens"]),
        output_tokens_est=int(d["output_tokens_est"]),
        deadline_s=float(d["deadline_s"]),
        allowed_regions=frozenset(x for x in d["allowed_regions"].split(",") if x),
        memory_mb=int(d["memory_mb"]),
        value_usd=float(d["value_usd"]),
        prefix_blocks=tuple(int(h, 16) for h in str(d["prefix_blocks"]).split(",") if h),
    )
    return JobRecord(
        job_id=d["job_id"],
        tenant=d["tenant"],
        spec=spec,
        spec_blob=bytes(d["spec_blob"]),
        submitted_s=float(d["submitted_s"]),
        state=JobState(d["state"]),
        attempt=int(d["attempt"]),
        node_id=d["node_id"],
        site=d["site"],
        region=d["region"],
        idempotency_key=d["idempotency_key"],
        spec_hash=d["spec_hash"],
        assigned_s=float(d["assigned_s"]),
        started_s=float(d["started_s"]),
        finished_s=float(d["finished_s"]),
        lease_expires_s=float(d["lease_expires_s"]),
        not_before_s=float(d["not_before_s"]),
        error=d["error"],
        result_blob=bytes(d["result_blob"]),
        run_ms=float(d["run_ms"]),
        energy_kwh=float(d["energy_kwh"]),
        history=tuple(json.loads(d["history"])),
        tokens_used=int(d["tokens_used"]),
        completion_tokens=int(d["completion_tokens"]),
        load_ms=float(d["load_ms"]),
    )


def list_jobs_query(
    select: str, mark: str, tenant: str, state: str | None, page_size: int, after_job_id: str
) -> tuple[str, list[object]]:
    """One page of a tenant's jobs in id order, for a backend whose parameter mark is `mark`."""
    sql = f"{select} WHERE tenant={mark} AND job_id>{mark}"
    args: list[object] = [tenant, after_job_id]
    if state:
        sql += f" AND state={mark}"
        args.append(state)
    sql += f" ORDER BY job_id LIMIT {mark}"
    args.append(page_size)
    return sql, args


ACCOUNTING_COLUMNS = (
    "site, hour_start_s, mining_mwh, ai_mwh, idle_mwh, curtailed_mwh, mining_revenue_usd, "
    "ai_revenue_usd, power_cost_usd, covered_s"
)


def accounting_query(
    mark: str, site: str, start_s: float, end_s: float
) -> tuple[str, list[object]]:
    """Ledger rows of hours in [start_s, end_s), of one site or all, for a backend whose
    parameter mark is `mark`. Infinite bounds become finite (neither database takes inf)."""
    sql = (f"SELECT {ACCOUNTING_COLUMNS} FROM accounting "
           f"WHERE hour_start_s >= {mark} AND hour_start_s < {mark}")
    args: list[object] = [max(start_s, -1e18), min(end_s, 1e18)]
    if site:
        sql += f" AND site = {mark}"
        args.append(site)
    return sql + " ORDER BY hour_start_s, site", args


def accounting_values(row: SiteHourRow) -> tuple[object, ...]:
    return (
        row.site, row.hour_start_s, row.mining_mwh, row.ai_mwh, row.idle_mwh, row.curtailed_mwh,
        row.mining_revenue_usd, row.ai_revenue_usd, row.power_cost_usd, row.covered_s,
    )


def accounting_row(values: Sequence[object]) -> SiteHourRow:
    site, *numbers = values
    (hour, mining, ai, idle, curtailed, mining_usd, ai_usd, cost, covered) = (
        float(v) for v in numbers  # type: ignore[arg-type]
    )
    return SiteHourRow(str(site), hour, mining, ai, idle, curtailed, mining_usd, ai_usd, cost,
                       covered)


MARKET_PRICE_COLUMNS = "zone, hour_start_s, price_usd_per_mwh, source, quotes"


def market_price_query(
    mark: str, zone: str, start_s: float, end_s: float
) -> tuple[str, list[object]]:
    """Live price rows of hours in [start_s, end_s), of one zone or all (see `accounting_query`)."""
    sql = (f"SELECT {MARKET_PRICE_COLUMNS} FROM market_prices "
           f"WHERE hour_start_s >= {mark} AND hour_start_s < {mark}")
    args: list[object] = [max(start_s, -1e18), min(end_s, 1e18)]
    if zone:
        sql += f" AND zone = {mark}"
        args.append(zone)
    return sql + " ORDER BY hour_start_s, zone", args


def market_price_values(row: ZoneHourPrice) -> tuple[object, ...]:
    return (row.zone, row.hour_start_s, row.price_usd_per_mwh, row.source, row.quotes)


def market_price_row(values: Sequence[object]) -> ZoneHourPrice:
    zone, hour, price, source, quotes = values
    return ZoneHourPrice(str(zone), float(hour), float(price), str(source),  # type: ignore[arg-type]
                         int(quotes))  # type: ignore[call-overload]


def metered_jobs_query(
    mark: str, tenant: str, start_s: float, end_s: float
) -> tuple[str, list[object]]:
    """Succeeded jobs that finished in [start_s, end_s), of one tenant or all: the columns
    `MeteredJob.from_columns` takes."""
    sql = ("SELECT tenant, model, tier, finished_s, value_usd, input_tokens + output_tokens_est, "
           "tokens_used, completion_tokens FROM jobs WHERE state = 'succeeded' "
           f"AND finished_s >= {mark} AND finished_s < {mark}")
    args: list[object] = [max(start_s, -1e18), min(end_s, 1e18)]
    if tenant:
        sql += f" AND tenant = {mark}"
        args.append(tenant)
    return sql, args


def metered_job(values: Sequence[Any]) -> MeteredJob:
    tenant, model, tier, finished, value, estimated, used, completion = values
    return MeteredJob.from_columns(str(tenant), str(model), str(tier), float(finished),
                                   float(value), int(estimated), int(used), int(completion))


FILE_COLUMNS = "file_id, tenant, purpose, filename, bytes, created_s, expires_s"


def file_row(values: Sequence[Any], content: bytes | None = None) -> FileRow:
    file_id, tenant, purpose, filename, size, created, expires = values[:7]
    return FileRow(str(file_id), str(tenant), str(purpose), str(filename), int(size),
                   float(created), float(expires), content)


BATCH_COLUMNS = "batch_id, tenant, key_id, status, created_s, doc"

CREDENTIAL_COLUMNS = (
    "credential_id, kind, secret_hash, agent_id, site, region, issued_s, expires_s, agent_ids, "
    "uses_left, revoked_s, last_used_s, issued_by"
)
# One use of a live bootstrap token (placeholders %s; SQLite swaps in ?). A counted token goes
# from n to n-1 and is spent at 0; -1 is not counted.
CONSUME_BOOTSTRAP = (
    "UPDATE agent_credentials SET uses_left = CASE WHEN uses_left > 0 THEN uses_left - 1 "
    "ELSE uses_left END, last_used_s = %s "
    "WHERE credential_id = %s AND kind = 'bootstrap' AND uses_left != 0 AND revoked_s = 0 "
    "AND (expires_s = 0 OR expires_s > %s)"
)


def revoke_target(credential_id: str, agent_id: str) -> tuple[str, str] | None:
    """The column and value a revocation matches: one credential, or every one of an agent."""
    if credential_id:
        return "credential_id", credential_id
    return ("agent_id", agent_id) if agent_id else None


def credential_values(row: AgentCredentialRow) -> tuple[object, ...]:
    return (row.credential_id, row.kind.value, row.secret_hash, row.agent_id, row.site,
            row.region, row.issued_s, row.expires_s, ",".join(row.agent_ids), row.uses_left,
            row.revoked_s, row.last_used_s, row.issued_by)


def credential_row(values: Sequence[Any]) -> AgentCredentialRow:
    (credential_id, kind, secret_hash, agent_id, site, region, issued, expires, agent_ids,
     uses_left, revoked, last_used, issued_by) = values
    return AgentCredentialRow(
        str(credential_id), AgentCredentialKind(kind), str(secret_hash), str(agent_id),
        str(site), str(region), float(issued), float(expires),
        tuple(a for a in str(agent_ids).split(",") if a), int(uses_left), float(revoked),
        float(last_used), str(issued_by),
    )


def batch_row(values: Sequence[Any]) -> BatchRow:
    batch_id, tenant, key_id, status, created, doc = values
    return BatchRow(str(batch_id), str(tenant), str(key_id), str(status), float(created),
                    str(doc))


def file_values(row: FileRow) -> tuple[object, ...]:
    return (row.file_id, row.tenant, row.purpose, row.filename, row.size_bytes, row.created_s,
            row.expires_s, row.content or b"")


def batch_values(row: BatchRow) -> tuple[object, ...]:
    return (row.batch_id, row.tenant, row.key_id, row.status, row.created_s, row.doc)


def list_files_query(mark: str, tenant: str, purpose: str) -> tuple[str, list[object]]:
    sql = f"SELECT {FILE_COLUMNS} FROM files WHERE tenant = {mark}"
    args: list[object] = [tenant]
    if purpose:
        sql += f" AND purpose = {mark}"
        args.append(purpose)
    return sql + " ORDER BY created_s DESC, file_id DESC", args


def list_batches_query(
    mark: str, tenant: str, limit: int, after_batch_id: str
) -> tuple[str, list[object]]:
    sql = f"SELECT {BATCH_COLUMNS} FROM batches WHERE tenant = {mark}"
    args: list[object] = [tenant]
    if after_batch_id:
        after = f"(SELECT created_s FROM batches WHERE batch_id = {mark})"
        sql += f" AND (created_s < {after} OR (created_s = {after} AND batch_id < {mark}))"
        args += [after_batch_id, after_batch_id, after_batch_id]
    sql += f" ORDER BY created_s DESC, batch_id DESC LIMIT {mark}"
    args.append(limit)
    return sql, args


# The final states of a batch; any other is resumed after a restart.
BATCH_FINAL = ("completed", "failed", "expired", "cancelled")
OPEN_BATCHES_SQL = (
    f"SELECT {BATCH_COLUMNS} FROM batches WHERE status NOT IN "
    f"({', '.join(repr(s) for s in BATCH_FINAL)}) ORDER BY created_s"
)


# The leader lease: one row per name. `{now}` is the journal's clock (an SQL expression for
# PostgreSQL, a parameter for SQLite); the same holder keeps its epoch, a new one adds one.
LEASE_TABLE = "leases"


def try_lease_sql(mark: str, now: str) -> str:
    return (
        f"INSERT INTO leases (name, holder, epoch, expires_s) VALUES ({mark}, {mark}, 1, "
        f"{now} + {mark}) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
        "epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch "
        "ELSE leases.epoch + 1 END, expires_s = excluded.expires_s "
        f"WHERE leases.holder = excluded.holder OR leases.expires_s < {now} "
        "RETURNING holder, epoch, expires_s"
    )


def renew_lease_sql(mark: str, now: str) -> str:
    return (f"UPDATE leases SET expires_s = {now} + {mark} "
            f"WHERE name = {mark} AND holder = {mark} AND epoch = {mark}")


def lease_row(values: Sequence[Any] | None) -> Lease | None:
    if values is None:
        return None
    holder, epoch, expires = values
    return Lease(str(holder), int(epoch), float(expires))
