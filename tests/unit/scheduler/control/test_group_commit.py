"""Group commit in the control loop: concurrent submits share commits, each answered on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import scheduler.control.loop as loop_module
from hashserve.v1 import jobs_pb2
from scheduler.control.agent_events import AgentHello
from scheduler.control.loop import ControlLoop
from scheduler.control.observe import MetricsObserver
from scheduler.core.clock import ManualClock
from scheduler.core.jobs import JobRecord
from scheduler.core.models import DEFAULT_CATALOGUE
from scheduler.journal.base import IdempotencyConflict
from scheduler.journal.sqlite import SqliteJournal
from scheduler.metrics.registry import SchedulerMetrics
from tests.unit.scheduler.core.builders import EMBED_MODEL, T0_S, make_node_info, make_record


def keyed(job_id: str, key: str, spec_hash: str) -> JobRecord:
    return make_record(job_id).evolve(idempotency_key=key, spec_hash=spec_hash)


def counting_commits(tmp_path: Path) -> tuple[SqliteJournal, list[int]]:
    """A journal, and the number of submit groups each of its group commits wrote."""
    journal = SqliteJournal(tmp_path / "journal.db")
    commits: list[int] = []
    real = journal.insert_job_groups

    def counting(groups):  # type: ignore[no-untyped-def]
        commits.append(len(groups))
        return real(groups)

    journal.insert_job_groups = counting  # type: ignore[method-assign]
    return journal, commits


def test_concurrent_submits_are_each_answered_and_all_durable(tmp_path: Path) -> None:
    journal, commits = counting_commits(tmp_path)
    loop = ControlLoop(journal, DEFAULT_CATALOGUE, ["north_america"], ManualClock(T0_S))

    async def go() -> list[object]:
        submits = [loop.submit_async([make_record(f"j{i}")]) for i in range(20)]
        submits.append(loop.submit_async([keyed("k1", "order-1", "a")]))
        submits.append(loop.submit_async([keyed("k2", "order-1", "a")]))  # a retry: same body
        submits.append(loop.submit_async([keyed("k3", "order-1", "b")]))  # same key, other body
        return await asyncio.gather(*submits, return_exceptions=True)

    answers = asyncio.run(go())
    # 23 submits took fewer commits than submits: they were grouped.
    assert sum(commits) == 23 and len(commits) < 23
    assert all(a == [(make_record(f"j{i}"), False)] for i, a in enumerate(answers[:20]))
    assert answers[20] == [(keyed("k1", "order-1", "a"), False)]
    deduped = answers[21]
    assert isinstance(deduped, list) and deduped[0][0].job_id == "k1" and deduped[0][1]
    assert isinstance(answers[22], IdempotencyConflict)
    # Durable and queued: the journal and the core both hold the 21 new jobs, nothing else.
    assert journal.count_jobs_by_state() == {"queued": 21}
    assert len(loop.core.jobs) == 21 and "k3" not in loop.core.jobs


def test_a_failed_commit_answers_every_waiting_submit(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.db")

    def broken(groups):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    journal.insert_job_groups = broken  # type: ignore[method-assign]
    loop = ControlLoop(journal, DEFAULT_CATALOGUE, ["north_america"], ManualClock(T0_S))

    async def go() -> list[object]:
        return await asyncio.gather(
            *(loop.submit_async([make_record(f"j{i}")]) for i in range(3)),
            return_exceptions=True,
        )

    assert all(isinstance(a, OSError) for a in asyncio.run(go()))
    assert loop.core.jobs == {}


def test_halting_answers_submits_waiting_on_a_hung_commit_as_unavailable(tmp_path: Path) -> None:
    import threading

    from scheduler.journal.base import JournalUnavailable

    journal = SqliteJournal(tmp_path / "journal.db")
    release = threading.Event()
    real = journal.insert_job_groups

    def hung(groups):  # type: ignore[no-untyped-def]
        release.wait(10)  # the database went away mid-commit
        return real(groups)

    journal.insert_job_groups = hung  # type: ignore[method-assign]
    loop = ControlLoop(journal, DEFAULT_CATALOGUE, ["north_america"], ManualClock(T0_S))

    async def go() -> tuple[list[object], object]:
        waiting = [asyncio.ensure_future(loop.submit_async([make_record(f"j{i}")]))
                   for i in range(3)]
        await asyncio.sleep(0.05)  # the first is committing, the others queued behind it
        loop.halt()  # the lease is lost
        answers: list[object] = list(await asyncio.gather(*waiting, return_exceptions=True))
        try:
            await loop.submit_async([make_record("late")])
            late: object = None
        except JournalUnavailable as err:
            late = err
        release.set()
        return answers, late

    answers, late = asyncio.run(go())
    assert all(isinstance(a, JournalUnavailable) and "stepped down" in str(a) for a in answers)
    assert isinstance(late, JournalUnavailable)


def test_a_new_leader_restores_ops_pins_and_drains_from_the_journal(tmp_path: Path) -> None:
    from scheduler.control.loop import PIN_KEY

    journal = SqliteJournal(tmp_path / "journal.db")
    journal.put_ops_state(f"{PIN_KEY}n1", f'["{EMBED_MODEL}"]')
    journal.put_ops_state("drain:n2", "true")
    loop = ControlLoop(journal, DEFAULT_CATALOGUE, ["north_america"], ManualClock(T0_S))

    async def go() -> None:
        await loop.start()
        await loop.stop()

    asyncio.run(go())
    assert loop.core.pinned == {"n1": {EMBED_MODEL}} and loop.core.drained == {"n2"}
    loop.core.connect_node(make_node_info("n1", models=(EMBED_MODEL,)), (), T0_S)
    assert loop.core.pinned == {"n1": {EMBED_MODEL}}  # the node's hello leaves the pin


def test_submits_arriving_while_the_loop_is_busy_share_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grpc.aio starts one call per loop turn, so a busy server's submits reach the writer one
    by one; the writer waits while the loop has other work ready, and they share a commit."""
    # The bound on the wait is not what is tested: a slow machine must not hit it.
    monkeypatch.setattr(loop_module, "GROUP_COMMIT_MAX_WAIT_S", 60.0)
    journal, commits = counting_commits(tmp_path)
    loop = ControlLoop(journal, DEFAULT_CATALOGUE, ["north_america"], ManualClock(T0_S))

    async def go() -> None:
        running = asyncio.get_running_loop()
        tasks: list[asyncio.Task[object]] = []

        def arrive(i: int) -> None:  # one call a turn, each turn scheduling the next
            if i < 19:
                running.call_soon(arrive, i + 1)
            tasks.append(asyncio.ensure_future(loop.submit_async([make_record(f"j{i}")])))

        running.call_soon(arrive, 0)
        while len(tasks) < 20:
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    metrics = SchedulerMetrics()
    loop.observers.append(MetricsObserver(metrics, DEFAULT_CATALOGUE))
    asyncio.run(go())
    assert commits == [20]
    assert journal.count_jobs_by_state() == {"queued": 20}
    # Ops see it too: one commit of 20 submits (and under load, 1 a commit means no grouping).
    sample = metrics.registry.get_sample_value
    assert sample("hashserve_journal_commit_submits_count") == 1
    assert sample("hashserve_journal_commit_submits_sum") == 20
    assert sample("hashserve_journal_commit_submits_bucket", {"le": "16.0"}) == 0
    assert sample("hashserve_journal_commit_seconds_count") == 1


