"""Which of the control loop's journal writes wait for the disk: what a customer is told does,
an assignment or a start does not (lost in a power cut, it is a job placed again)."""

from __future__ import annotations

from pathlib import Path

from hashserve.v1 import jobs_pb2
from scheduler.control.agent_events import AgentHello, JobOutcomeReport, JobStartedReport
from scheduler.control.loop import ControlLoop
from scheduler.core.clock import ManualClock
from scheduler.core.job_states import TERMINAL_STATES, JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.models import DEFAULT_CATALOGUE
from scheduler.journal.sqlite import SqliteJournal
from tests.unit.scheduler.core.builders import EMBED_MODEL, T0_S, make_node_info, make_record


def test_only_an_end_waits_for_the_disk(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.db")
    writes: list[tuple[list[JobState], bool]] = []
    real = journal.write_jobs

    def spy(records, decisions=(), *, synced=True):  # type: ignore[no-untyped-def]
        writes.append(([r.state for r in records], synced))
        real(records, decisions, synced=synced)

    journal.write_jobs = spy  # type: ignore[method-assign]
    clock = ManualClock(T0_S)
    loop = ControlLoop(journal, DEFAULT_CATALOGUE, ["r1"], clock)
    session = loop.open_session(AgentHello(make_node_info("n1"), ()))
    blob = jobs_pb2.JobSpec(model=EMBED_MODEL, embed=jobs_pb2.EmbedInput(texts=["hi"]))
    loop.submit([make_record("job-a").evolve(spec_blob=blob.SerializeToString())])
    loop.apply(loop.core.schedule(clock.now_s()))
    attempt = loop.core.jobs["job-a"].attempt
    loop.on_agent_message(session, JobStartedReport("job-a", attempt))
    loop.on_agent_message(session, JobOutcomeReport("job-a", attempt, b"", "", 10.0, 0.0, tokens=3))

    assert (["assigned"], False) in [([s.value for s in states], synced)
                                     for states, synced in writes]
    assert writes[-1] == ([JobState.SUCCEEDED], True)
    assert all(synced is any(s in TERMINAL_STATES for s in states) for states, synced in writes)
    stored = journal.get_job("job-a")
    assert isinstance(stored, JobRecord) and stored.state is JobState.SUCCEEDED
    # The connection is back at its own level after each unsynced write.
    assert journal.synchronous() == "FULL"


def test_an_unsynced_write_is_stored_and_leaves_the_level_as_it_was(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.db", synchronous="EXTRA")
    journal.write_jobs([make_record("j1").evolve(state=JobState.ASSIGNED, node_id="n1")],
                       synced=False)
    assert journal.synchronous() == "EXTRA"
    reopened = SqliteJournal(tmp_path / "journal.db")
    stored = reopened.get_job("j1")
    assert stored is not None and stored.state is JobState.ASSIGNED
    journal.close()
    reopened.close()
