"""The leader lease over a real (SQLite) journal: one leader, a standby that takes over when the
leader stops renewing, and an old leader that can write nothing and steps down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scheduler.journal.base import Fenced
from scheduler.journal.sqlite import SqliteJournal
from scheduler.runtime.leader import Leadership
from tests.unit.scheduler.core.builders import make_record

TTL_S = 0.4


def test_a_standby_takes_over_and_the_old_leader_is_fenced(tmp_path: Path) -> None:
    async def go() -> None:
        path = tmp_path / "journal.db"
        old_journal, new_journal = SqliteJournal(path), SqliteJournal(path)
        lost: list[str] = []
        old = Leadership(old_journal, "a/1", TTL_S, lost.append)
        new = Leadership(new_journal, "b/2", TTL_S, lambda reason: None)
        assert (await old.acquire()).epoch == 1
        old.start_renewing()
        standby = asyncio.create_task(new.acquire())
        await asyncio.sleep(3 * TTL_S)
        assert not standby.done()  # the leader renews: the standby waits
        old_journal.insert_jobs([make_record("while-leading")])
        # The leader pauses: it renews no more (as a SIGSTOPped process).
        assert old._task is not None
        old._task.cancel()
        lease = await asyncio.wait_for(standby, 5 * TTL_S)
        assert lease.epoch == 2
        with pytest.raises(Fenced):
            old_journal.insert_jobs([make_record("after-takeover")])
        assert new_journal.get_job("after-takeover") is None
        new_journal.insert_jobs([make_record("by-new")])
        # The old leader wakes: its next renewal is refused, and it steps down.
        old._task = None
        old._renewed_at = old.monotonic()
        old.start_renewing()
        await asyncio.sleep(TTL_S)
        assert lost and "another scheduler leads" in lost[0]
        await new.stop()
        old_journal.close()
        new_journal.close()

    asyncio.run(go())


def test_a_leader_that_cannot_renew_for_its_ttl_steps_down(tmp_path: Path) -> None:
    async def go() -> None:
        journal = SqliteJournal(tmp_path / "journal.db")
        lost: list[str] = []
        leader = Leadership(journal, "a/1", TTL_S, lost.append)
        await leader.acquire()

        def unreachable(*args: object) -> bool:
            raise ConnectionError("the journal is away")

        journal.renew_lease = unreachable  # type: ignore[method-assign, assignment]
        leader.start_renewing()
        await asyncio.sleep(2 * TTL_S)
        assert lost and "no renewal" in lost[0]
        journal.close()

    asyncio.run(go())


def test_a_clean_stop_hands_the_lease_over_at_once(tmp_path: Path) -> None:
    async def go() -> None:
        path = tmp_path / "journal.db"
        first, second = SqliteJournal(path), SqliteJournal(path)
        leader = Leadership(first, "a/1", 30.0, lambda reason: None)
        await leader.acquire()
        await leader.stop()
        lease = await asyncio.wait_for(Leadership(second, "b/2", 30.0,
                                                  lambda reason: None).acquire(), 2.0)
        assert lease.epoch == 2
        first.close()
        second.close()

    asyncio.run(go())
