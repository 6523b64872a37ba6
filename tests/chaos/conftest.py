"""Chaos suite plumbing: every run's ledger printed at the end of the session, and a log capture
for the in-process scheduler's refusals."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.chaos.ledger import RUNS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RUNS:
        return
    terminalreporter.section("chaos ledger: every acknowledged job accounted for")
    for counts in RUNS:
        terminalreporter.write_line(counts.line())
        if counts.lost_ids or counts.duplicated_ids:
            terminalreporter.write_line(
                f"    lost: {list(counts.lost_ids)} duplicated: {list(counts.duplicated_ids)}"
            )


class LogLines(logging.Handler):
    """Messages logged by one logger tree, kept for a test to search."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def grep(self, *words: str) -> list[str]:
        return [line for line in self.lines if all(w in line for w in words)]


@pytest.fixture(scope="module")
def scheduler_log() -> Iterator[LogLines]:
    handler = LogLines()
    logger = logging.getLogger("hashserve.scheduler")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
