"""The Intake service: many customers' submits from a front in one call (`hashserve front`).

Every item is authenticated with its own customer's key and validated, admitted and journalled
exactly as a SubmitJobs sent alone would be (`CustomerService.queue`: validation, admission, the
control loop's group commit), and answered on its own: one item's refusal is its answer alone.
The items are queued for the journal together, so one commit writes them all, and the call
waits on their futures with no task per item. A front therefore saves the leader a gRPC call per
customer request, and nothing else: admission, idempotency and the journal are still decided
here, once.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from hashserve.v1 import customer_pb2, intake_pb2, intake_pb2_grpc
from scheduler.api.auth import bearer_metadata
from scheduler.api.customer_service import CustomerService, answers, journal_refusal
from scheduler.api.refusal import Refusal
from scheduler.api.validation import InvalidRequest, check_job_count
from scheduler.core.jobs import JobRecord
from scheduler.journal.base import IdempotencyConflict, JournalUnavailable

log = logging.getLogger("hashserve.intake")

# Items per call: a front flushes at most this many at once.
MAX_ITEMS = 1024


def _refusal(r: Refusal) -> intake_pb2.IntakeResult:
    return intake_pb2.IntakeResult(code=r.code.value[0], message=r.message)


class IntakeService(intake_pb2_grpc.IntakeServicer):
    def __init__(self, customers: CustomerService) -> None:
        self.customers = customers

    def _queue(
        self, item: intake_pb2.IntakeItem
    ) -> asyncio.Future[list[tuple[JobRecord, bool]]]:
        """One item, checked, admitted and queued for the next commit (raises Refusal)."""
        try:
            check_job_count(len(item.request.jobs))
        except InvalidRequest as err:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, err.message) from None
        principal = self.customers.principal(bearer_metadata(item.api_key))
        return self.customers.queue(principal, item.request.jobs)

    async def SubmitMany(
        self, request: intake_pb2.SubmitManyRequest, context: grpc.aio.ServicerContext
    ) -> intake_pb2.SubmitManyResponse:
        if len(request.items) > MAX_ITEMS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{len(request.items)} items in one call; at most {MAX_ITEMS}")
        results: list[intake_pb2.IntakeResult] = []
        waits: list[tuple[int, asyncio.Future[list[tuple[JobRecord, bool]]]]] = []
        for i, item in enumerate(request.items):
            try:
                waits.append((i, self._queue(item)))
                results.append(intake_pb2.IntakeResult())  # its answer comes below
            except Refusal as r:
                results.append(_refusal(r))
        outcomes = await asyncio.gather(*(w for _, w in waits), return_exceptions=True)
        for (i, _), outcome in zip(waits, outcomes, strict=True):
            results[i] = self._result(outcome)
        return intake_pb2.SubmitManyResponse(results=results)

    @staticmethod
    def _result(outcome: list[tuple[JobRecord, bool]] | BaseException) -> intake_pb2.IntakeResult:
        """One item's answer: its jobs as journalled, or what its submit raised."""
        if isinstance(outcome, Refusal):
            return _refusal(outcome)
        if isinstance(outcome, IdempotencyConflict | JournalUnavailable):
            return _refusal(journal_refusal(outcome))
        if isinstance(outcome, BaseException):
            # This item's alone: the others of the call may be journalled, and are answered.
            log.error("a submit from a front failed", exc_info=outcome)
            return intake_pb2.IntakeResult(
                code=grpc.StatusCode.INTERNAL.value[0],
                message=f"the scheduler failed this submit: {type(outcome).__name__}: {outcome}")
        return intake_pb2.IntakeResult(
            response=customer_pb2.SubmitJobsResponse(jobs=answers(outcome)))
