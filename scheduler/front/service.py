"""The customers' API as a front serves it: submits validated here and batched to the leader,
every other call forwarded to it with the customer's own key.

Validation runs on the same catalogue and regions as the leader's, so malformed work is refused
here and never costs the leader anything; the leader validates again all the same, and its answer
is the one that counts (a front with an older catalogue cannot let anything through).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence

import grpc

from hashserve.v1 import customer_pb2, customer_pb2_grpc, jobs_pb2
from scheduler.api.auth import AuthError, bearer_from_metadata, bearer_metadata
from scheduler.api.refusal import Refusal
from scheduler.api.validation import (
    InvalidRequest,
    check_idempotency_key,
    check_job_count,
    validate_spec,
)
from scheduler.core.models import ModelSpec
from scheduler.front.batcher import SubmitBatcher


def check_submits(jobs: Sequence[customer_pb2.SubmitJobRequest],
                  catalogue: Mapping[str, ModelSpec], known_regions: Collection[str]) -> None:
    """Refuse what the leader would refuse as malformed, naming the job of a batch."""
    now_s = time.time()
    for i, job in enumerate(jobs):
        prefix = f"jobs[{i}]: " if len(jobs) > 1 else ""
        try:
            check_idempotency_key(job.idempotency_key)
            validate_spec(job.spec, catalogue, known_regions, now_s)
        except InvalidRequest as err:
            raise Refusal(getattr(grpc.StatusCode, err.code), prefix + err.message) from None


class FrontCustomerService(customer_pb2_grpc.CustomerServiceServicer):
    def __init__(self, upstream: grpc.aio.Channel, batcher: SubmitBatcher,
                 catalogue: Mapping[str, ModelSpec], known_regions: Collection[str],
                 call_timeout_s: float = 10.0) -> None:
        self.leader = customer_pb2_grpc.CustomerServiceStub(upstream)
        self.batcher = batcher
        self.catalogue = catalogue
        self.known_regions = known_regions
        self.call_timeout_s = call_timeout_s

    @staticmethod
    async def _key(context: grpc.aio.ServicerContext) -> str:
        try:
            return bearer_from_metadata(context.invocation_metadata())
        except AuthError as err:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
            raise  # unreachable: abort raises

    def _check(self, jobs: list[customer_pb2.SubmitJobRequest]) -> None:
        check_submits(jobs, self.catalogue, self.known_regions)

    async def _submit(self, context: grpc.aio.ServicerContext,
                      jobs: list[customer_pb2.SubmitJobRequest]) -> customer_pb2.SubmitJobsResponse:
        key = await self._key(context)
        try:
            self._check(jobs)
            return await self.batcher.submit(key, customer_pb2.SubmitJobsRequest(jobs=jobs))
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)
            raise  # unreachable: abort raises

    async def SubmitJob(self, request: customer_pb2.SubmitJobRequest,
                        context: grpc.aio.ServicerContext) -> customer_pb2.SubmitJobResponse:
        return (await self._submit(context, [request])).jobs[0]

    async def SubmitJobs(self, request: customer_pb2.SubmitJobsRequest,
                         context: grpc.aio.ServicerContext) -> customer_pb2.SubmitJobsResponse:
        try:
            check_job_count(len(request.jobs))
        except InvalidRequest as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
        return await self._submit(context, list(request.jobs))

    # ----- forwarded -----------------------------------------------------------------------

    async def _forward(self, method: str, request: object,
                       context: grpc.aio.ServicerContext) -> object:
        key = await self._key(context)
        try:
            return await getattr(self.leader, method)(
                request, metadata=bearer_metadata(key),
                timeout=self.call_timeout_s)
        except grpc.aio.AioRpcError as err:
            await context.abort(err.code(), err.details() or "")
            raise  # unreachable: abort raises

    async def GetJob(self, request: customer_pb2.GetJobRequest,
                     context: grpc.aio.ServicerContext) -> jobs_pb2.Job:
        return await self._forward("GetJob", request, context)  # type: ignore[return-value]

    async def CancelJob(self, request: customer_pb2.CancelJobRequest,
                        context: grpc.aio.ServicerContext) -> jobs_pb2.Job:
        return await self._forward("CancelJob", request, context)  # type: ignore[return-value]

    async def ListJobs(self, request: customer_pb2.ListJobsRequest,
                       context: grpc.aio.ServicerContext) -> customer_pb2.ListJobsResponse:
        return await self._forward("ListJobs", request, context)  # type: ignore[return-value]

    async def ListModels(self, request: customer_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> customer_pb2.ListModelsResponse:
        return await self._forward("ListModels", request, context)  # type: ignore[return-value]

    async def WatchJob(self, request: customer_pb2.WatchJobRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[customer_pb2.JobEvent]:
        key = await self._key(context)
        call = self.leader.WatchJob(request, metadata=bearer_metadata(key))
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as err:
            # A leader change ends the stream: the customer watches again, from the job's state.
            await context.abort(err.code(), err.details() or "")
        finally:
            call.cancel()
