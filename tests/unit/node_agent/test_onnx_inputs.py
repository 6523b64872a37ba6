"""How the ONNX backend turns texts into model inputs: the shipped tokenizer, truncation at 256,
padding per batch. The model run itself is in tests/integration/test_backends_llm.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from node_agent.backends.onnx_embedding import (
    MAX_TOKENS,
    OnnxEmbeddingBackend,
    default_tokenizer_dir,
    pad_batch,
)


def test_pad_batch_right_pads_and_masks() -> None:
    batch = pad_batch([[101, 7, 102], [101, 102]], [[0, 0, 0], [0, 0]], pad_id=0)
    assert batch.input_ids.dtype == np.int64
    assert batch.input_ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.token_type_ids.tolist() == [[0, 0, 0], [0, 0, 0]]
    assert batch.token_count == 5


def test_shipped_tokenizer_is_present_with_attribution() -> None:
    folder = default_tokenizer_dir()
    assert (folder / "tokenizer.json").is_file()
    assert "Apache" in (folder / "ATTRIBUTION.md").read_text()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is True


@pytest.fixture(scope="module")
def backend() -> OnnxEmbeddingBackend:
    # max_batch=2 so three texts take two batches.
    return OnnxEmbeddingBackend(max_batch=2)


def test_tokenize_adds_cls_sep_and_truncates_at_256(backend: OnnxEmbeddingBackend) -> None:
    raw = Tokenizer.from_file(str(default_tokenizer_dir() / "tokenizer.json"))
    cls_id, sep_id = raw.token_to_id("[CLS]"), raw.token_to_id("[SEP]")
    (short_ids, _), (long_ids, _) = backend.tokenize(["Hello", "word " * 1000])
    assert short_ids[0] == cls_id and short_ids[-1] == sep_id
    # The shipped tokenizer.json truncates at 128; the backend must use the model's 256.
    assert len(long_ids) == MAX_TOKENS
    assert long_ids[-1] == sep_id


def test_embed_keeps_input_order_across_length_sorted_batches(
    backend: OnnxEmbeddingBackend,
) -> None:
    texts = ["a much longer sentence about mining power prices", "short", "mid length one"]
    together = backend.embed(texts)
    alone = [backend.embed([t]).vectors[0] for t in texts]
    for got, want in zip(together.vectors, alone, strict=True):
        assert len(got) == 384
        np.testing.assert_allclose(got, want, atol=1e-4)
    # Prompt tokens count the real tokens (with [CLS]/[SEP]) of every text, not the padding.
    assert together.prompt_tokens == sum(len(ids) for ids, _ in backend.tokenize(texts))
    assert backend.embed([]).vectors == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        OnnxEmbeddingBackend(intra_op_threads=0)
    with pytest.raises(ValueError):
        OnnxEmbeddingBackend(max_batch=65)
