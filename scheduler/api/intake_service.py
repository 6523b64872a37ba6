"""The Intake service: many customers' submits from a front in one call (`hashserve front`).

Every item is authenticated with its own customer's key and goes through `CustomerService.submit`
exactly as a SubmitJobs sent alone would; the items are submitted together, so the journal's
group commit writes them in one transaction. A front therefore saves the leader a gRPC call per
customer request, and nothing else: admission, idempotency and the journal are still decided
here, once.
"""

from __future__ import annotations

import asyncio

import grpc

from hashserve.v1 import customer_pb2, intake_pb2, intake_pb2_grpc
from scheduler.api.auth import bearer_metadata
from scheduler.api.customer_service import CustomerService
from scheduler.api.refusal import Refusal
from scheduler.api.validation import InvalidRequest, check_job_count

# Items per call: a front flushes at most this many at once.
MAX_ITEMS = 1024


class IntakeService(intake_pb2_grpc.IntakeServicer):
    def __init__(self, customers: CustomerService) -> None:
        self.customers = customers

    async def _one(self, item: intake_pb2.IntakeItem) -> intake_pb2.IntakeResult:
        jobs = list(item.request.jobs)
        try:
            try:
                check_job_count(len(jobs))
            except InvalidRequest as err:
                raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, err.message) from None
            principal = self.customers.principal(bearer_metadata(item.api_key))
            answers = await self.customers.submit(principal, jobs)
        except Refusal as r:
            return intake_pb2.IntakeResult(code=r.code.value[0], message=r.message)
        return intake_pb2.IntakeResult(response=customer_pb2.SubmitJobsResponse(jobs=answers))

    async def SubmitMany(
        self, request: intake_pb2.SubmitManyRequest, context: grpc.aio.ServicerContext
    ) -> intake_pb2.SubmitManyResponse:
        if len(request.items) > MAX_ITEMS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{len(request.items)} items in one call; at most {MAX_ITEMS}")
        results = await asyncio.gather(*(self._one(item) for item in request.items))
        return intake_pb2.SubmitManyResponse(results=results)
