"""The durable journal: where a job is written before its submit is acknowledged."""

from __future__ import annotations

from scheduler.journal.base import (
    ApiKeyRow,
    Fenced,
    IdempotencyConflict,
    Journal,
    JournalUnavailable,
    Lease,
    TenantRow,
)
from scheduler.journal.sqlite import SqliteJournal


def open_journal(url: str, synchronous: str = "FULL") -> Journal:
    """`sqlite:///path/to/file.db` (or a bare path), or `postgresql://...`.

    `synchronous` applies to SQLite (FULL: survives power loss; NORMAL: survives a killed
    process); PostgreSQL follows its server's own settings.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from scheduler.journal.postgres import PostgresJournal

        return PostgresJournal(url)
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if not path:
        raise ValueError(f"journal URL {url!r} names no file")
    return SqliteJournal(path, synchronous)


__all__ = [
    "ApiKeyRow",
    "Fenced",
    "IdempotencyConflict",
    "Journal",
    "JournalUnavailable",
    "Lease",
    "SqliteJournal",
    "TenantRow",
    "open_journal",
]
