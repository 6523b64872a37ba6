"""The OpenAI-compatible HTTP front: what customers' OpenAI SDK code calls.

It translates each request into the customer gRPC API over a loopback channel, so auth (the
`Authorization: Bearer <API key>` header), tenants, admission, the journal and idempotency
(`Idempotency-Key`) are the gRPC front's own, decided once. Served by the scheduler process on
`http_port` (FastAPI on uvicorn).

Endpoints: `GET /v1/models`; `POST /v1/chat/completions` (with `stream`, server-sent events, and
`stream_options.include_usage`); `POST /v1/embeddings`. Every response carries `usage`. Errors
follow OpenAI's schema (`{"error": {"message", "type", "param", "code"}}`) and status codes: 400
invalid, 401 unauthenticated, 404 unknown model, 409 idempotency conflict, 429 rate or quota and
503 unavailable, both with `Retry-After`.

hashserve's own knobs are extra body fields (the SDK's `extra_body`): `tier` (interactive,
standard, flex), `deadline_s` (seconds from now) and `regions` (a list).

A chat's messages become the one prompt the generation backend takes (it applies the model's
chat template to it): the system messages, then the turns as "role: content" lines when there
are several, or the single user message as it is.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hashserve.v1 import customer_pb2, customer_pb2_grpc, jobs_pb2

RETRY_AFTER_S = 1
TIERS = {"interactive": jobs_pb2.TIER_INTERACTIVE, "standard": jobs_pb2.TIER_STANDARD,
         "flex": jobs_pb2.TIER_FLEX}
TERMINAL = {jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED,
            jobs_pb2.JOB_STATE_CANCELLED, jobs_pb2.JOB_STATE_EXPIRED}
# gRPC status -> (HTTP status, OpenAI error type).
STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error"),
}


class _Knobs(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    user: str | None = None
    tier: str = "interactive"
    deadline_s: float | None = Field(default=None, gt=0)
    regions: list[str] = Field(default_factory=list)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Knobs):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = Field(default=None, ge=0)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1, le=1)


class EmbeddingRequest(_Knobs):
    input: str | list[str] = Field(min_length=1)
    encoding_format: str = "float"


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.param, self.code = (
            status, kind, message, param, code)

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if self.status in (429, 503) else {}
        return JSONResponse(
            {"error": {"message": self.message, "type": self.kind, "param": self.param,
                       "code": self.code}},
            status_code=self.status, headers=headers,
        )


def _from_grpc(err: grpc.aio.AioRpcError) -> ApiError:
    status, kind = STATUS.get(err.code(), (500, "api_error"))
    code = {404: "model_not_found"}.get(status) if "model" in (err.details() or "") else None
    return ApiError(status, kind, err.details() or err.code().name, code=code)


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = [p.get("text", "") for p in content if p.get("type") == "text"]
    if len(parts) != len(content):
        raise ApiError(400, "invalid_request_error", "only text content parts are supported",
                       param="messages")
    return "".join(str(p) for p in parts)


def render_prompt(messages: Sequence[ChatMessage]) -> str:
    """The messages as the one prompt the generation backend takes (see the module docstring)."""
    system = [_text(m.content) for m in messages if m.role in ("system", "developer")]
    turns = [(m.role, _text(m.content)) for m in messages if m.role not in ("system", "developer")]
    if not turns:
        raise ApiError(400, "invalid_request_error", "messages need a user message",
                       param="messages")
    if len(turns) == 1 and turns[0][0] == "user":
        body = turns[0][1]
    else:
        body = "\n".join(f"{role}: {text}" for role, text in turns)
    return "\n\n".join([*system, body]) if system else body


def _spec(knobs: _Knobs) -> jobs_pb2.JobSpec:
    tier = TIERS.get(knobs.tier.lower())
    if tier is None:
        raise ApiError(400, "invalid_request_error",
                       f"tier must be one of {', '.join(TIERS)}", param="tier")
    spec = jobs_pb2.JobSpec(model=knobs.model, tier=tier, allowed_regions=knobs.regions)
    if knobs.deadline_s is not None:
        deadline = Timestamp()
        deadline.FromNanoseconds(int((time.time() + knobs.deadline_s) * 1e9))
        spec.deadline.CopyFrom(deadline)
    return spec


def _encode(values: Sequence[float], encoding_format: str) -> list[float] | str:
    """A vector as floats, or as OpenAI's base64 of little-endian float32 (what the SDK asks
    for by default, and decodes)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return list(values)


