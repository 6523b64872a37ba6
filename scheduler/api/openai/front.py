"""The OpenAI-compatible HTTP front: what customers' OpenAI SDK code calls.

FastAPI on uvicorn, served in two places over one set of routes (`OpenAiFront`):
- by the scheduler process on `http_port`, calling the customer service in-process
  (`InProcessCalls`), so the API key (`Authorization: Bearer <key>`), tenants, admission, the
  journal and idempotency (`Idempotency-Key`) are the gRPC front's own, decided once, without a
  second hop; the Batch API and usage are served here too (`add_leader_routes`);
- by the stateless front processes (`hashserve front --http-port`), calling the leader over
  gRPC (`scheduler/front/openai.py`), with the Batch API and usage passed on to the leader's
  own HTTP port, as they read and write the journal.

Endpoints:
- `GET /v1/models`;
- `POST /v1/chat/completions` and `/v1/completions` (a raw prompt, no chat template), each
  with `stream` (server-sent events, `stream_options.include_usage`);
- `POST /v1/embeddings` (float or base64);
- the Batch API: `POST /v1/files` (purpose `batch`, JSONL), `GET /v1/files[/{id}[/content]]`,
  `DELETE /v1/files/{id}`; `POST /v1/batches`, `GET /v1/batches[/{id}]`,
  `POST /v1/batches/{id}/cancel` (`batches.py`);
- `GET /v1/usage`: the caller's metered tokens and charges per model and tier (hashserve's own).

Every answer carries `usage`. Requests and answers are translated in `schema.py`; errors follow
OpenAI's schema and status codes there: 400 invalid, 401, 404 unknown model or id, 409, 429 rate
or quota and 503 unavailable, both with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from hashserve.v1 import customer_pb2, jobs_pb2
from scheduler.api.auth import Principal, bearer_metadata
from scheduler.api.customer_service import CustomerService, Refusal
from scheduler.api.openai.batches import BatchService, file_object
from scheduler.api.openai.schema import (
    ENDPOINTS,
    TERMINAL,
    ApiError,
    ChatRequest,
    CompletionRequest,
    Endpoint,
    Knobs,
    chunk_chat,
    chunk_completion,
    from_status,
    invalid,
    job_error,
    parse,
    usage,
)
from scheduler.core.metering import UsageRow, aggregate
from scheduler.journal.base import Journal


class BatchCreate(BaseModel):
    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


def _usage_row(row: UsageRow) -> dict[str, Any]:
    return {"object": "usage", "model": row.model, "tier": row.tier,
            "hour_start": None if row.hour_start_s is None else int(row.hour_start_s),
            "jobs": row.jobs, "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens, "total_tokens": row.total_tokens,
            "charged_usd": row.charged_usd}


class CustomerCalls(Protocol):
    """What the HTTP front asks of the customer API, for a caller known by its API key. Each
    call raises `Refusal` with the gRPC status the same request would get over gRPC."""

    def check_key(self, api_key: str) -> None:
        """Refuse (UNAUTHENTICATED) a key known to be bad before the body is read; a front
        that cannot tell leaves it to the call."""

    async def submit(self, api_key: str,
                     request: customer_pb2.SubmitJobRequest) -> jobs_pb2.Job: ...

    def watch(self, api_key: str, job_id: str) -> AsyncIterator[customer_pb2.JobEvent]:
        """The job's state, then each token and change until a terminal state."""
        ...

    async def models(self, api_key: str) -> customer_pb2.ListModelsResponse: ...


class InProcessCalls:
    """`CustomerCalls` on this process's customer service (the leader's own HTTP port)."""

    def __init__(self, customers: CustomerService) -> None:
        self.customers = customers

    def principal(self, api_key: str) -> Principal:
        return self.customers.principal(bearer_metadata(api_key))

    def check_key(self, api_key: str) -> None:
        self.principal(api_key)

    async def submit(self, api_key: str,
                     request: customer_pb2.SubmitJobRequest) -> jobs_pb2.Job:
        answers = await self.customers.submit(self.principal(api_key), [request])
        return answers[0].job

    async def watch(self, api_key: str, job_id: str) -> AsyncIterator[customer_pb2.JobEvent]:
        rec = self.customers.own_job(self.principal(api_key), job_id)
        async for event in self.customers.events(rec):
            yield event

    async def models(self, api_key: str) -> customer_pb2.ListModelsResponse:
        self.principal(api_key)
        return self.customers.models()


