"""OpenAI's wire format and hashserve's jobs, both ways: pure translation, no I/O.

Each POST endpoint is an `Endpoint`: how its body is checked (`parse`), the job it becomes
(`spec`), and the answer a finished job gives (`respond`). The live endpoints and the Batch API
use the same three, so a batch line is answered exactly as the same request sent alone.

hashserve's own knobs are extra body fields (the SDK's `extra_body`): `tier` (interactive,
standard, flex), `deadline_s` (seconds from now) and `regions` (a list). Errors follow OpenAI's
schema, `{"error": {"message", "type", "param", "code"}}`.

What is not supported is refused with a 400 that names the field, never ignored: `n` above 1,
`logprobs`, tools and function calls, `response_format` other than text, non-text content parts,
`echo`, `suffix` and `best_of` above 1.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hashserve.v1 import jobs_pb2

RETRY_AFTER_S = 1
# OpenAI's /v1/completions default; chat has none (the model's default applies).
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
TIERS = {"interactive": jobs_pb2.TIER_INTERACTIVE, "standard": jobs_pb2.TIER_STANDARD,
         "flex": jobs_pb2.TIER_FLEX}
TERMINAL = {jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED,
            jobs_pb2.JOB_STATE_CANCELLED, jobs_pb2.JOB_STATE_EXPIRED}
# gRPC status -> (HTTP status, OpenAI error type).
STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error"),
}
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user",
              "assistant": "assistant"}


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.param, self.code = (
            status, kind, message, param, code)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_S)} if self.status in (429, 503) else {}


def invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", message, param=param)


def from_status(code: grpc.StatusCode, message: str) -> ApiError:
    status, kind = STATUS.get(code, (500, "api_error"))
    err_code = "model_not_found" if status == 404 and "model" in message else None
    return ApiError(status, kind, message or code.name, code=err_code)


def parse(model: type[BaseModel], raw: Any) -> Any:
    """`raw` (decoded JSON) as `model`, or the 400 that names the first bad field."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise invalid(f"{where}: {first['msg']}" if where else first["msg"],
                      param=where or None) from None


# ----- requests --------------------------------------------------------------------------------


