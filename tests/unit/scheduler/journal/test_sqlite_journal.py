"""The SQLite journal's own behaviour: the codec's round trip of every JobRecord field, WAL
readers, durability settings, URLs. The contract every journal keeps (idempotency, transactions,
paging, credentials) runs against SQLite and PostgreSQL alike in
tests/integration/test_postgres_journal.py; the cases here that SQLite words differently stay."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord, JobSpecData
from scheduler.core.models import ModelKind, Tier
from scheduler.journal import IdempotencyConflict, SqliteJournal, TenantRow, open_journal
from scheduler.journal.base import AgentCredentialKind, AgentCredentialRow
from scheduler.journal.codec import JOB_COLUMNS, from_row, to_row
from tests.unit.scheduler.core.builders import GEN_MODEL, T0_S, make_record


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "journal.db")
    yield j
    j.close()


def keyed(job_id: str, key: str, spec_hash: str, tenant: str = "acme") -> JobRecord:
    return make_record(job_id, tenant=tenant).evolve(idempotency_key=key, spec_hash=spec_hash)


def full_record() -> JobRecord:
    """A record in which every field, the spec's included, differs from its default."""
    spec = JobSpecData(
        model=GEN_MODEL,
        kind=ModelKind.GENERATION,
        tier=Tier.INTERACTIVE,
        input_tokens=17,
        output_tokens_est=64,
        deadline_s=T0_S + 123.456789,
        allowed_regions=frozenset({"us-east", "eu-north"}),
        memory_mb=512,
        value_usd=1.23e-6,
        prefix_blocks=(0, 1, 2**64 - 1, 0x0123456789ABCDEF),
    )
    return JobRecord(
        job_id="job_" + "0123456789abcdef" * 2,
        tenant="initech",
        spec=spec,
        spec_blob=b"\x00\x01 spec \xff\x00",  # binary, with NULs
        submitted_s=T0_S + 0.000123,
        state=JobState.RUNNING,
        attempt=3,
        node_id="node-7",
        site="site-3",
        region="eu-north",
        idempotency_key="order-42",
        spec_hash="ab" * 32,
        assigned_s=T0_S + 1.5,
        started_s=T0_S + 2.25,
        finished_s=T0_S + 3.125,
        lease_expires_s=T0_S + 17.0,
        not_before_s=T0_S + 0.5,
        error="agent error: out of memory, 'quoted' \"twice\"",
        result_blob=b"\x00result\xfe",
        run_ms=812.75,
        energy_kwh=3.25e-5,
        history=("node-1#1", "node-2#2", "node-7#3"),
        tokens_used=377,
        completion_tokens=77,
        load_ms=812.5,
    )


# ----- the codec -------------------------------------------------------------------------------


def test_the_sample_sets_every_field() -> None:
    # If JobRecord or JobSpecData grows a field, this fails until the sample (and so the
    # round-trip tests below, and the codec) covers it.
    sample, default = full_record(), make_record()
    unset = [f.name for f in dataclasses.fields(JobRecord)
             if getattr(sample, f.name) == getattr(default, f.name)]
    assert unset == []
    unset = [f.name for f in dataclasses.fields(JobSpecData)
             if getattr(sample.spec, f.name) == getattr(default.spec, f.name)]
    assert unset == []
    # One column per field, the spec's fields flattened into the row.
    assert len(JOB_COLUMNS) == len(dataclasses.fields(JobRecord)) - 1 + len(
        dataclasses.fields(JobSpecData)
    )


def test_codec_round_trips_every_field() -> None:
    rec = full_record()
    assert from_row(to_row(rec)) == rec


def test_empty_collections_round_trip(journal: SqliteJournal) -> None:
    rec = make_record("plain")
    assert (rec.spec.allowed_regions, rec.history, rec.result_blob) == (frozenset(), (), b"")
    journal.insert_jobs([rec])
    assert journal.get_job("plain") == rec
    assert journal.get_job("missing") is None


# ----- idempotency -----------------------------------------------------------------------------


def test_same_key_other_hash_conflicts_and_the_batch_is_not_written(
    journal: SqliteJournal,
) -> None:
    journal.insert_jobs([keyed("j1", "order-1", "h1")])
    batch = [keyed("j2", "order-2", "h2"), keyed("j3", "order-1", "h-other")]
    with pytest.raises(IdempotencyConflict) as info:
        journal.insert_jobs(batch)
    assert info.value.existing.job_id == "j1"
    assert "order-1" in str(info.value) and "j1" in str(info.value)
    assert journal.get_job("j2") is None  # rolled back with the conflicting one
    assert journal.get_job("j3") is None
    # The journal is usable afterwards.
    assert journal.insert_jobs([batch[0]]) == [(batch[0], False)]


def test_keys_are_per_tenant_and_empty_keys_never_dedup(journal: SqliteJournal) -> None:
    a = keyed("a", "order-1", "h1", tenant="acme")
    b = keyed("b", "order-1", "h2", tenant="globex")
    c, d = keyed("c", "", "h1"), keyed("d", "", "h1")
    result = journal.insert_jobs([a, b, c, d])
    assert result == [(a, False), (b, False), (c, False), (d, False)]


# ----- upserts and decisions -------------------------------------------------------------------


