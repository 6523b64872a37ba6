"""The embedded CPU backends against the real models.

ONNX MiniLM: the backend's vectors against a computation written out here with onnxruntime and
tokenizers directly (the tokenizer's own fixed 128-token padding, numpy pooling), and a semantic
sanity check. llama.cpp SmolLM2: the backend's own token loop against `create_chat_completion`
on a second, independent `Llama`, at temperature 0 and seeded sampling, plus streaming, token
counts and cancellation.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from typing import Any

import numpy as np
import pytest

from node_agent.backends.base import Cancelled, GenerateOutput, GenerateParams
from node_agent.backends.llama_engine import X86_VARIANTS, EngineUnavailable, load_engine
from node_agent.backends.llama_probe import probe_engine, run_probe_child
from node_agent.backends.onnx_embedding import (
    OnnxEmbeddingBackend,
    default_model_path,
    default_tokenizer_dir,
)

pytestmark = pytest.mark.integration


# --- ONNX embeddings ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_backend() -> OnnxEmbeddingBackend:
    return OnnxEmbeddingBackend()


def direct_embedding(text: str) -> np.ndarray:
    """all-MiniLM-L6-v2 the long way: no code from the backend."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(default_tokenizer_dir() / "tokenizer.json"))
    enc = tokenizer.encode(text)  # the file's own settings: truncate and pad to 128
    ids = np.array([enc.ids], dtype=np.int64)
    mask = np.array([enc.attention_mask], dtype=np.int64)
    types = np.array([enc.type_ids], dtype=np.int64)
    session = ort.InferenceSession(str(default_model_path()), providers=["CPUExecutionProvider"])
    (hidden,) = session.run(
        ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    )
    weights = mask[0].astype(np.float64)
    mean = (hidden[0] * weights[:, None]).sum(axis=0) / weights.sum()
    return mean / np.linalg.norm(mean)


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_onnx_matches_a_direct_onnxruntime_run(onnx_backend: OnnxEmbeddingBackend) -> None:
    text = "Bitcoin miners curtail when power prices spike above the hashprice."
    out = onnx_backend.embed([text])
    assert len(out.vectors) == 1 and len(out.vectors[0]) == 384
    assert np.linalg.norm(out.vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert cosine(out.vectors[0], direct_embedding(text)) >= 0.999
    # [CLS] + words + [SEP]: far fewer than the 128 the direct run padded to.
    assert 10 < out.prompt_tokens < 40


def test_onnx_semantics(onnx_backend: OnnxEmbeddingBackend) -> None:
    a, b, far = onnx_backend.embed(
        [
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar.",
            "The central bank raised interest rates again.",
        ]
    ).vectors
    assert cosine(a, b) > cosine(a, far) + 0.2
    assert cosine(a, b) > cosine(b, far) + 0.2


def test_onnx_more_texts_than_one_batch(onnx_backend: OnnxEmbeddingBackend) -> None:
    texts = [f"sentence number {i} about site {i % 7}" for i in range(70)]
    out = onnx_backend.embed(texts)
    assert len(out.vectors) == 70
    # Batching (64 + 6, sorted by length) does not change a text's vector.
    assert cosine(out.vectors[69], onnx_backend.embed([texts[69]]).vectors[0]) >= 0.9999


# --- llama.cpp generation -------------------------------------------------------------------


@pytest.fixture(scope="module")
def probed() -> Any:
    """Generation proven in a child process first: an engine that cannot run on this CPU fails
    these tests with the signal that killed the child, instead of killing pytest."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (bash scripts/install.sh)")
    try:
        return probe_engine(use_cache=False)
    except EngineUnavailable as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def llama_cpp_module(probed: Any) -> Any:
    llama_cpp, _ = load_engine()
    return llama_cpp


def test_generation_runs_in_a_child_process_on_the_portable_build(probed: Any) -> None:
    assert probed.text, probed
    # The README's install builds one CPU backend per x86-64 level and loads the one this CPU
    # allows: a build for one CPU ("single") is what died of SIGILL on other machines.
    assert probed.build == "variants", probed.engine
    assert probed.variant in X86_VARIANTS, probed.engine


def test_a_child_killed_by_an_illegal_instruction_is_reported_by_its_signal() -> None:
    # A real child that dies of SIGILL, as an engine built for another CPU does.
    suicide = "import os, signal; os.kill(os.getpid(), signal.SIGILL)"
    with pytest.raises(EngineUnavailable) as err:
        run_probe_child([sys.executable, "-X", "faulthandler", "-c", suicide], 60, "test")
    text = str(err.value)
    assert "SIGILL" in text and "rebuild the portable engine" in text
    assert "Fatal Python error: Illegal instruction" in text  # the child's own trace


@pytest.fixture(scope="module")
def llama_backend(llama_cpp_module: Any) -> Any:
    from node_agent.backends.llama_cpp_generation import LlamaCppGenerationBackend

    return LlamaCppGenerationBackend()


@pytest.fixture(scope="module")
def direct_llama(llama_cpp_module: Any) -> Any:
    from node_agent.backends.llama_cpp_generation import find_smollm2_gguf

    return llama_cpp_module.Llama(
        model_path=str(find_smollm2_gguf()), n_ctx=2048, n_threads=1, verbose=False
    )


def direct_chat(llm: Any, prompt: str, max_tokens: int, temperature: float, seed: int) -> Any:
    result = llm.create_chat_completion(
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
    )
    choice = result["choices"][0]
    return choice["message"]["content"], result["usage"], choice["finish_reason"]


def run(
    backend: Any, params: GenerateParams, stop_after: int | None = None
) -> tuple[GenerateOutput, list[str]]:
    pieces: list[str] = []

    def should_stop() -> bool:
        return stop_after is not None and len(pieces) >= stop_after

    out = backend.generate(params, pieces.append, should_stop)
    return out, pieces


@pytest.mark.llm
@pytest.mark.parametrize(
    ("prompt", "max_tokens", "temperature", "seed"),
    [
        ("What is the capital of France?", 48, 0.0, 0),
        ("Say hi.", 200, 0.0, 0),  # ends on its own, before max_tokens
        ("Write a haiku about electricity prices.", 40, 0.8, 42),  # seeded sampling
    ],
)
def test_llama_equals_direct_create_chat_completion(
    llama_cpp_module: Any,
    direct_llama: Any,
    prompt: str,
    max_tokens: int,
    temperature: float,
    seed: int,
) -> None:
    """Our token loop against the library's, each on its own context. A fresh engine: one that
    starts from kept prompts' cells equals this only up to rounding (docs/prefix-routing.md)."""
    from node_agent.backends.llama_cpp_generation import LlamaCppGenerationBackend

    backend = LlamaCppGenerationBackend(probe=False)
    try:
        out, pieces = run(backend, GenerateParams(prompt, max_tokens, temperature, seed))
    finally:
        backend.close()
    text, usage, finish = direct_chat(direct_llama, prompt, max_tokens, temperature, seed)
    assert out.text == text
    assert out.text, "empty generation"
    assert "".join(pieces) == out.text
    assert (out.prompt_tokens, out.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert out.finish_reason == finish


@pytest.mark.llm
def test_llama_stops_at_max_tokens(llama_backend: Any) -> None:
    out, _ = run(llama_backend, GenerateParams("Tell me a long story about a river.", 7))
    assert (out.completion_tokens, out.finish_reason) == (7, "length")


@pytest.mark.llm
def test_llama_cancel_mid_generation_then_serve_again(llama_backend: Any) -> None:
    params = GenerateParams("Tell me a long story about a river.", 64)
    full, _ = run(llama_backend, params)
    assert full.completion_tokens > 10
    pieces: list[str] = []
    with pytest.raises(Cancelled):
        llama_backend.generate(params, pieces.append, lambda: len(pieces) >= 3)
    assert len(pieces) == 3
    assert full.text.startswith("".join(pieces))
    # The context was left mid-sequence; the next job must not notice.
    again, _ = run(llama_backend, params)
    assert again.text == full.text


@pytest.mark.llm
def test_llama_concurrent_jobs_take_turns(llama_cpp_module: Any) -> None:
    """Two jobs at once answer as each does alone. On a fresh engine and with prompts too short
    to keep, so that no kept prompt's cells change where in the cache their tokens sit (which
    changes the last bits of the sums: docs/prefix-routing.md)."""
    from node_agent.backends.llama_cpp_generation import LlamaCppGenerationBackend

    backend = LlamaCppGenerationBackend(probe=False)
    prompts = ["Colours: red, green,", "Animals: cat, dog,"]

    def params(prompt: str) -> GenerateParams:
        return GenerateParams(prompt, 16, raw_prompt=True)

    try:
        alone = [run(backend, params(p))[0].text for p in prompts]
        results: dict[int, str] = {}

        def job(i: int) -> None:
            results[i] = run(backend, params(prompts[i]))[0].text

        threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert [results[0], results[1]] == alone
        assert backend.kept_state_hits == 0 and all(alone)
    finally:
        backend.close()


@pytest.mark.llm
def test_llama_prompt_longer_than_context_is_refused(llama_backend: Any) -> None:
    with pytest.raises(ValueError, match="context window"):
        llama_backend.generate(GenerateParams("word " * 3000, 8), lambda s: None, lambda: False)


@pytest.mark.llm
def test_llama_one_seed_gives_one_answer_cold_or_warm(llama_backend: Any) -> None:
    params = GenerateParams("Write a word.", 12, temperature=1.0, seed=11)
    llama_backend._llm.reset()  # cold: nothing of this prompt in the KV cache
    cold = run(llama_backend, params)[0].text
    warm = [run(llama_backend, params)[0].text for _ in range(2)]
    assert warm == [cold, cold]


@pytest.mark.llm
def test_llama_raw_prompt_stop_strings_and_conversations(llama_backend: Any) -> None:
    raw = GenerateParams("1, 2, 3, 4, 5,", 16, raw_prompt=True)
    counted, _ = run(llama_backend, raw)
    # No chat template: the prompt is the text continued, its own few tokens after BOS.
    assert counted.prompt_tokens <= 16 and "," in counted.text
    stopped, pieces = run(llama_backend, GenerateParams("1, 2, 3, 4, 5,", 16, raw_prompt=True,
                                                        stop=(",",)))
    assert stopped.text == counted.text[:counted.text.index(",")]
    assert stopped.finish_reason == "stop" and "".join(pieces) == stopped.text
    chat = GenerateParams("", 16, messages=(("system", "Answer in one word."),
                                            ("user", "Name a colour."),
                                            ("assistant", "Blue."), ("user", "Another.")))
    out, _ = run(llama_backend, chat)
    last_turn, _ = run(llama_backend, GenerateParams("", 16, messages=(
        ("system", "Answer in one word."), ("user", "Another."))))
    # The earlier turns are in the prompt, each with the template's markers.
    assert out.text and out.prompt_tokens >= last_turn.prompt_tokens + 8


SYSTEM_A = ("You are the support desk of a Bitcoin miner that also sells AI inference. "
            "Answer in one short sentence, politely, and never promise a date. ") * 6
SYSTEM_B = ("You write product names for a hosting company: short, friendly, memorable, and "
            "never with numbers in them. Give one name only. ") * 6


@pytest.mark.llm
def test_llama_keeps_more_than_one_prefix_and_reports_their_blocks(llama_cpp_module: Any) -> None:
    """Two system prompts in turn: the second visit of each starts from its kept state (only
    the new turn is evaluated), answers as it did cold, and its blocks are reported."""
    from node_agent.backends.llama_cpp_generation import LlamaCppGenerationBackend
    from scheduler.core.prefix import prefix_blocks, prompt_text

    backend = LlamaCppGenerationBackend(probe=False)

    def ask(system: str, question: str) -> tuple[GenerateOutput, int]:
        messages = (("system", system), ("user", question))
        before = backend.evaluated_tokens
        out, _ = run(backend, GenerateParams("", 6, messages=messages))
        return out, backend.evaluated_tokens - before

    first_a, cold_a = ask(SYSTEM_A, "When is my payout?")
    _, cold_b = ask(SYSTEM_B, "A name for a GPU plan?")
    assert cold_a > 100 and cold_b > 100  # each system prompt evaluated whole, once
    again_a, warm_a = ask(SYSTEM_A, "When is my payout?")
    assert backend.kept_state_hits >= 1
    assert warm_a == 0  # the whole prompt (less its last token) came from the kept state
    assert first_a.cached_prompt_tokens == 0
    assert again_a.cached_prompt_tokens == again_a.prompt_tokens - 1  # as usage reports it
    assert again_a.text == first_a.text
    _, other_question = ask(SYSTEM_A, "Can I change my pool?")
    assert other_question < cold_a / 4  # the system prompt was not evaluated again
    held = set(backend.prefix_blocks())
    for system in (SYSTEM_A, SYSTEM_B):
        chain = prefix_blocks(prompt_text((("system", system), ("user", "x")), "", raw=False))
        assert chain and chain[0] in held
