"""Sentence embeddings from token states: attention-masked mean pooling, then L2 normalisation.

This is how sentence-transformers turns all-MiniLM-L6-v2's `last_hidden_state` into a sentence
vector (its `1_Pooling/config.json` sets `pooling_mode_mean_tokens`, and the model card adds a
`Normalize` layer). Pure numpy, so the maths is unit-tested apart from any model; the ONNX backend
leaves the model run and the tokenizer to others and only calls this.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Guards the division for an all-padding row (cannot come from the tokenizer, which always adds
# [CLS] and [SEP], but a zero vector must not turn into NaN). sentence-transformers clamps the
# token count at 1e-9 the same way.
_MIN_TOKEN_COUNT = 1e-9
_MIN_NORM = 1e-12


def masked_mean_pool(
    last_hidden_state: npt.NDArray[np.floating], attention_mask: npt.NDArray[np.integer]
) -> npt.NDArray[np.float32]:
    """Mean of each row's token vectors over the tokens whose mask is 1.

    `last_hidden_state` is [batch, tokens, dim], `attention_mask` is [batch, tokens] of 0/1.
    Returns [batch, dim] float32.
    """
    if last_hidden_state.ndim != 3 or attention_mask.ndim != 2:
        raise ValueError(
            f"expected states [batch, tokens, dim] and mask [batch, tokens], got "
            f"{last_hidden_state.shape} and {attention_mask.shape}"
        )
    if last_hidden_state.shape[:2] != attention_mask.shape:
        raise ValueError(
            f"states {last_hidden_state.shape} and mask {attention_mask.shape} disagree"
        )
    mask = attention_mask.astype(np.float32)[:, :, None]
    summed = (last_hidden_state.astype(np.float32) * mask).sum(axis=1)
    counts = np.maximum(mask.sum(axis=1), _MIN_TOKEN_COUNT)
    return (summed / counts).astype(np.float32)


def l2_normalise(vectors: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Each row divided by its Euclidean norm (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, _MIN_NORM)).astype(np.float32)


def sentence_embeddings(
    last_hidden_state: npt.NDArray[np.floating], attention_mask: npt.NDArray[np.integer]
) -> npt.NDArray[np.float32]:
    """Masked mean pooling followed by L2 normalisation: the model's sentence vectors."""
    return l2_normalise(masked_mean_pool(last_hidden_state, attention_mask))