def _usage(result: jobs_pb2.JobResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


class OpenAiFront:
    """The FastAPI app, and the loopback channel it calls the gRPC front through."""

    def __init__(self, grpc_address: str) -> None:
        self.grpc_address = grpc_address
        self._channel: grpc.aio.Channel | None = None
        self.app = FastAPI(title="hashserve OpenAI-compatible API", docs_url=None,
                           redoc_url=None)
        self._routes()

    @property
    def stub(self) -> customer_pb2_grpc.CustomerServiceStub:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.grpc_address)
        return customer_pb2_grpc.CustomerServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    # ----- plumbing --------------------------------------------------------------------------

    @staticmethod
    def _metadata(request: Request) -> tuple[tuple[str, str], ...]:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise ApiError(401, "authentication_error",
                           "missing API key: send Authorization: Bearer <key>",
                           code="invalid_api_key")
        return (("authorization", f"Bearer {auth[7:].strip()}"),)

    @staticmethod
    async def _body(request: Request, model: type[BaseModel]) -> Any:
        try:
            raw = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_request_error", "the body is not JSON") from None
        try:
            return model.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ApiError(400, "invalid_request_error", f"{where}: {first['msg']}",
                           param=where or None) from None

    async def _submit(self, request: Request, spec: jobs_pb2.JobSpec) -> jobs_pb2.Job:
        key = request.headers.get("idempotency-key", "")
        try:
            reply = await self.stub.SubmitJob(
                customer_pb2.SubmitJobRequest(spec=spec, idempotency_key=key),
                metadata=self._metadata(request),
            )
        except grpc.aio.AioRpcError as err:
            raise _from_grpc(err) from None
        return reply.job

    async def _events(self, request: Request, job_id: str) -> AsyncIterator[customer_pb2.JobEvent]:
        call = self.stub.WatchJob(customer_pb2.WatchJobRequest(job_id=job_id),
                                  metadata=self._metadata(request))
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as err:
            raise _from_grpc(err) from None

    async def _finished(self, request: Request, job_id: str) -> jobs_pb2.Job:
        async for event in self._events(request, job_id):
            if event.WhichOneof("event") == "job" and event.job.state in TERMINAL:
                return self._check(event.job)
        raise ApiError(503, "service_unavailable", "the job's watch ended before its result")

    @staticmethod
    def _check(job: jobs_pb2.Job) -> jobs_pb2.Job:
        if job.state == jobs_pb2.JOB_STATE_SUCCEEDED:
            return job
        name = jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
        if job.state == jobs_pb2.JOB_STATE_EXPIRED:
            raise ApiError(503, "service_unavailable", f"job {job.id} expired: {job.error}")
        raise ApiError(500, "api_error", f"job {job.id} {name}: {job.error or 'no detail'}")

    # ----- endpoints -------------------------------------------------------------------------

    def _routes(self) -> None:
        app = self.app

        @app.exception_handler(ApiError)
        async def api_error(request: Request, exc: ApiError) -> JSONResponse:
            return exc.response()

        @app.get("/v1/models")
        async def models(request: Request) -> JSONResponse:
            try:
                listed = await self.stub.ListModels(customer_pb2.ListModelsRequest(),
                                                    metadata=self._metadata(request))
            except grpc.aio.AioRpcError as err:
                raise _from_grpc(err) from None
            return JSONResponse({"object": "list", "data": [
                {"id": m.name, "object": "model", "created": 0, "owned_by": "hashserve"}
                for m in listed.models
            ]})

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> JSONResponse:
            body: EmbeddingRequest = await self._body(request, EmbeddingRequest)
            if body.encoding_format not in ("float", "base64"):
                raise ApiError(400, "invalid_request_error",
                               "encoding_format must be float or base64",
                               param="encoding_format")
            texts = [body.input] if isinstance(body.input, str) else body.input
            spec = _spec(body)
            spec.embed.texts.extend(texts)
            job = await self._finished(request, (await self._submit(request, spec)).id)
            result = job.result
            usage = _usage(result)
            return JSONResponse({
                "object": "list", "model": body.model,
                "data": [{"object": "embedding", "index": i,
                          "embedding": _encode(e.values, body.encoding_format)}
                         for i, e in enumerate(result.embeddings)],
                "usage": {"prompt_tokens": usage["prompt_tokens"],
                          "total_tokens": usage["prompt_tokens"]},
            })

        @app.post("/v1/chat/completions", response_model=None)
        async def chat(request: Request) -> JSONResponse | StreamingResponse:
            body: ChatRequest = await self._body(request, ChatRequest)
            spec = _spec(body)
            spec.generate.prompt = render_prompt(body.messages)
            spec.generate.max_tokens = body.max_completion_tokens or body.max_tokens or 0
            if body.temperature is not None:
                spec.generate.temperature = body.temperature
            if body.seed is not None:
                spec.generate.seed = body.seed
            job = await self._submit(request, spec)
            completion_id = f"chatcmpl-{job.id}"
            created = int(time.time())
            if body.stream:
                include_usage = bool((body.stream_options or {}).get("include_usage"))
                return StreamingResponse(
                    self._stream(request, job.id, completion_id, created, body.model,
                                 include_usage),
                    media_type="text/event-stream",
                )
            done = await self._finished(request, job.id)
            return JSONResponse({
                "id": completion_id, "object": "chat.completion", "created": created,
                "model": body.model,
                "choices": [{"index": 0, "finish_reason": done.result.finish_reason or "stop",
                             "message": {"role": "assistant", "content": done.result.text},
                             "logprobs": None}],
                "usage": _usage(done.result),
            })

    async def _stream(self, request: Request, job_id: str, completion_id: str, created: int,
                      model: str, include_usage: bool) -> AsyncIterator[str]:
        def chunk(delta: Mapping[str, Any], finish: str | None = None,
                  usage: Mapping[str, int] | None = None) -> str:
            doc: dict[str, Any] = {
                "id": completion_id, "object": "chat.completion.chunk", "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish}]
                if usage is None else [],
            }
            if usage is not None:
                doc["usage"] = dict(usage)
            return f"data: {json.dumps(doc)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        sent = ""
        try:
            async for event in self._events(request, job_id):
                kind = event.WhichOneof("event")
                if kind == "tokens":
                    # After a move that restarts the text, the next delta begins it anew; the
                    # customer's stream only ever grows.
                    text = event.tokens.text
                    if text:
                        sent += text
                        yield chunk({"content": text})
                elif kind == "job" and event.job.state in TERMINAL:
                    job = self._check(event.job)
                    rest = job.result.text[len(sent):] if job.result.text.startswith(sent) else ""
                    if rest:
                        yield chunk({"content": rest})
                    yield chunk({}, job.result.finish_reason or "stop")
                    if include_usage:
                        yield chunk({}, usage=_usage(job.result))
                    break
        except ApiError as err:
            yield f"data: {json.dumps({'error': {'message': err.message, 'type': err.kind}})}\n\n"
        yield "data: [DONE]\n\n"


__all__ = ["ApiError", "OpenAiFront", "render_prompt"]
