"""A backend that forwards jobs to an OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp's).

This is how a GPU node serves models the agent does not run itself: the engine runs next to the
agent and this client speaks the OpenAI wire format to it: `POST /v1/embeddings`, and
`POST /v1/chat/completions` with `stream: true`, read as server-sent events so each text delta
reaches `on_token` as it comes. A cancel closes the stream (the server sees the disconnect and
stops); it is noticed when the next chunk arrives, so while a server is still reading a long
prompt a cancel waits for the first token. This module decides the requests, the parsing and
how failures are named (`errors.BackendUnavailable` to retry, `errors.BackendError` not to); it
leaves retries, batching across jobs and the engine's own configuration to others.

Before the first job it checks, through `GET /v1/models`, that the server serves the model asked
for: llama.cpp's server silently answers with its default model for any name, so without the
check a wrong name would go unnoticed.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from node_agent.backends.base import Cancelled, EmbedOutput, GenerateOutput, GenerateParams
from node_agent.backends.errors import BackendError, BackendUnavailable
from node_agent.backends.sse import iter_sse_data

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
# Texts per /v1/embeddings request; the same bound as the catalogue's max_batch for embeddings.
DEFAULT_EMBED_BATCH = 64
# Used only when a server reports no usage (llama.cpp's server sends none in streams): OpenAI's
# rule of thumb, "one token generally corresponds to ~4 characters of text for common English
# text" (OpenAI Help Center, "What are tokens and how to count them?").
_CHARS_PER_TOKEN_ESTIMATE = 4.0
_ERROR_BODY_LIMIT = 500
# 408 timeout, 425 too early, 429 rate limited: the server is fine but busy; a retry may work.
_RETRYABLE_4XX = frozenset({408, 425, 429})


def normalise_base_url(base_url: str) -> str:
    """`http://host:8000` and `http://host:8000/` become `http://host:8000/v1`; a URL with a
    path (`http://host/v1`, `http://gw/openai/v1`) is kept as given, without a trailing '/'."""
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    return url if parts.path else url + "/v1"


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN_ESTIMATE)


def error_message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's `{"error": {"message"}}`, FastAPI's `{"detail"}`, or the
    body's start."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:_ERROR_BODY_LIMIT].strip() or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:_ERROR_BODY_LIMIT]
        if isinstance(err, str):
            return err[:_ERROR_BODY_LIMIT]
        if "detail" in body:
            return json.dumps(body["detail"])[:_ERROR_BODY_LIMIT]
        if body.get("message"):
            return str(body["message"])[:_ERROR_BODY_LIMIT]
    return json.dumps(body)[:_ERROR_BODY_LIMIT]


def http_error(response: httpx.Response) -> BackendError:
    request = response.request
    text = (
        f"{request.method} {request.url} answered HTTP {response.status_code}: "
        f"{error_message(response)}"
    )
    if response.status_code >= 500 or response.status_code in _RETRYABLE_4XX:
        return BackendUnavailable(text)
    return BackendError(text)


class OpenAICompatibleBackend:
    """Both an `EmbeddingBackend` and a `GenerationBackend`, over one OpenAI-compatible server.

    `model_name` is the catalogue name the scheduler uses; `served_model` is the name the server
    knows the model by (vLLM's `--served-model-name`, llama.cpp's `--model_alias`), by default
    the same. The client is thread-safe (one connection pool), so jobs may run concurrently.
    """

    def __init__(
        self,
        base_url: str,
        model_name: str,
        served_model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        embed_batch: int = DEFAULT_EMBED_BATCH,
        verify_model: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if embed_batch < 1:
            raise ValueError(f"embed_batch must be >= 1, got {embed_batch}")
        self.base_url = normalise_base_url(base_url)
        self.model_name = model_name
        self.served_model = served_model or model_name
        self.embed_batch = embed_batch
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            headers=headers,
            # The read timeout bounds the wait for each streamed chunk, not the whole job.
            timeout=httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s)),
            transport=transport,
        )
        self._model_verified = not verify_model
        self._verify_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatibleBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- model discovery -------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """Model ids the server serves (`GET /v1/models`)."""
        served = self._models_or_none()
        if served is None:
            raise BackendError(f"GET {self.base_url}/models answered HTTP 404")
        return served

    def verify_model(self) -> None:
        """Raise `BackendError` unless the server lists `served_model`. A server without
        `/v1/models` (HTTP 404) cannot be checked and is trusted."""
        with self._verify_lock:
            if self._model_verified:
                return
            served = self._models_or_none()
            if served is None:
                log.warning("%s has no /models; cannot check %r", self.base_url, self.served_model)
            elif self.served_model not in served:
                raise BackendError(
                    f"model {self.served_model!r} is not served at {self.base_url} "
                    f"(it serves: {', '.join(served) or 'nothing'})"
                )
            self._model_verified = True

    def _models_or_none(self) -> list[str] | None:
        response = self._send("GET", f"{self.base_url}/models")
        if response.status_code == 404:
            return None
        body = self._json(response)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise BackendError(f"GET {self.base_url}/models: no 'data' list in {body!r:.200}")
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

    # --- embeddings ------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> EmbedOutput:
        if not texts:
            return EmbedOutput(vectors=[], prompt_tokens=0)
        self.verify_model()
        vectors: list[list[float]] = []
        prompt_tokens = 0
        for start in range(0, len(texts), self.embed_batch):
            chunk = texts[start : start + self.embed_batch]
            body = self._request_json(
                "POST",
                "/embeddings",
                {"model": self.served_model, "input": chunk, "encoding_format": "float"},
            )
            vectors.extend(self._parse_embeddings(body, len(chunk)))
            usage = body.get("usage") if isinstance(body, dict) else None
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                prompt_tokens += usage["prompt_tokens"]
            else:
                prompt_tokens += sum(estimate_tokens(t) for t in chunk)
        return EmbedOutput(vectors=vectors, prompt_tokens=prompt_tokens)

    def _parse_embeddings(self, body: Any, expected: int) -> list[list[float]]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            got = len(data) if isinstance(data, list) else "no"
            raise BackendError(
                f"POST {self.base_url}/embeddings: expected {expected} embeddings, got {got}"
            )
        try:
            # Servers may answer out of order; `index` says which input each vector is for.
            ordered = sorted(data, key=lambda item: int(item["index"]))
            return [[float(x) for x in item["embedding"]] for item in ordered]
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(
                f"POST {self.base_url}/embeddings: malformed embedding in answer: {exc}"
            ) from exc

    # --- generation ------------------------------------------------------------------------

    def generate(
        self,
        params: GenerateParams,
        on_token: Callable[[str], None],
        should_stop: Callable[[], bool],
    ) -> GenerateOutput:
        if params.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {params.max_tokens}")
        self.verify_model()
        if should_stop():
            raise Cancelled("cancelled before the request was sent")
        body: dict[str, Any] = {
            "model": self.served_model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "seed": params.seed,
            "stream": True,
            # vLLM and SGLang then send a last chunk with the exact token counts.
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.raw_prompt:
            body["prompt"] = params.prompt
            url = f"{self.base_url}/completions"
        else:
            body["messages"] = params.chat()
            url = f"{self.base_url}/chat/completions"
        try:
            with self._client.stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise http_error(response)
                return self._read_stream(response, params, on_token, should_stop)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"POST {url}: {type(exc).__name__}: {exc}") from exc

    def _read_stream(
        self,
        response: httpx.Response,
        params: GenerateParams,
        on_token: Callable[[str], None],
        should_stop: Callable[[], bool],
    ) -> GenerateOutput:
        url = str(response.request.url)
        pieces: list[str] = []
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None
        done = False
        for data in iter_sse_data(response.iter_lines()):
            # Between chunks: leaving the `with` in the caller closes the connection, which is
            # how an OpenAI-compatible server learns to stop.
            if should_stop():
                raise Cancelled(f"cancelled after {len(pieces)} streamed pieces")
            if data.strip() == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError as exc:
                raise BackendError(f"POST {url}: bad stream chunk {data[:200]!r}") from exc
            if not isinstance(chunk, dict):
                raise BackendError(f"POST {url}: bad stream chunk {data[:200]!r}")
            if chunk.get("error"):
                raise BackendError(f"POST {url}: error in stream: {chunk['error']!r:.500}")
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                # A chat chunk's text is its delta's content; a completions chunk's, its text.
                content = (choice.get("delta") or {}).get("content") or choice.get("text")
                if content:
                    pieces.append(content)
                    on_token(content)
                if choice.get("finish_reason"):
                    finish_reason = str(choice["finish_reason"])
        if not done and finish_reason is None:
            raise BackendUnavailable(f"POST {url}: stream ended before the completion finished")
        finish_reason = finish_reason or "stop"
        text = "".join(pieces)
        prompt_tokens, completion_tokens = self._token_counts(
            usage, params, text, len(pieces), finish_reason
        )
        return GenerateOutput(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
        )

    @staticmethod
    def _token_counts(
        usage: dict[str, Any] | None,
        params: GenerateParams,
        text: str,
        n_pieces: int,
        finish_reason: str,
    ) -> tuple[int, int]:
        if usage is not None:
            prompt = usage.get("prompt_tokens")
            completion = usage.get("completion_tokens")
            if isinstance(prompt, int) and isinstance(completion, int):
                return prompt, completion
        # No usage: a "length" finish means exactly max_tokens were generated; otherwise these
        # servers stream one delta per token except around held-back text, so the delta count is
        # a close lower bound. The prompt (with its chat template) is estimated from its length.
        completion = params.max_tokens if finish_reason == "length" else n_pieces
        return estimate_tokens(params.prompt_text), completion

    # --- plumbing --------------------------------------------------------------------------

    def _request_json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._json(self._send(method, f"{self.base_url}{path}", body))

    def _send(self, method: str, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._client.request(method, url, json=body)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise http_error(response)
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            request = response.request
            raise BackendError(
                f"{request.method} {request.url}: answer is not JSON: {response.text[:200]!r}"
            ) from exc
