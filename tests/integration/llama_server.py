"""A real OpenAI-compatible server for integration tests: llama-cpp-python's `llama_cpp.server`
serving SmolLM2 (through `node_agent.backends.llama_server`, which loads the portable engine's CPU
backend first), in its own process group, so that stopping it ends it and whatever it spawned.

`llama_server(tmp_path_factory)` is the context manager a module-scoped fixture wraps: it skips
the test when llama-cpp-python[server] is not installed, yields the server's `/v1` base URL once
it answers `/v1/models`, and kills the server after.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hashserve.local import free_port

# The name the server answers to (its `--model_alias`): the catalogue's name for SmolLM2.
SERVED_MODEL = "smollm2-135m-instruct"
START_TIMEOUT_S = 90.0


@contextlib.contextmanager
def llama_server(
    tmp_path_factory: pytest.TempPathFactory, alias: str = SERVED_MODEL, n_threads: int = 1
) -> Iterator[str]:
    """The base URL (`http://127.0.0.1:PORT/v1`) of a running server; see the module docstring."""
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
        "--n_threads", str(n_threads),
        "--model_alias", alias,
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
