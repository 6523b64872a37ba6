"""The model catalogue: what can be asked for, its limits, and what it costs per tier.

Pure data. Both the customer API (validation, ListModels) and the placer (memory and accelerator
filters) read it. The scheduler reads its catalogue from a file (`scheduler/fleet/catalogue.py`;
the shipped `scheduler/fleet/catalogue.yaml` is `DEFAULT_CATALOGUE` below, which a unit test holds
equal to it), then runs on `priced_catalogue(..., fleet prices)`: the fleet file's prices win.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum


class ModelKind(str, Enum):
    EMBEDDING = "embedding"
    GENERATION = "generation"


class Tier(str, Enum):
    INTERACTIVE = "interactive"
    STANDARD = "standard"
    FLEX = "flex"


@dataclass(frozen=True)
class TierTerms:
    usd_per_million_tokens: float
    latency_target_s: float  # queue + run time the tier promises
    default_deadline_s: float  # submit -> deadline when the customer gives none


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: ModelKind
    max_input_tokens: int
    max_output_tokens: int
    memory_mb: int
    embedding_dimensions: int = 0
    max_batch: int = 1
    # Rough tokens per second on the reference CPU node; the placer learns real rates per node.
    reference_tokens_per_s: float = 100.0
    tiers: dict[Tier, TierTerms] = field(default_factory=dict)
    # The accelerator kinds that may run it, matched against the `gpu_kind` an agent reports in
    # its hello ("cpu" for a CPU node); empty: any kind.
    accelerators: frozenset[str] = frozenset()
    # Serving targets that capacity planning (scheduler/core/capacity.py) keeps replicas for:
    # submit -> first token (an embedding: -> its answer), and between output tokens (0: none).
    ttft_target_s: float = 2.0
    per_token_target_s: float = 0.0


# Prices are illustrative SMB list prices (USD per million tokens), in line with 2025 public
# price sheets for small open models; ops override them in the fleet file.
_EMBED_TIERS = {
    Tier.INTERACTIVE: TierTerms(0.02, 2.0, 60.0),
    Tier.STANDARD: TierTerms(0.015, 30.0, 900.0),
    Tier.FLEX: TierTerms(0.008, 3600.0, 6 * 3600.0),
}
_GEN_TIERS = {
    Tier.INTERACTIVE: TierTerms(0.20, 10.0, 300.0),
    Tier.STANDARD: TierTerms(0.15, 120.0, 1800.0),
    Tier.FLEX: TierTerms(0.08, 3600.0, 6 * 3600.0),
}
# A catalogue file's model takes its kind's terms for any tier, or term, it leaves out.
KIND_DEFAULT_TIERS: dict[ModelKind, dict[Tier, TierTerms]] = {
    ModelKind.EMBEDDING: _EMBED_TIERS,
    ModelKind.GENERATION: _GEN_TIERS,
}

MINILM = ModelSpec(
    name="all-minilm-l6-v2",
    kind=ModelKind.EMBEDDING,
    max_input_tokens=256,  # the model's max_seq_length; longer texts are truncated
    max_output_tokens=0,
    memory_mb=128,
    embedding_dimensions=384,
    max_batch=64,
    reference_tokens_per_s=3000.0,
    tiers=_EMBED_TIERS,
    ttft_target_s=0.5,
)
SMOLLM2 = ModelSpec(
    name="smollm2-135m-instruct",
    kind=ModelKind.GENERATION,
    max_input_tokens=2048,
    max_output_tokens=512,
    memory_mb=512,
    reference_tokens_per_s=100.0,
    tiers=_GEN_TIERS,
    ttft_target_s=2.0,
    per_token_target_s=0.1,
)

DEFAULT_CATALOGUE: dict[str, ModelSpec] = {m.name: m for m in (MINILM, SMOLLM2)}


def priced_catalogue(
    catalogue: Mapping[str, ModelSpec], prices: Mapping[str, Mapping[str, float]]
) -> dict[str, ModelSpec]:
    """The catalogue at the fleet file's list prices (`prices[model][tier]`, USD per million
    tokens): admission, the value of AI work, accounting and the backtest all read them from
    here, so a price is set in one place. A model or tier the file leaves out keeps its default.
    """
    out = {}
    for name, spec in catalogue.items():
        given = prices.get(name, {})
        tiers = {
            tier: replace(terms, usd_per_million_tokens=float(given[tier.value]))
            if tier.value in given else terms
            for tier, terms in spec.tiers.items()
        }
        out[name] = replace(spec, tiers=tiers)
    return out
