"""The Intake service (a front's batch of customers' submits): every item is answered on its
own, as a SubmitJobs sent alone would be, and the admitted ones share one commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from hashserve.client import embed_spec
from hashserve.v1 import customer_pb2, intake_pb2
from scheduler.api.auth import Authenticator
from scheduler.api.customer_service import CustomerService
from scheduler.api.intake_service import IntakeService
from scheduler.control.loop import ControlLoop
from scheduler.core.clock import ManualClock
from scheduler.core.models import DEFAULT_CATALOGUE
from tests.unit.scheduler.control.test_group_commit import counting_commits
from tests.unit.scheduler.core.builders import EMBED_MODEL, T0_S


def submit(key: str = "", text: str = "a text", model: str = EMBED_MODEL
           ) -> customer_pb2.SubmitJobsRequest:
    return customer_pb2.SubmitJobsRequest(jobs=[customer_pb2.SubmitJobRequest(
        spec=embed_spec(model, [text]), idempotency_key=key)])


def test_each_item_gets_its_own_answer_and_the_admitted_share_one_commit(
    tmp_path: Path,
) -> None:
    journal, commits = counting_commits(tmp_path)
    auth = Authenticator(journal)
    auth.create_tenant("acme", max_queued_jobs=100, rate=1e6)
    key = auth.issue_api_key("acme")[1]
    loop = ControlLoop(journal, DEFAULT_CATALOGUE, ["north_america"], ManualClock(T0_S))
    intake = IntakeService(CustomerService(loop, auth))
    items = [
        intake_pb2.IntakeItem(api_key=key, request=submit("order-1")),
        intake_pb2.IntakeItem(api_key="hs_not-a-key", request=submit()),
        intake_pb2.IntakeItem(api_key=key, request=submit(model="no-such-model")),
        intake_pb2.IntakeItem(api_key=key, request=submit("order-1")),  # a retry of the first
        intake_pb2.IntakeItem(api_key=key, request=submit("order-1", text="other")),
        intake_pb2.IntakeItem(api_key=key, request=submit()),
        intake_pb2.IntakeItem(api_key=key, request=customer_pb2.SubmitJobsRequest()),
    ]

    async def go() -> intake_pb2.SubmitManyResponse:
        return await intake.SubmitMany(
            intake_pb2.SubmitManyRequest(items=items), None)  # type: ignore[arg-type]

    results = asyncio.run(go()).results
    codes = [grpc.StatusCode.OK if r.code == 0 else next(
        c for c in grpc.StatusCode if c.value[0] == r.code) for r in results]
    assert codes == [
        grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
    ], [r.message for r in results]
    first, retry, unkeyed = (results[i].response.jobs[0] for i in (0, 3, 5))
    assert not first.deduplicated and retry.deduplicated and retry.job.id == first.job.id
    assert not unkeyed.deduplicated and unkeyed.job.id != first.job.id
    assert "no-such-model" in results[2].message
    # The four items past validation were written in one commit; two jobs were new.
    assert commits == [4]
    assert journal.count_jobs_by_state() == {"queued": 2}
