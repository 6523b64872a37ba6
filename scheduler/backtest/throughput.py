"""How many tokens (input + output) per second one accelerator of a kind runs, per model.

The backtest turns tokens into GPU-hours with these rates, as the placer turns a job's tokens
into run time with a node's `tokens_per_s`. In the live system the rates are learned per node
(scheduler.core.estimates); a backtest has no jobs to learn from, so it needs a table. The unit
is one accelerator: a GPU of a GPU node, or the whole node when it has none (`gpus_per_node` 0).

Figures and where they come from:
- cpu-x86: the model catalogue's reference rates (scheduler/core/models.py), measured on this
  project's CPU machines: SmolLM2-135M ~100 tokens/s (llama.cpp), MiniLM-L6 int8 ~3,000 tokens/s.
- h100-sxm-8x, l40s-4x: ASSUMPTIONS, not measurements (no GPU was available to measure them).
  20,000 tokens/s per H100 for SmolLM2-135M counts prefill and decode together for the Azure
  traces' mix (about 1,700 input to 100 output tokens a request); it is deliberately below what a
  batched server (vLLM/SGLang) reaches with a 135M-parameter model, so GPU capacity is not
  overstated. MiniLM-L6 is a 23M-parameter encoder, ~7.5x the tokens/s. L40S: 0.4x H100, between
  their ratios of memory bandwidth (864 vs 3,350 GB/s, 0.26) and dense FP16 tensor throughput
  (362 vs 989 TFLOPS, 0.37) from NVIDIA's datasheets, rounded up for the small models' lighter
  memory traffic.
Override any of them with `--throughput KIND:MODEL=TOKENS_PER_S`.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler.core.models import DEFAULT_CATALOGUE

_H100_SMOLLM2 = 20_000.0
_L40S_FACTOR = 0.4
_MINILM_FACTOR = 7.5

DEFAULT_TOKENS_PER_S: Mapping[tuple[str, str], float] = {
    ("h100-sxm-8x", "smollm2-135m-instruct"): _H100_SMOLLM2,
    ("h100-sxm-8x", "all-minilm-l6-v2"): _H100_SMOLLM2 * _MINILM_FACTOR,
    ("l40s-4x", "smollm2-135m-instruct"): _H100_SMOLLM2 * _L40S_FACTOR,
    ("l40s-4x", "all-minilm-l6-v2"): _H100_SMOLLM2 * _L40S_FACTOR * _MINILM_FACTOR,
    **{
        ("cpu-x86", name): spec.reference_tokens_per_s
        for name, spec in DEFAULT_CATALOGUE.items()
    },
}


class UnknownThroughput(KeyError):
    pass


def tokens_per_s(
    kind: str, model: str, overrides: Mapping[tuple[str, str], float] | None = None
) -> float:
    key = (kind, model)
    if overrides and key in overrides:
        return float(overrides[key])
    if key in DEFAULT_TOKENS_PER_S:
        return float(DEFAULT_TOKENS_PER_S[key])
    raise UnknownThroughput(
        f"no throughput for {model} on {kind}: pass --throughput {kind}:{model}=TOKENS_PER_S"
    )


def parse_throughput(items: list[str] | tuple[str, ...]) -> dict[tuple[str, str], float]:
    """['h100-sxm-8x:smollm2-135m-instruct=25000', ...] -> {(kind, model): rate}."""
    out: dict[tuple[str, str], float] = {}
    for item in items:
        key, _, value = item.partition("=")
        kind, _, model = key.partition(":")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not kind or not model or rate <= 0:
            raise ValueError(f"throughput {item!r}: expected KIND:MODEL=TOKENS_PER_S (> 0)")
        out[(kind.strip(), model.strip())] = rate
    return out
