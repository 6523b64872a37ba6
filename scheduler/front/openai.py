"""The OpenAI-compatible HTTP API as a front serves it.

The completions, embeddings and models run through the front the way its gRPC calls do: a
submit is validated here and batched into the leader's Intake, and its answer is watched over
the leader's `WatchJob`, with the customer's own key; the leader authenticates it. The Batch API
and usage read and write the journal, so they are passed on, as they are, to the leader's own
HTTP port (`scheduler_http`): whichever of the addresses answers, since only the leader listens.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence

import grpc
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

from hashserve.v1 import customer_pb2, customer_pb2_grpc, jobs_pb2
from scheduler.api.auth import bearer_metadata
from scheduler.api.openai.schema import ApiError
from scheduler.api.refusal import Refusal
from scheduler.core.models import ModelSpec
from scheduler.front.batcher import RETRYABLE, SubmitBatcher
from scheduler.front.service import check_submits

log = logging.getLogger("hashserve.front")

# What is passed on to the leader, and back: the rest (hop-by-hop, lengths) is the proxy's own.
FORWARDED_REQUEST_HEADERS = ("authorization", "content-type", "idempotency-key", "accept")
FORWARDED_RESPONSE_HEADERS = ("content-type", "retry-after", "content-disposition")
LEADER_PATHS = ("/v1/files", "/v1/files/{file_id}", "/v1/files/{file_id}/content",
                "/v1/batches", "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/cancel",
                "/v1/usage")


def _refusal(err: grpc.aio.AioRpcError) -> Refusal:
    return Refusal(err.code(), err.details() or err.code().name)


class RemoteCalls:
    """`CustomerCalls` over gRPC to the leader, submits through the front's batcher."""

    def __init__(self, upstream: grpc.aio.Channel, batcher: SubmitBatcher,
                 catalogue: Mapping[str, ModelSpec], known_regions: Collection[str],
                 call_timeout_s: float = 10.0, failover_wait_s: float = 15.0) -> None:
        self.leader = customer_pb2_grpc.CustomerServiceStub(upstream)
        self.failover_wait_s = failover_wait_s
        self.batcher = batcher
        self.catalogue = catalogue
        self.known_regions = known_regions
        self.call_timeout_s = call_timeout_s

    def check_key(self, api_key: str) -> None:
        """The front holds no keys: the leader refuses a bad one on the call itself."""

    async def submit(self, api_key: str,
                     request: customer_pb2.SubmitJobRequest) -> jobs_pb2.Job:
        check_submits([request], self.catalogue, self.known_regions)
        answer = await self.batcher.submit(api_key,
                                           customer_pb2.SubmitJobsRequest(jobs=[request]))
        return answer.jobs[0].job

    async def watch(self, api_key: str, job_id: str) -> AsyncIterator[customer_pb2.JobEvent]:
        """The leader's WatchJob. A leader change ends that stream; the job is journalled, so
        until its first token the front watches it again on the next leader, for up to
        `failover_wait_s`. After a token it cannot: the next leader's text may start anew,
        and the customer's stream must only grow. It ends with the error (a 503), and the job
        goes on; a retry with its idempotency key finds it."""
        deadline_s = time.monotonic() + self.failover_wait_s
        tokens_sent = False
        while True:
            call = self.leader.WatchJob(customer_pb2.WatchJobRequest(job_id=job_id),
                                        metadata=bearer_metadata(api_key))
            try:
                async for event in call:
                    tokens_sent = tokens_sent or event.WhichOneof("event") == "tokens"
                    yield event
                return
            except grpc.aio.AioRpcError as err:
                if (err.code() not in RETRYABLE or tokens_sent
                        or time.monotonic() >= deadline_s):
                    raise _refusal(err) from None
                log.info("the watch of %s ended (%s): watching it again", job_id,
                         err.code().name)
            finally:
                call.cancel()
            await asyncio.sleep(0.2)

    async def models(self, api_key: str) -> customer_pb2.ListModelsResponse:
        try:
            reply: customer_pb2.ListModelsResponse = await self.leader.ListModels(
                customer_pb2.ListModelsRequest(), metadata=bearer_metadata(api_key),
                timeout=self.call_timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _refusal(err) from None
        return reply


def leader_base_urls(addresses: str, tls: bool) -> list[str]:
    """`host:port,...` or full URLs, as base URLs."""
    urls = []
    for part in addresses.split(","):
        part = part.strip().rstrip("/")
        if not part:
            continue
        urls.append(part if "://" in part else f"{'https' if tls else 'http'}://{part}")
    return urls


class LeaderHttp:
    """Passes a request on to the leader's HTTP port: the first of `base_urls` that accepts the
    connection, starting from the one that answered last (a standby does not listen)."""

    def __init__(self, base_urls: Sequence[str], verify: ssl.SSLContext | bool = True,
                 timeout_s: float = 60.0) -> None:
        self.base_urls = list(base_urls)
        self._client = httpx.AsyncClient(verify=verify, timeout=timeout_s)
        self._last = 0

    async def close(self) -> None:
        await self._client.aclose()

    async def forward(self, request: Request) -> Response:
        if not self.base_urls:
            raise ApiError(404, "invalid_request_error",
                           f"{request.url.path} is served by the scheduler's own HTTP port: "
                           "this front was started without --scheduler-http")
        body = await request.body()
        headers = {k: v for k in FORWARDED_REQUEST_HEADERS
                   if (v := request.headers.get(k)) is not None}
        tried: list[str] = []
        for i in range(len(self.base_urls)):
            at = (self._last + i) % len(self.base_urls)
            url = self.base_urls[at] + request.url.path
            if request.url.query:
                url += "?" + request.url.query
            try:
                reply = await self._client.request(request.method, url, headers=headers,
                                                   content=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as err:
                tried.append(f"{self.base_urls[at]} ({type(err).__name__})")
                continue
            except httpx.HTTPError as err:
                # The leader took the request and went: it may have acted on it.
                log.warning("the leader's HTTP port failed mid-request: %s", err)
                raise ApiError(503, "service_unavailable",
                               f"the scheduler did not answer ({type(err).__name__}); retry"
                               ) from None
            self._last = at
            out = {k: v for k in FORWARDED_RESPONSE_HEADERS
                   if (v := reply.headers.get(k)) is not None}
            return Response(reply.content, status_code=reply.status_code, headers=out)
        raise ApiError(503, "service_unavailable",
                       "no scheduler HTTP port answered: " + ", ".join(tried))

    def routes(self, app: FastAPI) -> None:
        async def passed_on(request: Request) -> Response:
            return await self.forward(request)

        for path in LEADER_PATHS:
            app.add_api_route(path, passed_on, methods=["GET", "POST", "DELETE"],
                              response_model=None, include_in_schema=False)


__all__ = ["LeaderHttp", "RemoteCalls", "leader_base_urls"]
