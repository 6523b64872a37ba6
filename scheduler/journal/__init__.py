"""The durable journal: where a job is written before its submit is acknowledged."""

from __future__ import annotations

from scheduler.journal.base import ApiKeyRow, IdempotencyConflict, Journal, TenantRow
from scheduler.journal.sqlite import SqliteJournal


def open_journal(url: str) -> Journal:
    """`sqlite:///path/to/file.db` (or a bare path), or `postgresql://...`."""
    if url.startswith(("postgresql://", "postgres://")):
        from scheduler.journal.postgres import PostgresJournal

        return PostgresJournal(url)
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if not path:
        raise ValueError(f"journal URL {url!r} names no file")
    return SqliteJournal(path)


__all__ = [
    "ApiKeyRow",
    "IdempotencyConflict",
    "Journal",
    "SqliteJournal",
    "TenantRow",
    "open_journal",
]
