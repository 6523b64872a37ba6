"""OpenAICompatibleBackend against a real OpenAI-compatible server: llama-cpp-python's
`python -m llama_cpp.server` serving SmolLM2 (through `node_agent.backends.llama_server`, which
loads the portable engine's CPU backend first), started once for the module and killed after.

Embeddings are only tested for their error: this server answers `/v1/embeddings` only when started
with `--embedding true`, and then for this GGUF (no pooling) with one vector per token, not a
sentence vector, which the client refuses (see the unit tests for the success path).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from node_agent.backends.base import Cancelled, GenerateOutput, GenerateParams
from node_agent.backends.errors import BackendError, BackendUnavailable
from node_agent.backends.openai_http import OpenAICompatibleBackend

pytestmark = [pytest.mark.integration, pytest.mark.llm]

MODEL = "smollm2-135m-instruct"
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        pytest.skip("llama-cpp-python[server] is not installed (pip install 'hashserve[llm]')")
    from node_agent.backends.llama_cpp_generation import find_smollm2_gguf

    port = free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [
        sys.executable, "-m", "node_agent.backends.llama_server",
        "--model", str(find_smollm2_gguf()),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", "1",
        "--model_alias", MODEL,
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    with log_path.open("wb") as log_file:
        # Its own session, so teardown ends the server and anything it spawned, nothing else.
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_until_serving(proc, url, log_path)
            yield url
        finally:
            stop_process_group(proc)
    assert proc.poll() is not None, "llama_cpp.server still running after teardown"


def wait_until_serving(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {tail(log_path)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/models", timeout=2.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"llama_cpp.server not up in {START_TIMEOUT_S}s: {tail(log_path)}")
        time.sleep(0.25)


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:]


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
    params = GenerateParams("Name three colours.", max_tokens=16, temperature=0.0, seed=1)
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