class Knobs(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    user: str | None = None
    tier: str | None = None
    deadline_s: float | None = Field(default=None, gt=0)
    regions: list[str] = Field(default_factory=list)


def _none_or_default(value: Any, default: Any, name: str) -> None:
    if value is not None and value != default:
        raise ValueError(f"{name} is not supported (only {default!r})")


class _Generation(Knobs):
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    logprobs: Any = None
    top_logprobs: Any = None

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value not in (None, False, 0):
            raise ValueError("logprobs are not supported")
        return value

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: Any = None
    functions: Any = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    @field_validator("tools", "functions", "tool_choice")
    @classmethod
    def _no_tools(cls, value: Any) -> Any:
        if value not in (None, [], "none"):
            raise ValueError("tools and function calls are not supported")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError("only the text response format is supported")
        return value


class CompletionRequest(_Generation):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        _none_or_default(value, False, "echo")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        _none_or_default(value, None, "suffix")
        return value

    @field_validator("best_of")
    @classmethod
    def _one_best(cls, value: int | None) -> int | None:
        _none_or_default(value, 1, "best_of")
        return value


class EmbeddingRequest(Knobs):
    input: str | list[str] = Field(min_length=1)
    encoding_format: str = "float"
    dimensions: int | None = None

    @field_validator("encoding_format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("float", "base64"):
            raise ValueError("encoding_format must be float or base64")
        return value


# ----- request -> job ----------------------------------------------------------------------------


def text_of(content: str | list[dict[str, Any]] | None, param: str = "messages") -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = [p.get("text", "") for p in content if p.get("type") == "text"]
    if len(parts) != len(content):
        raise invalid("only text content parts are supported", param=param)
    return "".join(str(p) for p in parts)


def chat_messages(messages: Sequence[ChatMessage]) -> list[jobs_pb2.ChatMessage]:
    """The conversation for the model's chat template; OpenAI's developer role is a system one."""
    out = []
    for i, m in enumerate(messages):
        role = CHAT_ROLES.get(m.role)
        if role is None:
            raise invalid(f"messages[{i}].role {m.role!r} is not supported; one of "
                          f"{', '.join(CHAT_ROLES)}", param=f"messages.{i}.role")
        out.append(jobs_pb2.ChatMessage(role=role,
                                        content=text_of(m.content, f"messages.{i}.content")))
    if not any(m.role == "user" for m in out):
        raise invalid("messages need a user message", param="messages")
    return out


def job_spec(knobs: Knobs, default_tier: str = "interactive",
             deadline_at_s: float | None = None, now_s: float | None = None) -> jobs_pb2.JobSpec:
    """The job's model, tier, deadline and regions. `deadline_at_s`: an absolute deadline (a
    batch's expiry) used when the body gives no `deadline_s`; `now_s`, what `deadline_s` counts
    from (a batch's creation, so that a resumed batch builds the very same jobs)."""
    tier_name = (knobs.tier or default_tier).lower()
    tier = TIERS.get(tier_name)
    if tier is None:
        raise invalid(f"tier must be one of {', '.join(TIERS)}", param="tier")
    spec = jobs_pb2.JobSpec(model=knobs.model, tier=tier, allowed_regions=knobs.regions)
    start_s = time.time() if now_s is None else now_s
    at_s = start_s + knobs.deadline_s if knobs.deadline_s is not None else deadline_at_s
    if at_s is not None:
        deadline = Timestamp()
        deadline.FromNanoseconds(int(at_s * 1e9))
        spec.deadline.CopyFrom(deadline)
    return spec


def _generation(body: _Generation, spec: jobs_pb2.JobSpec, max_tokens: int | None) -> None:
    g = spec.generate
    g.max_tokens = max_tokens or 0
    if body.temperature is not None:
        g.temperature = body.temperature
    if body.seed is not None:
        g.seed = body.seed
    g.stop.extend(body.stops())


def chat_spec(body: ChatRequest, default_tier: str = "interactive",
              deadline_at_s: float | None = None, now_s: float | None = None
             ) -> jobs_pb2.JobSpec:
    spec = job_spec(body, default_tier, deadline_at_s, now_s)
    spec.generate.messages.extend(chat_messages(body.messages))
    _generation(body, spec, body.max_completion_tokens or body.max_tokens)
    return spec


def completion_spec(body: CompletionRequest, default_tier: str = "interactive",
                    deadline_at_s: float | None = None, now_s: float | None = None
                   ) -> jobs_pb2.JobSpec:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise invalid("prompt must be one string (one completion per request)", param="prompt")
    spec = job_spec(body, default_tier, deadline_at_s, now_s)
    spec.generate.prompt = prompts[0]
    spec.generate.raw_prompt = True
    _generation(body, spec, body.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS)
    return spec


def embedding_spec(body: EmbeddingRequest, default_tier: str = "interactive",
                   deadline_at_s: float | None = None, now_s: float | None = None
                  ) -> jobs_pb2.JobSpec:
    if body.dimensions is not None:
        raise invalid("dimensions is not supported: the model's own size is returned",
                      param="dimensions")
    spec = job_spec(body, default_tier, deadline_at_s, now_s)
    spec.embed.texts.extend([body.input] if isinstance(body.input, str) else body.input)
    return spec


# ----- job -> response ---------------------------------------------------------------------------


def usage(result: jobs_pb2.JobResult) -> dict[str, Any]:
    """OpenAI's usage of a generation, with the prompt tokens the engine had kept."""
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": result.cached_prompt_tokens}}


def encode_vector(values: Sequence[float], encoding_format: str) -> list[float] | str:
    """A vector as floats, or as OpenAI's base64 of little-endian float32 (what the SDK asks
    for by default, and decodes)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return list(values)


def chat_body(body: ChatRequest, job: jobs_pb2.Job, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{job.id}", "object": "chat.completion", "created": created,
        "model": body.model,
        "choices": [{"index": 0, "finish_reason": job.result.finish_reason or "stop",
                     "message": {"role": "assistant", "content": job.result.text},
                     "logprobs": None}],
        "usage": usage(job.result),
    }


def completion_body(body: CompletionRequest, job: jobs_pb2.Job, created: int) -> dict[str, Any]:
    return {
        "id": f"cmpl-{job.id}", "object": "text_completion", "created": created,
        "model": body.model,
        "choices": [{"index": 0, "text": job.result.text, "logprobs": None,
                     "finish_reason": job.result.finish_reason or "stop"}],
        "usage": usage(job.result),
    }


def embedding_body(body: EmbeddingRequest, job: jobs_pb2.Job, created: int) -> dict[str, Any]:
    tokens = job.result.prompt_tokens
    return {
        "object": "list", "model": body.model,
        "data": [{"object": "embedding", "index": i,
                  "embedding": encode_vector(e.values, body.encoding_format)}
                 for i, e in enumerate(job.result.embeddings)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def chunk_chat(completion_id: str, created: int, model: str, delta: Mapping[str, Any],
               finish: str | None = None) -> dict[str, Any]:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [{"index": 0, "delta": dict(delta),
                                         "finish_reason": finish, "logprobs": None}]}


def chunk_completion(completion_id: str, created: int, model: str, text: str,
                     finish: str | None = None) -> dict[str, Any]:
    return {"id": completion_id, "object": "text_completion", "created": created,
            "model": model, "choices": [{"index": 0, "text": text, "logprobs": None,
                                         "finish_reason": finish}]}


def job_error(job: jobs_pb2.Job) -> ApiError | None:
    """The error a finished job answers with, or None when it succeeded."""
    if job.state == jobs_pb2.JOB_STATE_SUCCEEDED:
        return None
    name = jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    if job.state == jobs_pb2.JOB_STATE_EXPIRED:
        return ApiError(503, "service_unavailable", f"job {job.id} expired: {job.error}")
    return ApiError(500, "api_error", f"job {job.id} {name}: {job.error or 'no detail'}")


@dataclass(frozen=True)
class Endpoint:
    """One POST endpoint: its body, the job it becomes, and the answer a finished job gives."""

    path: str
    request: type[Knobs]
    spec: Callable[..., jobs_pb2.JobSpec]
    respond: Callable[..., dict[str, Any]]
    streams: bool


ENDPOINTS: dict[str, Endpoint] = {
    e.path: e for e in (
        Endpoint("/v1/chat/completions", ChatRequest, chat_spec, chat_body, True),
        Endpoint("/v1/completions", CompletionRequest, completion_spec, completion_body, True),
        Endpoint("/v1/embeddings", EmbeddingRequest, embedding_spec, embedding_body, False),
    )
}
