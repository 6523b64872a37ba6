"""OpenAI's wire format to hashserve's jobs and back: what each endpoint asks of the scheduler,
and errors in OpenAI's shape."""

from __future__ import annotations

import base64
import struct

import pytest

from hashserve.v1 import jobs_pb2
from scheduler.api.openai.schema import (
    ENDPOINTS,
    ApiError,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    chat_spec,
    completion_body,
    completion_spec,
    embedding_spec,
    encode_vector,
    job_error,
    parse,
)


def chat(**body: object) -> ChatRequest:
    return parse(ChatRequest, {"model": "m", **body})  # type: ignore[no-any-return]


def test_a_chat_keeps_its_turns_for_the_template() -> None:
    spec = chat_spec(chat(messages=[
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "Name "},
                                     {"type": "text", "text": "a colour."}]},
    ], max_tokens=9, temperature=0.5, seed=7, stop="\n"))
    g = spec.generate
    assert [(m.role, m.content) for m in g.messages] == [
        ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"),
        ("user", "Name a colour.")]
    assert not g.prompt and not g.raw_prompt
    assert (g.max_tokens, g.temperature, g.seed, list(g.stop)) == (9, 0.5, 7, ["\n"])
    assert spec.tier == jobs_pb2.TIER_INTERACTIVE


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    spec = chat_spec(chat(messages=[{"role": "user", "content": "x"}], max_tokens=9,
                          max_completion_tokens=3))
    assert spec.generate.max_tokens == 3


@pytest.mark.parametrize("body, field", [
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
    ({"messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
])
def test_what_is_not_supported_is_a_400_naming_the_field(body: dict[str, object],
                                                        field: str) -> None:
    with pytest.raises(ApiError) as err:
        parse(ChatRequest, {"model": "m", **body})
    assert err.value.status == 400 and err.value.param == field


def test_other_content_parts_and_roles_are_refused() -> None:
    with pytest.raises(ApiError, match="only text content"):
        chat_spec(chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]))
    with pytest.raises(ApiError, match="role 'tool'"):
        chat_spec(chat(messages=[{"role": "tool", "content": "x"},
                                 {"role": "user", "content": "y"}]))
    with pytest.raises(ApiError, match="need a user message"):
        chat_spec(chat(messages=[{"role": "system", "content": "only a system prompt"}]))


def test_a_completion_is_a_raw_prompt_with_openais_default_length() -> None:
    body = parse(CompletionRequest, {"model": "m", "prompt": "The sky is", "stop": ["\n", "."]})
    spec = completion_spec(body)
    g = spec.generate
    assert g.raw_prompt and g.prompt == "The sky is" and not g.messages
    assert g.max_tokens == 16 and list(g.stop) == ["\n", "."]
    with pytest.raises(ApiError, match="one string"):
        completion_spec(parse(CompletionRequest, {"model": "m", "prompt": ["a", "b"]}))
    for bad in ({"echo": True}, {"suffix": "x"}, {"best_of": 2}):
        with pytest.raises(ApiError):
            parse(CompletionRequest, {"model": "m", "prompt": "x", **bad})


def test_knobs_set_tier_deadline_and_regions() -> None:
    body = parse(EmbeddingRequest, {"model": "e", "input": "x", "tier": "flex",
                                    "deadline_s": 600, "regions": ["europe"]})
    spec = embedding_spec(body, now_s=1000.0)
    assert spec.tier == jobs_pb2.TIER_FLEX and list(spec.allowed_regions) == ["europe"]
    assert spec.deadline.seconds == 1600
    # A batch's lines default to flex with the window's end as deadline.
    line = embedding_spec(parse(EmbeddingRequest, {"model": "e", "input": ["a", "b"]}),
                          "flex", 90_000.0)
    assert line.tier == jobs_pb2.TIER_FLEX and line.deadline.seconds == 90_000
    assert list(line.embed.texts) == ["a", "b"]
    with pytest.raises(ApiError, match="tier must be"):
        embedding_spec(parse(EmbeddingRequest, {"model": "e", "input": "x", "tier": "urgent"}))


def test_a_finished_job_becomes_openais_answer() -> None:
    job = jobs_pb2.Job(id="job_1", state=jobs_pb2.JOB_STATE_SUCCEEDED, result=jobs_pb2.JobResult(
        text=" blue", prompt_tokens=4, completion_tokens=1, finish_reason="stop",
        cached_prompt_tokens=3))
    body = completion_body(parse(CompletionRequest, {"model": "m", "prompt": "x"}), job, 5)
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == " blue"
    # The prompt tokens the engine had kept, where OpenAI reports its prompt cache's.
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5,
                             "prompt_tokens_details": {"cached_tokens": 3}}
    assert job_error(job) is None
    failed = jobs_pb2.Job(id="job_2", state=jobs_pb2.JOB_STATE_FAILED, error="boom")
    err = job_error(failed)
    assert err is not None and err.status == 500 and "boom" in err.message
    expired = job_error(jobs_pb2.Job(id="job_3", state=jobs_pb2.JOB_STATE_EXPIRED))
    assert expired is not None and expired.status == 503


def test_errors_carry_retry_after_where_openai_clients_expect_it() -> None:
    limited = ApiError(429, "rate_limit_error", "slow down")
    assert limited.headers == {"Retry-After": "1"}
    assert limited.body() == {"error": {"message": "slow down", "type": "rate_limit_error",
                                        "param": None, "code": None}}
    assert ApiError(400, "invalid_request_error", "x").headers == {}


def test_base64_embeddings_are_little_endian_float32() -> None:
    encoded = encode_vector([1.0, -0.5], "base64")
    assert isinstance(encoded, str)
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (1.0, -0.5)
    assert encode_vector([1.0], "float") == [1.0]


def test_the_three_endpoints() -> None:
    assert set(ENDPOINTS) == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
    assert not ENDPOINTS["/v1/embeddings"].streams
