"""Group commit in the SQLite journal: several submits in one transaction, each all or nothing;
the idempotency-key lookup served by its index (not a scan of the tenant's jobs); a single
insert as one statement that still refuses without writing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.core.jobs import JobRecord
from scheduler.journal import IdempotencyConflict, SqliteJournal
from tests.unit.scheduler.core.builders import make_record


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "journal.db")
    yield j
    j.close()


def keyed(job_id: str, key: str, spec_hash: str, tenant: str = "acme") -> JobRecord:
    return make_record(job_id, tenant=tenant).evolve(idempotency_key=key, spec_hash=spec_hash)


def test_groups_answer_as_separate_inserts_would(journal: SqliteJournal) -> None:
    journal.insert_jobs([keyed("j0", "old", "h0")])
    groups = [
        [keyed("j1", "a", "h1"), keyed("j2", "", "h2")],  # new jobs
        [keyed("j3", "old", "h0")],  # a retry of a job already journalled: dedup
        [keyed("j4", "a", "h1")],  # a retry of group 0's job, in the same commit: dedup
    ]
    result = journal.insert_job_groups(groups)
    assert result == [
        [(groups[0][0], False), (groups[0][1], False)],
        [(journal.get_job("j0"), True)],
        [(groups[0][0], True)],
    ]
    assert journal.get_job("j3") is None and journal.get_job("j4") is None
    assert journal.count_jobs_by_state() == {"queued": 3}


def test_a_conflicting_group_is_rolled_back_alone(journal: SqliteJournal) -> None:
    journal.insert_jobs([keyed("j0", "order-1", "h1")])
    groups = [
        [keyed("j1", "fine-1", "x")],
        [keyed("j2", "fine-2", "y"), keyed("j3", "order-1", "other")],  # the key is taken
        [keyed("j4", "fine-3", "z")],
    ]
    result = journal.insert_job_groups(groups)
    assert result[0] == [(groups[0][0], False)]
    assert isinstance(result[1], IdempotencyConflict) and result[1].existing.job_id == "j0"
    assert result[2] == [(groups[2][0], False)]
    # All of group 1 is gone, its first job included; the groups around it are written.
    assert journal.get_job("j2") is None and journal.get_job("j3") is None
    assert journal.get_job("j1") is not None and journal.get_job("j4") is not None


def test_a_group_breaking_a_constraint_is_rolled_back_alone(journal: SqliteJournal) -> None:
    result = journal.insert_job_groups(
        [[make_record("same-id")], [make_record("other"), make_record("same-id")]]
    )
    assert result[0] == [(make_record("same-id"), False)]
    assert isinstance(result[1], sqlite3.IntegrityError)
    assert journal.get_job("other") is None


def test_no_groups_commit_nothing(journal: SqliteJournal) -> None:
    assert journal.insert_job_groups([]) == []
    assert journal.insert_job_groups([[]]) == [[]]
    assert journal.count_jobs_by_state() == {}


def test_the_key_lookup_uses_the_idempotency_index(journal: SqliteJournal) -> None:
    # The partial unique index applies only when the query implies its WHERE clause; otherwise
    # SQLite walks every job of the tenant for each keyed submit (slower as the journal grows).
    journal.insert_jobs([keyed("j1", "order-1", "h1")])
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    assert journal.insert_jobs([keyed("j2", "order-1", "h1")])[0][1]  # a retry: looked up
    journal._db.set_trace_callback(None)
    lookups = [s for s in statements if s.startswith("SELECT") and "idempotency_key" in s]
    assert len(lookups) == 1
    plan = journal._db.execute("EXPLAIN QUERY PLAN " + lookups[0]).fetchall()
    assert "USING INDEX jobs_idempotency" in str(plan), plan


def test_synchronous_can_be_changed_and_read(journal: SqliteJournal) -> None:
    assert journal.synchronous() == "FULL"
    journal.set_synchronous("normal")
    assert journal.synchronous() == "NORMAL"
    with pytest.raises(ValueError):
        journal.set_synchronous("OFF")


def test_a_single_insert_refused_writes_nothing(journal: SqliteJournal) -> None:
    journal.insert_jobs([keyed("j1", "order-1", "h1")])
    with pytest.raises(IdempotencyConflict):
        journal.insert_jobs([keyed("j2", "order-1", "other")])
    with pytest.raises(sqlite3.IntegrityError):
        journal.insert_jobs([keyed("j1", "order-2", "h2")])  # the id is taken
    assert journal.get_job("j2") is None
    assert journal.count_jobs_by_state() == {"queued": 1}
    # The connection is not left inside a transaction.
    assert journal.insert_jobs([keyed("j3", "order-3", "h3")])[0][1] is False
