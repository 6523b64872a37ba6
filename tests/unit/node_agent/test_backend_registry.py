"""Backend spec strings: what each parses to, and that bad ones are refused by name."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from node_agent.backends.llama_cpp_generation import ModelNotInstalled
from node_agent.backends.openai_http import OpenAICompatibleBackend
from node_agent.backends.registry import (
    MINILM_SPEC,
    SMOLLM2_SPEC,
    BackendKind,
    BackendSpec,
    BackendSpecError,
    build_backends,
    default_backend_specs,
    parse_backend_spec,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all-minilm-l6-v2=onnx", BackendSpec("all-minilm-l6-v2", BackendKind.ONNX)),
        (
            " smollm2-135m-instruct=llama-cpp ",
            BackendSpec("smollm2-135m-instruct", BackendKind.LLAMA_CPP),
        ),
        (
            "other=llama-cpp:/models/other.Q4_K_M.gguf",
            BackendSpec(
                "other", BackendKind.LLAMA_CPP, gguf_path=Path("/models/other.Q4_K_M.gguf")
            ),
        ),
        (
            "my-model=openai:http://127.0.0.1:8000/v1",
            BackendSpec("my-model", BackendKind.OPENAI, base_url="http://127.0.0.1:8000/v1"),
        ),
        # The served name may hold '/', as vLLM's Hugging Face ids do.
        (
            "qwen-7b=openai:http://gpu-3:8000/v1:Qwen/Qwen2.5-7B-Instruct",
            BackendSpec(
                "qwen-7b",
                BackendKind.OPENAI,
                base_url="http://gpu-3:8000/v1",
                served_model="Qwen/Qwen2.5-7B-Instruct",
            ),
        ),
        # No path: the first ':' after the port starts the served name.
        (
            "m=openai:https://engine:8443:served",
            BackendSpec(
                "m", BackendKind.OPENAI, base_url="https://engine:8443", served_model="served"
            ),
        ),
        # No port either: a non-numeric part after the host is the served name.
        (
            "m=openai:http://engine:served",
            BackendSpec("m", BackendKind.OPENAI, base_url="http://engine", served_model="served"),
        ),
        (
            "m=openai:http://[::1]:8000/v1",
            BackendSpec("m", BackendKind.OPENAI, base_url="http://[::1]:8000/v1"),
        ),
    ],
)
def test_parse(text: str, expected: BackendSpec) -> None:
    assert parse_backend_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("all-minilm-l6-v2", "expected MODEL=KIND"),
        ("=onnx", "expected MODEL=KIND"),
        ("x=", "expected MODEL=KIND"),
        ("x=tensorrt", "unknown kind 'tensorrt'"),
        ("x=onnx:/some/file", "onnx takes no arguments"),
        ("x=openai", "expected openai:http(s)://"),
        ("x=openai:ftp://host/v1", "expected openai:http(s)://"),
        ("bad name=onnx", "bad model name"),
    ],
)
def test_bad_specs_name_the_spec(text: str, fragment: str) -> None:
    with pytest.raises(BackendSpecError) as info:
        parse_backend_spec(text)
    assert repr(text.strip()) in str(info.value) or repr(text) in str(info.value)
    assert fragment in str(info.value)


def test_duplicate_model_is_refused_before_anything_loads() -> None:
    with pytest.raises(BackendSpecError, match="given twice"):
        build_backends(["m=openai:http://127.0.0.1:1/v1", "m=onnx"])


def test_a_bad_spec_anywhere_fails_before_loading() -> None:
    with pytest.raises(BackendSpecError, match="'oops'"):
        build_backends(["all-minilm-l6-v2=onnx", "oops"])


def test_build_openai_backend_without_network() -> None:
    # Building never dials: the model check happens at the first job.
    built = build_backends(["m=openai:http://127.0.0.1:9/v1:served-m"], openai_api_key="k")
    backend = built["m"]
    assert isinstance(backend, OpenAICompatibleBackend)
    assert backend.model_name == "m" and backend.served_model == "served-m"
    assert backend.base_url == "http://127.0.0.1:9/v1"
    backend.close()


def test_missing_gguf_names_the_model() -> None:
    with pytest.raises(RuntimeError, match=r"'g'.*not found"):
        build_backends(["g=llama-cpp:/nonexistent/model.gguf"])


def test_default_specs_always_include_minilm() -> None:
    specs = default_backend_specs()
    assert specs[0] == MINILM_SPEC
    for spec in specs:
        parse_backend_spec(spec)


def test_default_specs_with_llm_installed() -> None:
    assert default_backend_specs(lambda: None) == [MINILM_SPEC, SMOLLM2_SPEC]


def test_default_specs_drop_llama_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    def missing() -> None:
        raise ModelNotInstalled("llama-cpp-python is not installed: pip install ...")

    with caplog.at_level(logging.WARNING, logger="node_agent.backends.registry"):
        assert default_backend_specs(missing) == [MINILM_SPEC]
    assert "not serving smollm2-135m-instruct" in caplog.text
    assert "pip install" in caplog.text
