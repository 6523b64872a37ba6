"""Watches end UNAVAILABLE when their scheduler stops serving them (a step-down, a stop), so
their customers watch again at the leader; the job goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from hashserve.client import embed_spec
from hashserve.v1 import customer_pb2, jobs_pb2
from scheduler.api.auth import Authenticator
from scheduler.api.customer_service import CustomerService
from scheduler.api.refusal import Refusal
from scheduler.control.loop import ControlLoop
from scheduler.control.watchers import WATCH_QUEUE_MAX, WatchEnded, Watchers
from scheduler.core.clock import ManualClock
from scheduler.core.models import DEFAULT_CATALOGUE
from scheduler.journal.sqlite import SqliteJournal
from tests.unit.scheduler.core.builders import EMBED_MODEL, T0_S


def test_every_open_watch_is_told_even_a_full_one() -> None:
    async def go() -> list[object]:
        watchers = Watchers()
        idle, full = watchers.subscribe("j1"), watchers.subscribe("j2")
        for _ in range(WATCH_QUEUE_MAX):
            full.put_nowait(customer_pb2.JobEvent())
        assert watchers.end_all("gone") == 2
        drained = []
        while not full.empty():
            drained.append(full.get_nowait())
        return [idle.get_nowait(), drained[-1]]

    assert asyncio.run(go()) == [WatchEnded("gone"), WatchEnded("gone")]


@pytest.mark.parametrize("how", ["halt", "stop"])
def test_a_watch_ends_unavailable_when_its_scheduler_stops_serving(
    tmp_path: Path, how: str
) -> None:
    journal = SqliteJournal(tmp_path / "journal.db")
    auth = Authenticator(journal)
    auth.create_tenant("acme", max_queued_jobs=100, rate=1e6)
    key = auth.issue_api_key("acme")[1]
    loop = ControlLoop(journal, DEFAULT_CATALOGUE, ["north_america"], ManualClock(T0_S))
    customers = CustomerService(loop, auth)
    principal = customers.principal((("authorization", f"Bearer {key}"),))

    async def go() -> tuple[list[jobs_pb2.JobState], Refusal]:
        await loop.start()
        (answer,) = await customers.submit(
            principal, [customer_pb2.SubmitJobRequest(spec=embed_spec(EMBED_MODEL, ["t"]))])
        events = customers.events(customers.own_job(principal, answer.job.id))
        seen = [(await anext(events)).job.state]  # queued: no node serves it
        if how == "halt":
            loop.halt()  # the lease is lost
        else:
            await loop.stop()
        with pytest.raises(Refusal) as refused:
            await asyncio.wait_for(anext(events), 5)
        if how == "halt":
            await loop.stop()
        return seen, refused.value

    seen, refused = asyncio.run(go())
    assert seen == [jobs_pb2.JOB_STATE_QUEUED]
    assert refused.code is grpc.StatusCode.UNAVAILABLE and "watch the job again" in refused.message