def test_write_jobs_upserts_and_records_decisions(journal: SqliteJournal) -> None:
    rec = make_record("j1")
    journal.insert_jobs([rec])
    assigned = rec.evolve(state=JobState.ASSIGNED, attempt=1, node_id="n1")
    new = make_record("j2")  # written first by write_jobs: an upsert inserts it
    journal.write_jobs(
        [assigned, new],
        decisions=[
            (T0_S, "placement", "j1", '{"node": "n1"}'),
            (T0_S + 1, "outcome", "j1", '{"accepted": true}'),
        ],
    )
    assert journal.get_job("j1") == assigned
    assert journal.get_job("j2") == new
    assert journal.decisions_for("j1") == [
        (T0_S, "placement", '{"node": "n1"}'),
        (T0_S + 1, "outcome", '{"accepted": true}'),
    ]
    assert journal.decisions_for("j2") == []
    journal.write_jobs([])  # nothing to do is not an error


def test_write_jobs_is_one_transaction(journal: SqliteJournal) -> None:
    journal.insert_jobs([keyed("j1", "k1", "h"), keyed("j2", "k2", "h")])
    moved = keyed("j1", "k1", "h").evolve(state=JobState.ASSIGNED)
    clash = keyed("j2", "k1", "h")  # breaks the unique (tenant, idempotency key) index
    with pytest.raises(sqlite3.IntegrityError):
        journal.write_jobs([moved, clash], decisions=[(T0_S, "placement", "j1", "{}")])
    j1 = journal.get_job("j1")
    assert j1 is not None and j1.state is JobState.QUEUED
    assert journal.decisions_for("j1") == []


# ----- reading ---------------------------------------------------------------------------------


def test_list_jobs_pages_by_id_within_one_tenant(journal: SqliteJournal) -> None:
    journal.insert_jobs(
        [make_record(f"a{i}", tenant="acme") for i in (3, 1, 5, 2, 4)]
        + [make_record(f"b{i}", tenant="globex") for i in (1, 2)]
    )
    pages, after = [], ""
    while True:
        page = journal.list_jobs("acme", None, 2, after)
        if not page:
            break
        pages.append([r.job_id for r in page])
        after = page[-1].job_id
    assert pages == [["a1", "a2"], ["a3", "a4"], ["a5"]]
    assert [r.job_id for r in journal.list_jobs("globex", None, 10, "")] == ["b1", "b2"]
    assert journal.list_jobs("nobody", None, 10, "") == []


# ----- credentials -----------------------------------------------------------------------------


def test_api_keys_and_agent_tokens(journal: SqliteJournal) -> None:
    journal.add_api_key("kid", "hash1", "acme", admin=True)
    row = journal.get_api_key("kid")
    assert row is not None and (row.tenant, row.admin, row.revoked) == ("acme", True, False)
    assert journal.revoke_api_key("kid")
    row = journal.get_api_key("kid")
    assert row is not None and row.revoked
    assert journal.get_api_key("other") is None
    with pytest.raises(sqlite3.IntegrityError):
        journal.add_api_key("kid2", "hash1", "acme", admin=False)  # hashes are unique
    cred = AgentCredentialRow("tok-1", AgentCredentialKind.TOKEN, "th", "node-a", "site-a",
                              "north_america", 100.0, 200.0)
    journal.add_agent_credential(cred)
    assert journal.find_agent_credential("th") == cred
    assert journal.find_agent_credential("nope") is None


# ----- durability ------------------------------------------------------------------------------


def test_reopen_after_close_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "journal.db"  # missing folders are made
    first = SqliteJournal(path)
    rec = full_record()
    first.insert_jobs([rec])
    first.write_jobs([], decisions=[(T0_S, "placement", rec.job_id, "{}")])
    first.upsert_tenant(TenantRow("acme", 10, 1.0))
    first.add_api_key("kid", "hash", "acme", admin=False)
    first.close()
    second = SqliteJournal(path)
    try:
        assert second.get_job(rec.job_id) == rec
        assert second.load_active_jobs() == [rec]
        assert second.decisions_for(rec.job_id) == [(T0_S, "placement", "{}")]
        assert second.get_tenant("acme") == TenantRow("acme", 10, 1.0)
        assert second.get_api_key("kid") is not None
    finally:
        second.close()
    # WAL mode is a property of the file: any other connection sees it.
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_second_connection_sees_committed_jobs_while_open(journal: SqliteJournal) -> None:
    journal.insert_jobs([make_record("j1")])
    reader = SqliteJournal(journal.path)
    try:
        assert reader.get_job("j1") == make_record("j1")
    finally:
        reader.close()


@pytest.mark.parametrize("synchronous", ["OFF", "bogus"])
def test_unsafe_synchronous_settings_are_refused(tmp_path: Path, synchronous: str) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteJournal(tmp_path / "j.db", synchronous=synchronous)


def test_open_journal_by_url(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path}/a.db", str(tmp_path / "b.db")):
        j = open_journal(url)
        try:
            assert isinstance(j, SqliteJournal)
            j.insert_jobs([make_record("j1")])
            assert j.get_job("j1") is not None
        finally:
            j.close()
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()
    with pytest.raises(ValueError, match="names no file"):
        open_journal("sqlite:///")


def test_a_journal_written_before_jobs_kept_their_tokens_opens_and_reads_them_as_zero(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    j = SqliteJournal(path)
    j.insert_jobs([make_record("job_" + "a" * 32)])
    j.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs DROP COLUMN tokens_used")  # the schema before the columns
    db.execute("ALTER TABLE jobs DROP COLUMN completion_tokens")
    db.commit()
    db.close()
    j = SqliteJournal(path)
    try:
        rec = j.get_job("job_" + "a" * 32)
        assert rec is not None and rec.tokens_used == 0
        j.write_jobs([rec.evolve(tokens_used=42, completion_tokens=40)], [])
        again = j.get_job(rec.job_id)
        assert again is not None and (again.tokens_used, again.completion_tokens) == (42, 40)
    finally:
        j.close()

