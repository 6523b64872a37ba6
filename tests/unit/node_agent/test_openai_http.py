"""The OpenAI-compatible client's requests, parsing and error naming, against canned HTTP answers
(httpx.MockTransport). The same client against a real llama.cpp server is in
tests/integration/test_openai_backend.py."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from node_agent.backends.base import Cancelled, GenerateParams
from node_agent.backends.errors import BackendError, BackendUnavailable
from node_agent.backends.openai_http import OpenAICompatibleBackend, normalise_base_url

Handler = Callable[[httpx.Request], httpx.Response]
MODELS_BODY = {"object": "list", "data": [{"id": "served-m", "object": "model"}]}


def sse(*events: object) -> bytes:
    out = []
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        out.append(f"data: {data}\n\n")
    return "".join(out).encode()


def delta(content: str | None = None, finish: str | None = None) -> dict[str, object]:
    d: dict[str, object] = {} if content is None else {"content": content}
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }


def make_backend(
    chat: Handler | None = None,
    embeddings: Handler | None = None,
    models: object = MODELS_BODY,
    **kwargs: object,
) -> tuple[OpenAICompatibleBackend, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/v1/models":
            if isinstance(models, int):
                return httpx.Response(models, json={"detail": "Not Found"})
            return httpx.Response(200, json=models)
        if path == "/v1/chat/completions" and chat is not None:
            return chat(request)
        if path == "/v1/embeddings" and embeddings is not None:
            return embeddings(request)
        return httpx.Response(404, json={"detail": "Not Found"})

    backend = OpenAICompatibleBackend(
        "http://engine:8000",
        "m",
        served_model="served-m",
        api_key="secret",
        transport=httpx.MockTransport(handler),
        **kwargs,  # type: ignore[arg-type]
    )
    return backend, seen


PARAMS = GenerateParams(prompt="Say hi.", max_tokens=5, temperature=0.0, seed=7)


def test_stream_tokens_usage_and_request_body() -> None:
    def chat(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=sse(
                {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
                delta("Hel"),
                delta("lo"),
                delta(None, "stop"),
                {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2}},
                "[DONE]",
            ),
        )

    backend, seen = make_backend(chat=chat)
    tokens: list[str] = []
    out = backend.generate(PARAMS, tokens.append, lambda: False)
    assert tokens == ["Hel", "lo"]
    assert (out.text, out.prompt_tokens, out.completion_tokens, out.finish_reason) == (
        "Hello",
        12,
        2,
        "stop",
    )
    body = json.loads(seen[-1].content)
    assert body["model"] == "served-m" and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "Say hi."}]
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (5, 0.0, 7)
    assert seen[-1].headers["authorization"] == "Bearer secret"


def test_without_usage_length_means_max_tokens() -> None:
    # llama.cpp's server sends no usage in streams: a "length" finish is exactly max_tokens,
    # the prompt is estimated at 4 characters a token ("Say hi." = 7 chars -> 2).
    def chat(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=sse(delta("a"), delta("b"), delta(None, "length"), "[DONE]")
        )

    backend, _ = make_backend(chat=chat)
    out = backend.generate(PARAMS, lambda s: None, lambda: False)
    assert (out.prompt_tokens, out.completion_tokens, out.finish_reason) == (2, 5, "length")


def test_cancel_between_chunks() -> None:
    def chat(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(*[delta(c) for c in "abcdef"], "[DONE]"))

    backend, _ = make_backend(chat=chat)
    tokens: list[str] = []
    with pytest.raises(Cancelled):
        backend.generate(PARAMS, tokens.append, lambda: len(tokens) >= 2)
    assert tokens == ["a", "b"]


def test_stream_cut_short_is_unavailable() -> None:
    def chat(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(delta("a")))

    backend, _ = make_backend(chat=chat)
    with pytest.raises(BackendUnavailable, match="stream ended"):
        backend.generate(PARAMS, lambda s: None, lambda: False)


def test_error_inside_the_stream() -> None:
    def chat(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(delta("a"), {"error": {"message": "kv full"}}))

    backend, _ = make_backend(chat=chat)
    with pytest.raises(BackendError, match="kv full"):
        backend.generate(PARAMS, lambda s: None, lambda: False)


@pytest.mark.parametrize(
    ("status", "body", "error", "fragment"),
    [
        (400, {"error": {"message": "max_tokens too large"}}, BackendError, "max_tokens too large"),
        (404, {"error": {"message": "The model `x` does not exist."}}, BackendError, "does not"),
        (422, {"detail": [{"msg": "field required"}]}, BackendError, "field required"),
        (500, {"error": {"message": "boom"}}, BackendUnavailable, "HTTP 500: boom"),
        (429, {"error": "slow down"}, BackendUnavailable, "slow down"),
    ],
)
def test_http_errors_carry_the_servers_words(
    status: int, body: object, error: type[Exception], fragment: str
) -> None:
    def chat(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    backend, _ = make_backend(chat=chat)
    with pytest.raises(error, match="chat/completions") as info:
        backend.generate(PARAMS, lambda s: None, lambda: False)
    assert fragment in str(info.value)
    # 4xx other than 429 must not look retryable.
    assert isinstance(info.value, BackendUnavailable) == (status >= 500 or status == 429)


def test_wrong_model_name_lists_what_is_served() -> None:
    backend, seen = make_backend(models={"data": [{"id": "a"}, {"id": "b"}]})
    with pytest.raises(BackendError, match=r"'served-m' is not served .*it serves: a, b"):
        backend.generate(PARAMS, lambda s: None, lambda: False)
    assert [r.url.path for r in seen] == ["/v1/models"]


def test_server_without_models_endpoint_is_trusted() -> None:
    def chat(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(delta("x", "stop"), "[DONE]"))

    backend, _ = make_backend(chat=chat, models=404)
    assert backend.generate(PARAMS, lambda s: None, lambda: False).text == "x"


def test_connection_refused_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    backend = OpenAICompatibleBackend(
        "http://engine:8000/v1", "m", transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(BackendUnavailable, match=r"GET http://engine:8000/v1/models: ConnectError"):
        backend.embed(["x"])


def test_embeddings_batched_ordered_and_counted() -> None:
    requests: list[list[str]] = []

    def embeddings(request: httpx.Request) -> httpx.Response:
        texts = json.loads(request.content)["input"]
        requests.append(texts)
        # Answer in reverse order: the client must use `index`.
        data = [{"index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(texts)]
        return httpx.Response(
            200, json={"data": data[::-1], "usage": {"prompt_tokens": 3 * len(texts)}}
        )

    backend, _ = make_backend(embeddings=embeddings, embed_batch=2)
    out = backend.embed(["a", "bb", "ccc"])
    assert requests == [["a", "bb"], ["ccc"]]
    assert out.vectors == [[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]]
    assert out.prompt_tokens == 9


def test_embeddings_malformed_answer() -> None:
    def embeddings(request: httpx.Request) -> httpx.Response:
        # llama.cpp's server on a model without pooling answers per-token vectors.
        return httpx.Response(200, json={"data": [{"index": 0, "embedding": [[0.1], [0.2]]}]})

    backend, _ = make_backend(embeddings=embeddings)
    with pytest.raises(BackendError, match="malformed embedding"):
        backend.embed(["x"])


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:8000", "http://h:8000/v1"),
        ("http://h:8000/", "http://h:8000/v1"),
        ("http://h:8000/v1/", "http://h:8000/v1"),
        ("https://gw.example/openai/v1", "https://gw.example/openai/v1"),
    ],
)
def test_base_url(given: str, expected: str) -> None:
    assert normalise_base_url(given) == expected


@pytest.mark.parametrize("bad", ["h:8000", "ftp://h/v1", "http://"])
def test_bad_base_url(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise_base_url(bad)
