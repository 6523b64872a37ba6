"""Masked mean pooling and L2 normalisation on hand-worked arrays."""

from __future__ import annotations

import numpy as np
import pytest

from node_agent.backends.pooling import l2_normalise, masked_mean_pool, sentence_embeddings

# Two rows of three tokens, two dimensions. Row 0 has a padding token holding junk (100, 100)
# that the mask must exclude; row 1 has a single real token.
STATES = np.array(
    [
        [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
        [[3.0, 4.0], [9.0, 9.0], [9.0, 9.0]],
    ],
    dtype=np.float32,
)
MASK = np.array([[1, 1, 0], [1, 0, 0]], dtype=np.int64)


def test_mean_ignores_masked_tokens() -> None:
    # Row 0: ((1+3)/2, (2+4)/2) = (2, 3). Row 1: only (3, 4).
    pooled = masked_mean_pool(STATES, MASK)
    np.testing.assert_allclose(pooled, [[2.0, 3.0], [3.0, 4.0]])
    assert pooled.dtype == np.float32


def test_normalise_divides_by_the_norm() -> None:
    # |(3, 4)| = 5 -> (0.6, 0.8); |(2, 3)| = sqrt(13).
    out = l2_normalise(np.array([[3.0, 4.0], [2.0, 3.0]]))
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(out[1], [2 / np.sqrt(13), 3 / np.sqrt(13)], rtol=1e-6)


def test_zero_row_stays_zero_not_nan() -> None:
    out = l2_normalise(np.zeros((1, 3)))
    assert np.all(out == 0.0)
    pooled = masked_mean_pool(np.ones((1, 2, 3)), np.zeros((1, 2), dtype=np.int64))
    assert np.all(np.isfinite(pooled)) and np.all(pooled == 0.0)


def test_sentence_embeddings_is_pool_then_normalise() -> None:
    out = sentence_embeddings(STATES, MASK)
    np.testing.assert_allclose(out, [[2 / np.sqrt(13), 3 / np.sqrt(13)], [0.6, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("states_shape", "mask_shape"),
    [((2, 3), (2, 3)), ((2, 3, 4), (2, 4)), ((2, 3, 4), (3, 3))],
)
def test_shape_mismatch_is_refused(
    states_shape: tuple[int, ...], mask_shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError):
        masked_mean_pool(np.zeros(states_shape), np.zeros(mask_shape, dtype=np.int64))
