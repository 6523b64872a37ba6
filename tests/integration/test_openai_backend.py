"""OpenAICompatibleBackend against a real OpenAI-compatible server: llama-cpp-python's
`python -m llama_cpp.server` serving SmolLM2 (through `node_agent.backends.llama_server`, which
loads the portable engine's CPU backend first), started once for the module by
`tests/integration/llama_server.py` and killed after.

Embeddings are only tested for their error: this server answers `/v1/embeddings` only when started
with `--embedding true`, and then for this GGUF (no pooling) with one vector per token, not a
sentence vector, which the client refuses (see the unit tests for the success path).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hashserve.local import free_port
from node_agent.backends.base import Cancelled, GenerateOutput, GenerateParams
from node_agent.backends.errors import BackendError, BackendUnavailable
from node_agent.backends.openai_http import OpenAICompatibleBackend
from tests.integration.llama_server import SERVED_MODEL, llama_server

pytestmark = [pytest.mark.integration, pytest.mark.llm]

MODEL = SERVED_MODEL


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(tmp_path_factory) as url:
        yield url


@pytest.fixture()
def backend(server_url: str) -> Iterator[OpenAICompatibleBackend]:
    with OpenAICompatibleBackend(server_url, MODEL, timeout_s=60.0) as b:
        yield b


def generate(
    backend: OpenAICompatibleBackend, params: GenerateParams, stop_after: int | None = None
) -> tuple[GenerateOutput, list[str]]:
    pieces: list[str] = []
    out = backend.generate(
        params, pieces.append, lambda: stop_after is not None and len(pieces) >= stop_after
    )
    return out, pieces


def test_streams_tokens_and_stops_at_max_tokens(backend: OpenAICompatibleBackend) -> None:
    params = GenerateParams("Tell me a long story about a river.", max_tokens=12)
    out, pieces = generate(backend, params)
    assert out.text and len(pieces) > 1, "expected a streamed, non-empty answer"
    assert "".join(pieces) == out.text
    assert out.finish_reason == "length"
    assert out.completion_tokens == 12
    assert out.prompt_tokens > 0


def test_temperature_zero_is_deterministic(backend: OpenAICompatibleBackend) -> None:
    """Asked twice alike, the server answers alike. The first ask only warms it: llama_cpp.server
    keeps the last prompt's cache and evaluates only what differs, so a prompt evaluated in one
    batch after another prompt and the same prompt evaluated again (its last token alone) sum in
    a different order, and at temperature 0 one changed sum can change the answer from the first
    near tie on. From the second ask on, every ask evaluates the same token over the same cache."""
    params = GenerateParams("Name three colours.", max_tokens=16, temperature=0.0, seed=1)
    generate(backend, params)
    first, _ = generate(backend, params)
    second, _ = generate(backend, params)
    assert first.text == second.text != ""


def test_cancel_closes_the_stream_and_the_server_carries_on(
    backend: OpenAICompatibleBackend,
) -> None:
    params = GenerateParams("Tell me a long story about a river.", max_tokens=200)
    with pytest.raises(Cancelled):
        generate(backend, params, stop_after=3)
    out, _ = generate(backend, GenerateParams("Say hi.", max_tokens=8))
    assert out.text


def test_wrong_model_name_is_a_clear_error(server_url: str) -> None:
    with (
        OpenAICompatibleBackend(server_url, "no-such-model") as wrong,
        pytest.raises(BackendError, match=rf"'no-such-model' is not served .*{MODEL}"),
    ):
        wrong.generate(GenerateParams("hi", 4), lambda s: None, lambda: False)


def test_served_name_differs_from_catalogue_name(server_url: str) -> None:
    with OpenAICompatibleBackend(server_url, "catalogue-name", served_model=MODEL) as b:
        out = b.generate(GenerateParams("Say hi.", 4), lambda s: None, lambda: False)
    assert out.text


def test_server_down_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with (
        OpenAICompatibleBackend(url, MODEL, connect_timeout_s=2.0) as b,
        pytest.raises(BackendUnavailable, match="ConnectError"),
    ):
        b.generate(GenerateParams("hi", 4), lambda s: None, lambda: False)


def test_embeddings_on_a_generation_server_are_a_clear_error(
    backend: OpenAICompatibleBackend,
) -> None:
    with pytest.raises(BackendError, match=r"embeddings.*HTTP 500.*embedding=True"):
        backend.embed(["hello"])
