"""Submits from many customers, handed to the leader in batches (`Intake.SubmitMany`).

Items queue while a batch is in flight and go together in the next, as a journal's group commit
does: under load a batch grows, idle a submit goes alone at once. A batch the leader did not
answer (it died, or is being replaced) is sent again for as long as `failover_wait_s` allows,
but only its items with an idempotency key: the leader may have journalled them before it
went, and only a key makes a second try safe. The others are answered UNAVAILABLE, as the
leader's own port would answer them, and the customer decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import grpc

from hashserve.v1 import customer_pb2, intake_pb2, intake_pb2_grpc
from scheduler.api.refusal import Refusal
from scheduler.front.metrics import FrontMetrics

log = logging.getLogger("hashserve.front")

# The codes after which the leader may not have seen the call, or is not there: try again.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass
class _Item:
    api_key: str
    request: customer_pb2.SubmitJobsRequest
    deadline_s: float
    future: asyncio.Future[customer_pb2.SubmitJobsResponse]
    retry_safe: bool = field(init=False)

    def __post_init__(self) -> None:
        self.retry_safe = all(job.idempotency_key for job in self.request.jobs)


class SubmitBatcher:
    def __init__(self, channel: grpc.aio.Channel, max_items: int = 256, max_in_flight: int = 2,
                 failover_wait_s: float = 15.0, call_timeout_s: float = 10.0,
                 metrics: FrontMetrics | None = None) -> None:
        self.stub = intake_pb2_grpc.IntakeStub(channel)
        self.metrics = metrics
        self.max_items = max_items
        self.failover_wait_s = failover_wait_s
        self.call_timeout_s = call_timeout_s
        self._pending: list[_Item] = []
        self._slots = asyncio.Semaphore(max_in_flight)
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, api_key: str,
                     request: customer_pb2.SubmitJobsRequest) -> customer_pb2.SubmitJobsResponse:
        future: asyncio.Future[customer_pb2.SubmitJobsResponse] = (
            asyncio.get_running_loop().create_future())
        self._pending.append(_Item(api_key, request, time.monotonic() + self.failover_wait_s,
                                   future))
        self._wake()
        return await future

    def _wake(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="front-flush")

    async def _flush(self) -> None:
        while self._pending:
            await self._slots.acquire()
            batch, self._pending = self._pending[:self.max_items], self._pending[self.max_items:]
            if not batch:
                self._slots.release()
                break
            task = asyncio.create_task(self._send(batch))
            task.add_done_callback(lambda _: self._slots.release())

    async def _send(self, batch: list[_Item]) -> None:
        request = intake_pb2.SubmitManyRequest(
            items=[intake_pb2.IntakeItem(api_key=i.api_key, request=i.request) for i in batch])
        if self.metrics is not None:
            self.metrics.batch_submits.observe(len(batch))
        try:
            reply = await self.stub.SubmitMany(request, timeout=self.call_timeout_s)
        except grpc.aio.AioRpcError as err:
            if self.metrics is not None:
                self.metrics.batches.labels(err.code().name).inc()
            self._failed(batch, err)
            return
        except Exception as err:  # never leave a customer waiting on a broken batch
            log.exception("a batch to the leader failed")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(Refusal(grpc.StatusCode.INTERNAL, str(err)))
            return
        if self.metrics is not None:
            self.metrics.batches.labels(grpc.StatusCode.OK.name).inc()
        for item, result in zip(batch, reply.results, strict=True):
            if item.future.done():
                continue
            if result.code:
                code = _CODES.get(result.code, grpc.StatusCode.UNKNOWN)
                item.future.set_exception(Refusal(code, result.message))
            else:
                item.future.set_result(result.response)

    def _failed(self, batch: list[_Item], err: grpc.aio.AioRpcError) -> None:
        now = time.monotonic()
        again = []
        for item in batch:
            if item.future.done():
                continue
            if err.code() in RETRYABLE and item.retry_safe and now < item.deadline_s:
                again.append(item)
                continue
            if err.code() in RETRYABLE:
                item.future.set_exception(Refusal(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the scheduler did not answer ({err.code().name}: {err.details()}); not "
                    "acknowledged: send it again (an idempotency_key makes that safe)"))
            else:
                item.future.set_exception(Refusal(err.code(), err.details() or ""))
        if again:
            if self.metrics is not None:
                self.metrics.resent.inc(len(again))
            log.warning("the leader did not answer (%s): %d keyed submits wait for it",
                        err.code().name, len(again))
            asyncio.get_running_loop().call_later(0.2, self._requeue, again)

    def _requeue(self, items: list[_Item]) -> None:
        self._pending[:0] = items
        self._wake()