def api_key_of(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        raise ApiError(401, "authentication_error",
                       "missing API key: send Authorization: Bearer <key>",
                       code="invalid_api_key")
    return auth[7:].strip()


def unauthenticated(r: Refusal) -> ApiError:
    return ApiError(401, "authentication_error", r.message, code="invalid_api_key")


async def json_body(request: Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        raise invalid("the body is not JSON") from None


class OpenAiFront:
    """The FastAPI app over the customer API: models, the completions and embeddings. Where the
    Batch API and usage are served is the caller's: `extra_routes` adds them."""

    def __init__(self, calls: CustomerCalls,
                 extra_routes: Callable[[FastAPI], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.calls = calls
        self.clock = clock
        self.app = FastAPI(title="hashserve OpenAI-compatible API", docs_url=None,
                           redoc_url=None)
        self._routes()
        if extra_routes is not None:
            extra_routes(self.app)

    # ----- plumbing --------------------------------------------------------------------------

    def _api_key(self, request: Request) -> str:
        key = api_key_of(request)
        try:
            self.calls.check_key(key)
        except Refusal as r:
            raise unauthenticated(r) from None
        return key

    async def _submit(self, request: Request, api_key: str,
                      spec: jobs_pb2.JobSpec) -> jobs_pb2.Job:
        key = request.headers.get("idempotency-key", "")
        try:
            return await self.calls.submit(
                api_key, customer_pb2.SubmitJobRequest(spec=spec, idempotency_key=key))
        except Refusal as r:
            raise from_status(r.code, r.message) from None

    async def _events(self, api_key: str,
                      job_id: str) -> AsyncIterator[customer_pb2.JobEvent]:
        try:
            async for event in self.calls.watch(api_key, job_id):
                yield event
        except Refusal as r:
            raise from_status(r.code, r.message) from None

    async def _finished(self, api_key: str, job_id: str) -> jobs_pb2.Job:
        async for event in self._events(api_key, job_id):
            if event.WhichOneof("event") == "job" and event.job.state in TERMINAL:
                failure = job_error(event.job)
                if failure is not None:
                    raise failure
                return event.job
        raise ApiError(503, "service_unavailable", "the job's watch ended before its result")

    # ----- endpoints -------------------------------------------------------------------------

    def _routes(self) -> None:
        app = self.app

        @app.exception_handler(ApiError)
        async def api_error(request: Request, exc: ApiError) -> JSONResponse:
            return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

        @app.get("/v1/models")
        async def models(request: Request) -> JSONResponse:
            key = self._api_key(request)
            try:
                listed = await self.calls.models(key)
            except Refusal as r:
                raise from_status(r.code, r.message) from None
            return JSONResponse({"object": "list", "data": [
                {"id": m.name, "object": "model", "created": 0, "owned_by": "hashserve"}
                for m in listed.models
            ]})

        for endpoint in ENDPOINTS.values():
            self._post(endpoint)

    def _post(self, endpoint: Endpoint) -> None:
        async def handle(request: Request) -> Response:
            api_key = self._api_key(request)
            body: Knobs = parse(endpoint.request, await json_body(request))
            spec = endpoint.spec(body)
            job = await self._submit(request, api_key, spec)
            created = int(self.clock())
            if endpoint.streams and getattr(body, "stream", False):
                options = getattr(body, "stream_options", None) or {}
                return StreamingResponse(
                    self._stream(api_key, job.id, body, created,
                                 bool(options.get("include_usage"))),
                    media_type="text/event-stream",
                )
            done = await self._finished(api_key, job.id)
            return JSONResponse(endpoint.respond(body, done, created))

        self.app.add_api_route(endpoint.path, handle, methods=["POST"], response_model=None)

    async def _stream(self, api_key: str, job_id: str, body: Knobs, created: int,
                      include_usage: bool) -> AsyncIterator[str]:
        is_chat = isinstance(body, ChatRequest)
        assert is_chat or isinstance(body, CompletionRequest)
        completion_id = f"chatcmpl-{job_id}" if is_chat else f"cmpl-{job_id}"

        def chunk(text: str | None, finish: str | None = None) -> str:
            if is_chat:
                delta = {} if text is None else {"content": text}
                doc = chunk_chat(completion_id, created, body.model, delta, finish)
            else:
                doc = chunk_completion(completion_id, created, body.model, text or "", finish)
            return f"data: {json.dumps(doc)}\n\n"

        if is_chat:
            first = chunk_chat(completion_id, created, body.model,
                               {"role": "assistant", "content": ""})
            yield f"data: {json.dumps(first)}\n\n"
        sent = ""
        try:
            async for event in self._events(api_key, job_id):
                kind = event.WhichOneof("event")
                if kind == "tokens":
                    # After a move that restarts the text, the next delta begins it anew; the
                    # customer's stream only ever grows.
                    text = event.tokens.text
                    if text:
                        sent += text
                        yield chunk(text)
                elif kind == "job" and event.job.state in TERMINAL:
                    failure = job_error(event.job)
                    if failure is not None:
                        raise failure
                    result = event.job.result
                    rest = result.text[len(sent):] if result.text.startswith(sent) else ""
                    if rest:
                        yield chunk(rest)
                    yield chunk(None, result.finish_reason or "stop")
                    if include_usage:
                        doc: dict[str, Any] = {
                            "id": completion_id, "created": created, "model": body.model,
                            "object": "chat.completion.chunk" if is_chat else "text_completion",
                            "choices": [], "usage": usage(result)}
                        yield f"data: {json.dumps(doc)}\n\n"
                    break
        except ApiError as err:
            yield f"data: {json.dumps(err.body())}\n\n"
        yield "data: [DONE]\n\n"


def add_leader_routes(calls: InProcessCalls, batches: BatchService,
                      journal: Journal) -> Callable[[FastAPI], None]:
    """The Batch API and usage, served where the journal is: the leader's own HTTP port."""

    def principal_of(request: Request) -> Principal:
        try:
            return calls.principal(api_key_of(request))
        except Refusal as r:
            raise unauthenticated(r) from None

    def add(app: FastAPI) -> None:
        @app.get("/v1/usage")
        async def usage_report(request: Request, start_time: float | None = None,
                               end_time: float | None = None,
                               group_by: str = "total") -> JSONResponse:
            principal = principal_of(request)
            if group_by not in ("total", "hour"):
                raise invalid("group_by must be total or hour", param="group_by")
            jobs = await asyncio.to_thread(
                journal.metered_jobs, principal.tenant,
                start_time if start_time is not None else float("-inf"),
                end_time if end_time is not None else float("inf"),
            )
            rows = aggregate(jobs, hourly=group_by == "hour")
            return JSONResponse({"object": "list", "data": [_usage_row(r) for r in rows]})

        @app.post("/v1/files")
        async def create_file(request: Request) -> JSONResponse:
            principal = principal_of(request)
            try:
                form = await request.form()
            except Exception as err:  # starlette raises its own parse errors
                raise invalid(f"the body is not a multipart form: {err}") from None
            upload = form.get("file")
            purpose = form.get("purpose")
            if not isinstance(upload, UploadFile) and not hasattr(upload, "read"):
                raise invalid("file is missing (a multipart file field)", param="file")
            if not isinstance(purpose, str):
                raise invalid("purpose is missing", param="purpose")
            content = await upload.read()  # type: ignore[union-attr]
            name = getattr(upload, "filename", None) or "upload.jsonl"
            return JSONResponse(await batches.create_file(principal, name, purpose, content))

        @app.get("/v1/files")
        async def list_files(request: Request, purpose: str = "") -> JSONResponse:
            principal = principal_of(request)
            data = await batches.list_files(principal, purpose)
            return JSONResponse({"object": "list", "data": data, "has_more": False})

        @app.get("/v1/files/{file_id}")
        async def get_file(request: Request, file_id: str) -> JSONResponse:
            row = await batches.own_file(principal_of(request), file_id)
            return JSONResponse(file_object(row))

        @app.get("/v1/files/{file_id}/content")
        async def file_content(request: Request, file_id: str) -> Response:
            row = await batches.own_file(principal_of(request), file_id)
            return Response(row.content or b"", media_type="application/jsonl")

        @app.delete("/v1/files/{file_id}")
        async def delete_file(request: Request, file_id: str) -> JSONResponse:
            return JSONResponse(await batches.delete_file(principal_of(request), file_id))

        @app.post("/v1/batches")
        async def create_batch(request: Request) -> JSONResponse:
            principal = principal_of(request)
            body: BatchCreate = parse(BatchCreate, await json_body(request))
            doc = await batches.create_batch(principal, body.input_file_id, body.endpoint,
                                             body.completion_window, body.metadata)
            return JSONResponse(doc)

        @app.get("/v1/batches")
        async def list_batches(request: Request, limit: int = 20,
                               after: str = "") -> JSONResponse:
            principal = principal_of(request)
            if not 1 <= limit <= 100:
                raise invalid("limit must be from 1 to 100", param="limit")
            docs, more = await batches.list_batches(principal, limit, after)
            return JSONResponse({"object": "list", "data": docs,
                                 "first_id": docs[0]["id"] if docs else None,
                                 "last_id": docs[-1]["id"] if docs else None,
                                 "has_more": more})

        @app.get("/v1/batches/{batch_id}")
        async def get_batch(request: Request, batch_id: str) -> JSONResponse:
            return JSONResponse(await batches.own_batch(principal_of(request), batch_id))

        @app.post("/v1/batches/{batch_id}/cancel")
        async def cancel_batch(request: Request, batch_id: str) -> JSONResponse:
            return JSONResponse(await batches.cancel_batch(principal_of(request), batch_id))

    return add




@dataclass
class HttpServing:
    """An ASGI app served by uvicorn on its own socket, as a task of this event loop."""

    server: Any  # uvicorn.Server (imported only when an HTTP port is on)
    task: asyncio.Task[None]
    port: int
    tls: bool

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


def start_http(app: FastAPI, host: str, port: int, tls_cert: str | None, tls_key: str | None,
               *, reuse_port: bool, name: str) -> HttpServing:
    """Serve `app` on host:port (0: any free port); HTTPS with the certificate when both are
    given (customers show an API key, never a client certificate). `reuse_port`: several
    processes share the port (SO_REUSEPORT) and the kernel spreads connections over them."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    tls = bool(tls_cert and tls_key)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                            ssl_certfile=tls_cert if tls else None,
                            ssl_keyfile=tls_key if tls else None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=name)
    return HttpServing(server, task, sock.getsockname()[1], tls)


__all__ = ["CustomerCalls", "HttpServing", "InProcessCalls", "OpenAiFront", "add_leader_routes",
           "start_http"]
