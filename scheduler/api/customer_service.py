"""The customer gRPC service: where a customer's request enters and its answer leaves.

Each call authenticates, validates, and then asks the control loop. A tenant sees only its own
jobs; another tenant's job id answers NOT_FOUND, exactly like an id that never existed, so ids
leak nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc

from hashserve.v1 import customer_pb2, customer_pb2_grpc, jobs_pb2
from scheduler.api.admission import DEFAULT_LIMITS, Admission, AdmissionLimits, AdmissionRefused
from scheduler.api.auth import Authenticator, AuthError, Principal
from scheduler.api.convert import (
    STATE_FROM_PROTO,
    TIER_TO_PROTO,
    canonical_spec_blob,
    job_to_proto,
    spec_hash,
)
from scheduler.api.refusal import Refusal
from scheduler.api.validation import (
    InvalidRequest,
    check_idempotency_key,
    check_job_count,
    check_job_id,
    validate_spec,
)
from scheduler.control.loop import ControlLoop, new_job_id
from scheduler.control.watchers import WatchEnded
from scheduler.core.jobs import JobRecord
from scheduler.core.models import ModelKind
from scheduler.journal.base import IdempotencyConflict, JournalUnavailable

__all__ = ["CustomerService", "Refusal", "answers", "journal_refusal"]

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


def _invalid(err: InvalidRequest, prefix: str = "") -> Refusal:
    return Refusal(getattr(grpc.StatusCode, err.code), prefix + err.message)


def journal_refusal(err: IdempotencyConflict | JournalUnavailable) -> Refusal:
    """What a customer is told of a submit the journal did not take."""
    if isinstance(err, IdempotencyConflict):
        return Refusal(grpc.StatusCode.ALREADY_EXISTS, str(err))
    # Not acknowledged: the customer retries with the same idempotency key.
    return Refusal(grpc.StatusCode.UNAVAILABLE, f"journal unavailable: {err}")


def answers(results: Sequence[tuple[JobRecord, bool]]) -> list[customer_pb2.SubmitJobResponse]:
    """A journalled submit's answer: each job as it stands, and whether it was made before."""
    return [
        customer_pb2.SubmitJobResponse(job=job_to_proto(rec), deduplicated=dedup)
        for rec, dedup in results
    ]