def test_a_new_job_is_assigned_before_its_submit_is_answered(tmp_path: Path) -> None:
    """Placed as its commit lands: the assignment is on the agent's stream when the submit
    returns. The loop's own turns are kept out (no kick wakes it, and its timed turn is an hour
    away), so nothing else could have placed it."""
    journal = SqliteJournal(tmp_path / "journal.db")
    loop = ControlLoop(journal, DEFAULT_CATALOGUE, ["r1"], ManualClock(T0_S), tick_s=3600.0)
    blob = jobs_pb2.JobSpec(model=EMBED_MODEL, embed=jobs_pb2.EmbedInput(texts=["hi"]))

    async def go() -> list[str]:
        await loop.start()
        session = loop.open_session(AgentHello(make_node_info("n1"), ()))
        session.outbox.get_nowait()  # the welcome
        await asyncio.sleep(0)  # the turn the hello kicked has run
        loop.kick = lambda: None  # type: ignore[method-assign]
        await loop.submit_async([make_record("j1").evolve(spec_blob=blob.SerializeToString())])
        sent = [session.outbox.get_nowait() for _ in range(session.outbox.qsize())]
        await loop.stop()
        return [str(m.WhichOneof("msg")) for m in sent]  # type: ignore[attr-defined]

    assert asyncio.run(go()) == ["assign"]
    stored = journal.get_job("j1")
    assert stored is not None and stored.node_id == "n1"
