"""Accounting of a fault run from the journal itself: acknowledged, completed, lost, duplicated.

A job is *acknowledged* when the customer got an answer to its submit (its id is known). At the
end of a run every acknowledged job must be in the journal and have succeeded (else it is *lost*)
and must have been answered exactly once: the control loop writes one decision row of kind
'outcome' each time it accepts a result, so a job with more than one such row was answered twice
(*duplicated*); so is an idempotency key that made more than one job. Used by the chaos tests and
by `bench/soak.py`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = ("succeeded", "failed", "cancelled", "expired")

# Every run's counts, printed together at the end of the pytest session (see conftest.py).
RUNS: list[LedgerCounts] = []


@dataclass(frozen=True)
class LedgerCounts:
    run: str
    acknowledged: int
    completed: int
    lost: int
    duplicated: int
    other_final: dict[str, int] = field(default_factory=dict)  # e.g. cancelled on purpose
    lost_ids: tuple[str, ...] = ()
    duplicated_ids: tuple[str, ...] = ()

    def line(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in sorted(self.other_final.items()))
        return (
            f"{self.run}: acknowledged={self.acknowledged} completed={self.completed} "
            f"lost={self.lost} duplicated={self.duplicated}{extra}"
        )

    def as_json(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("lost_ids")
        d.pop("duplicated_ids")
        return d


class _Db:
    """A read-only connection to the journal: an SQLite file (beside the scheduler's own
    connection: WAL lets readers share it) or a PostgreSQL URL. Queries use `?` marks."""

    def __init__(self, journal: Path | str) -> None:
        self.postgres = isinstance(journal, str) and journal.startswith(("postgresql://",
                                                                         "postgres://"))
        if self.postgres:
            import psycopg

            self._pg = psycopg.connect(str(journal), autocommit=True)
        else:
            self._sqlite = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
            self._sqlite.execute("PRAGMA busy_timeout=10000")

    def execute(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            return list(self._pg.execute(sql.replace("?", "%s"), list(args)).fetchall())
        return list(self._sqlite.execute(sql, list(args)).fetchall())

    def close(self) -> None:
        (self._pg if self.postgres else self._sqlite).close()


def _connect(journal_path: Path | str) -> _Db:
    return _Db(journal_path)


def job_states(journal_path: Path | str, job_ids: Collection[str]) -> dict[str, str]:
    db = _connect(journal_path)
    try:
        out: dict[str, str] = {}
        ids = list(job_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" for _ in chunk)
            out.update(
                db.execute(f"SELECT job_id, state FROM jobs WHERE job_id IN ({marks})", chunk)
            )
        return out
    finally:
        db.close()


def wait_until_final(
    journal_path: Path | str, job_ids: Collection[str], timeout_s: float
) -> dict[str, str]:
    """Poll the journal until every job is terminal (or the time is up); their states."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = job_states(journal_path, job_ids)
        if all(states.get(j) in TERMINAL for j in job_ids) or time.monotonic() > deadline:
            return states
        time.sleep(0.25)


def outcome_rows(
    journal_path: Path | str, job_ids: Collection[str]
) -> dict[str, list[dict[str, object]]]:
    db = _connect(journal_path)
    try:
        out: dict[str, list[dict[str, object]]] = {j: [] for j in job_ids}
        ids = list(job_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" for _ in chunk)
            rows = db.execute(
                "SELECT subject, detail FROM decisions WHERE kind='outcome' AND subject IN "
                f"({marks}) ORDER BY id",
                chunk,
            )
            for subject, detail in rows:
                out[subject].append(json.loads(detail))
        return out
    finally:
        db.close()


def account(
    run: str,
    journal_path: Path | str,
    acked: Mapping[str, str],
    tenant: str | None = None,
    expect: str = "succeeded",
) -> LedgerCounts:
    """Count a run. `acked` maps each idempotency key (or any unique label) to the job id the
    customer was given; with `tenant`, keys are also checked to have made exactly one job."""
    job_ids = set(acked.values())
    states = job_states(journal_path, job_ids)
    answers = outcome_rows(journal_path, job_ids)
    other: dict[str, int] = {}
    for j in job_ids:
        state = states.get(j)
        if state is not None and state != expect:
            other[state] = other.get(state, 0) + 1
    # Not in the journal, or not finished as expected, or "succeeded" with no accepted answer.
    lost = sorted(
        j
        for j in job_ids
        if states.get(j) != expect or (expect == "succeeded" and not answers[j])
    )
    twice = {j for j in job_ids if len(answers[j]) > 1}
    if tenant is not None:
        twice |= _keys_with_two_jobs(journal_path, tenant, list(acked))
    counts = LedgerCounts(
        run=run,
        acknowledged=len(job_ids),
        completed=sum(1 for j in job_ids if states.get(j) == "succeeded"),
        lost=len(lost),
        duplicated=len(twice),
        other_final=other,
        lost_ids=tuple(lost[:20]),
        duplicated_ids=tuple(sorted(twice)[:20]),
    )
    RUNS.append(counts)
    print(counts.line())
    return counts


def _keys_with_two_jobs(journal_path: Path | str, tenant: str, keys: list[str]) -> set[str]:
    db = _connect(journal_path)
    try:
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" for _ in chunk)
            rows = db.execute(
                "SELECT idempotency_key, count(*) FROM jobs WHERE tenant=? AND idempotency_key "
                f"IN ({marks}) GROUP BY idempotency_key HAVING count(*) > 1",
                [tenant, *chunk],
            )
            found |= {f"key:{k}" for k, _ in rows}
        return found
    finally:
        db.close()