class CustomerService(customer_pb2_grpc.CustomerServiceServicer):
    """The gRPC servicer, over transport-neutral methods (`principal`, `submit`, `own_job`,
    `events`, `cancel`, `models`) that the HTTP front and the batch runner call in-process."""

    def __init__(self, loop: ControlLoop, auth: Authenticator,
                 limits: AdmissionLimits = DEFAULT_LIMITS,
                 max_watches_per_tenant: int = 1_000) -> None:
        self.loop = loop
        self.auth = auth
        self.admission = Admission(loop, limits)  # per-tenant rate and quota, capacity by tier
        self.max_watches_per_tenant = max_watches_per_tenant
        self._watches: dict[str, int] = {}  # open WatchJob streams per tenant

    # ----- transport-neutral ------------------------------------------------------------------

    def principal(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        try:
            return self.auth.customer(metadata)
        except AuthError as err:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, str(err)) from None

    def _build(self, principal: Principal, req: customer_pb2.SubmitJobRequest) -> JobRecord:
        now_s = self.loop.clock.now_s()
        key = check_idempotency_key(req.idempotency_key)
        data, filled = validate_spec(req.spec, self.loop.catalogue, self.loop.known_regions, now_s)
        blob = canonical_spec_blob(filled)
        # Hash what the customer sent (not the filled-in defaults, which depend on the time)
        # so that a retried submit matches its first try.
        return JobRecord(
            job_id=new_job_id(),
            tenant=principal.tenant,
            spec=data,
            spec_blob=blob,
            submitted_s=now_s,
            idempotency_key=key,
            spec_hash=spec_hash(canonical_spec_blob(req.spec)),
        )

    def check(self, req: customer_pb2.SubmitJobRequest, principal: Principal) -> None:
        """Raise the Refusal a submit of `req` would get from validation (nothing is kept)."""
        try:
            self._build(principal, req)
        except InvalidRequest as err:
            raise _invalid(err) from None

    async def submit(
        self,
        principal: Principal,
        reqs: Sequence[customer_pb2.SubmitJobRequest],
        *,
        batch: bool = False,
    ) -> list[customer_pb2.SubmitJobResponse]:
        """Validate, admit and journal `reqs`, all or none. `batch`: work fed by a batch (the
        Batch API), which admission counts against quota and capacity, not the per-request
        rate (a batch was admitted whole when it was created)."""
        try:
            results = await self.queue(principal, reqs, batch=batch)
        except (IdempotencyConflict, JournalUnavailable) as err:
            raise journal_refusal(err) from None
        return answers(results)

    def queue(
        self,
        principal: Principal,
        reqs: Sequence[customer_pb2.SubmitJobRequest],
        *,
        batch: bool = False,
    ) -> asyncio.Future[list[tuple[JobRecord, bool]]]:
        """`submit` up to the journal: validate and admit `reqs` (raises Refusal) and queue
        them for the next group commit. The future gives the jobs as journalled and whether
        each was made before, or raises what the journal raised. A caller with many submits
        (a front's batch) queues them all, then waits, with no task per submit."""
        records = self._built(principal, reqs)
        try:
            self.admission.admit(principal.tenant, records, rate_limited=not batch)
        except AdmissionRefused as refusal:
            return asyncio.ensure_future(self._refused(principal.tenant, records, refusal))
        try:
            return self.loop.submit_nowait(records)
        except JournalUnavailable as err:
            raise journal_refusal(err) from None

    def _built(
        self, principal: Principal, reqs: Sequence[customer_pb2.SubmitJobRequest]
    ) -> list[JobRecord]:
        records = []
        for i, req in enumerate(reqs):
            try:
                records.append(self._build(principal, req))
            except InvalidRequest as err:
                raise _invalid(err, f"jobs[{i}]: " if len(reqs) > 1 else "") from None
        keys = [r.idempotency_key for r in records if r.idempotency_key]
        if len(keys) != len(set(keys)):
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT, "two jobs in the batch share an idempotency_key"
            )
        return records

    async def _refused(
        self, tenant: str, records: Sequence[JobRecord], refusal: AdmissionRefused
    ) -> list[tuple[JobRecord, bool]]:
        """A retry whose jobs were all made before gets them, not RESOURCE_EXHAUSTED. Looked
        up only when refused: a submit that is admitted is deduplicated by its insert."""
        retried = await self._answered_before(tenant, records)
        if retried is not None:
            return retried
        raise Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, str(refusal))

    async def _answered_before(
        self, tenant: str, records: Sequence[JobRecord]
    ) -> list[tuple[JobRecord, bool]] | None:
        """When every record has an idempotency key already used for the same request, the
        stored jobs (each made before); else None. A key used for another request is left to
        the insert, which refuses it with ALREADY_EXISTS."""
        if not records or not all(r.idempotency_key for r in records):
            return None
        journal = self.loop.journal

        def lookup() -> list[JobRecord] | None:
            out = []
            for rec in records:
                stored = journal.job_by_key(tenant, rec.idempotency_key)
                if stored is None or stored.spec_hash != rec.spec_hash:
                    return None  # a new key (the common case) ends the lookup at once
                out.append(stored)
            return out

        stored_jobs = await asyncio.to_thread(lookup)
        if stored_jobs is None:
            return None
        return [(self.loop.core.jobs.get(s.job_id, s), True) for s in stored_jobs]

    def own_job(self, principal: Principal, job_id: str) -> JobRecord:
        try:
            check_job_id(job_id)
        except InvalidRequest as err:
            raise _invalid(err) from None
        rec = self.loop.get(job_id)
        if rec is None or rec.tenant != principal.tenant:
            raise Refusal(grpc.StatusCode.NOT_FOUND, f"no job {job_id}")
        return rec

    def events(self, rec: JobRecord) -> AsyncIterator[customer_pb2.JobEvent]:
        """The job's current state, the text generated so far, then each change and token until
        a terminal state. Refused (RESOURCE_EXHAUSTED) when the tenant already holds
        `max_watches_per_tenant` streams: each holds a queue in the scheduler's memory."""
        open_now = self._watches.get(rec.tenant, 0)
        if open_now >= self.max_watches_per_tenant:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"tenant {rec.tenant!r} has {open_now} job watches open, its limit; close some "
                "(or poll GetJob) and retry",
            )
        return self._events(rec)

    async def _events(self, rec: JobRecord) -> AsyncIterator[customer_pb2.JobEvent]:
        # Counted from the stream's first step to its end (a stream never started holds
        # nothing); the check in `events` may let a few through at once, never many.
        self._watches[rec.tenant] = self._watches.get(rec.tenant, 0) + 1
        queue = self.loop.watchers.subscribe(rec.job_id)
        try:
            # Subscribed before reading the state and the text so far, with no await between:
            # no change or token can fall between them, and none comes twice.
            current = self.loop.get(rec.job_id) or rec
            so_far = None if current.terminal else self.loop.streamed(rec.job_id)
            yield customer_pb2.JobEvent(job=job_to_proto(current))
            if current.terminal:
                return
            if so_far is not None and so_far[0]:
                yield customer_pb2.JobEvent(
                    tokens=customer_pb2.TokenDelta(text=so_far[0], tokens_so_far=so_far[1])
                )
            while True:
                event = await queue.get()
                if event is None:
                    return
                if isinstance(event, WatchEnded):
                    raise Refusal(grpc.StatusCode.UNAVAILABLE, event.reason)
                yield event
        finally:
            self.loop.watchers.unsubscribe(rec.job_id, queue)
            left = self._watches.get(rec.tenant, 1) - 1
            if left > 0:
                self._watches[rec.tenant] = left
            else:
                self._watches.pop(rec.tenant, None)

    def cancel(self, principal: Principal, job_id: str) -> JobRecord:
        rec = self.own_job(principal, job_id)
        if rec.terminal:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"job {rec.job_id} is already {rec.state.value}",
            )
        return self.loop.cancel(rec.job_id) or rec

    # ----- gRPC -------------------------------------------------------------------------------

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        try:
            return self.principal(context.invocation_metadata())
        except Refusal as r:
            await context.abort(r.code, r.message)
            raise  # unreachable: abort raises

    async def _submit(
        self, context: grpc.aio.ServicerContext, reqs: list[customer_pb2.SubmitJobRequest]
    ) -> list[customer_pb2.SubmitJobResponse]:
        principal = await self._principal(context)
        try:
            return await self.submit(principal, reqs)
        except Refusal as r:
            await context.abort(r.code, r.message)
            raise  # unreachable: abort raises

    async def SubmitJob(
        self, request: customer_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.SubmitJobResponse:
        return (await self._submit(context, [request]))[0]

    async def SubmitJobs(
        self, request: customer_pb2.SubmitJobsRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.SubmitJobsResponse:
        try:
            check_job_count(len(request.jobs))
        except InvalidRequest as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
        return customer_pb2.SubmitJobsResponse(jobs=await self._submit(context, list(request.jobs)))

    async def _own_job(self, context: grpc.aio.ServicerContext, job_id: str) -> JobRecord:
        principal = await self._principal(context)
        try:
            return self.own_job(principal, job_id)
        except Refusal as r:
            await context.abort(r.code, r.message)
            raise  # unreachable: abort raises

    async def GetJob(
        self, request: customer_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        return job_to_proto(await self._own_job(context, request.job_id))

    async def WatchJob(
        self, request: customer_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[customer_pb2.JobEvent]:
        rec = await self._own_job(context, request.job_id)
        try:
            stream = self.events(rec)
        except Refusal as r:
            await context.abort(r.code, r.message)
            raise  # unreachable: abort raises
        try:
            async for event in stream:
                yield event
        except Refusal as r:
            await context.abort(r.code, r.message)

    async def CancelJob(
        self, request: customer_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        principal = await self._principal(context)
        try:
            return job_to_proto(self.cancel(principal, request.job_id))
        except Refusal as r:
            await context.abort(r.code, r.message)
            raise  # unreachable: abort raises

    async def ListJobs(
        self, request: customer_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.ListJobsResponse:
        principal = await self._principal(context)
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"page_size {size} is over {MAX_PAGE_SIZE}"
            )
        after = request.page_token
        if after:
            try:
                check_job_id(after)
            except InvalidRequest:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token is malformed")
        state = None
        if request.state:
            if request.state not in STATE_FROM_PROTO:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"state {request.state} is unknown"
                )
            state = STATE_FROM_PROTO[request.state].value
        rows = await asyncio.to_thread(
            self.loop.journal.list_jobs, principal.tenant, state, size + 1, after
        )
        page = rows[:size]
        live = self.loop.core.jobs
        jobs = [job_to_proto(live.get(r.job_id, r), include_result=False) for r in page]
        token = page[-1].job_id if len(rows) > size else ""
        return customer_pb2.ListJobsResponse(jobs=jobs, next_page_token=token)

    async def ListModels(
        self, request: customer_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.ListModelsResponse:
        await self._principal(context)
        return self.models()

    def models(self) -> customer_pb2.ListModelsResponse:
        serving: dict[str, int] = {}
        for node in self.loop.core.nodes.values():
            if node.connected:
                for m in node.info.servable_models:
                    serving[m] = serving.get(m, 0) + 1
        models = []
        for spec in self.loop.catalogue.values():
            models.append(
                customer_pb2.Model(
                    name=spec.name,
                    kind=(
                        jobs_pb2.MODEL_KIND_EMBEDDING
                        if spec.kind is ModelKind.EMBEDDING
                        else jobs_pb2.MODEL_KIND_GENERATION
                    ),
                    max_input_tokens=spec.max_input_tokens,
                    max_output_tokens=spec.max_output_tokens,
                    embedding_dimensions=spec.embedding_dimensions,
                    max_batch=spec.max_batch,
                    prices=[
                        customer_pb2.TierPrice(
                            tier=TIER_TO_PROTO[tier],
                            usd_per_million_tokens=terms.usd_per_million_tokens,
                            latency_target_s=terms.latency_target_s,
                        )
                        for tier, terms in spec.tiers.items()
                    ],
                    nodes_serving=serving.get(spec.name, 0),
                    accelerators=sorted(spec.accelerators),
                )
            )
        return customer_pb2.ListModelsResponse(models=models)
