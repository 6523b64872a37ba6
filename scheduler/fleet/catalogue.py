"""The model catalogue file: what customers may ask for, as validated YAML (pydantic v2).

What it decides: the file's fields, their units and allowed ranges, the checks no single field
makes (a unique name per model, an embedding model's dimensions, a generation model's output
tokens, a latency target within the default deadline), and how a model's tiers default: a tier,
or one term of it, that the file leaves out takes its kind's terms (`models.KIND_DEFAULT_TIERS`).
Errors name the field by path and the model by name, worded as the fleet file's are
(`models[1] (llama-70b).memory_mb: must be >= 0 (got -1)`).

The file is the whole catalogue: a model it leaves out is not offered (copy the shipped
`catalogue.yaml`, which is `models.DEFAULT_CATALOGUE`, to keep the embedded models). Prices set in
the fleet file's `tiers` win over the catalogue's (`models.priced_catalogue`), so a price set
there stays set whichever catalogue is loaded.

What it leaves to others: what the numbers mean (`scheduler.core.models`) and where a model may run
(the placer's memory and accelerator filters, `scheduler.core.placement.filters`).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from scheduler.core.models import KIND_DEFAULT_TIERS, ModelKind, ModelSpec, Tier, TierTerms
from scheduler.fleet.loader import ConfigFileError, format_errors

DEFAULT_CATALOGUE_FILE = "catalogue.yaml"

# A name as the customer gives it (the OpenAI SDK's `model`, `hashserve submit --model`) and as an
# agent's `--backend NAME=...` names it: no spaces, no `=`.
ModelName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]*$", max_length=128)
]
AcceleratorKind = Annotated[str, StringConstraints(pattern=r"^[^\s,]+$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierTermsModel(_Strict):
    usd_per_million_tokens: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    latency_target_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="queue + run time the tier promises"
    )
    default_deadline_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="submit -> deadline when the customer gives none",
    )


class TiersModel(_Strict):
    interactive: TierTermsModel = Field(default_factory=TierTermsModel)
    standard: TierTermsModel = Field(default_factory=TierTermsModel)
    flex: TierTermsModel = Field(default_factory=TierTermsModel)


class CatalogueEntry(_Strict):
    name: ModelName
    kind: Literal["embedding", "generation"]
    max_input_tokens: int = Field(gt=0)
    max_output_tokens: int = Field(default=0, ge=0, description="0 for an embedding model")
    memory_mb: int = Field(ge=0, description="accelerator memory a node needs for it, MB")
    embedding_dimensions: int = Field(default=0, ge=0, description="0 for a generation model")
    max_batch: int = Field(default=1, ge=1, description="texts per embedding job")
    reference_tokens_per_s: float = Field(
        default=100.0, gt=0, allow_inf_nan=False,
        description="rough rate on a reference node; the placer learns real rates per node",
    )
    accelerators: list[AcceleratorKind] = Field(
        default_factory=list, description="gpu_kind values that may run it; empty: any"
    )
    tiers: TiersModel = Field(default_factory=TiersModel)
    ttft_target_s: float = Field(
        default=2.0, gt=0, allow_inf_nan=False,
        description="submit -> first token (an embedding: its answer) that capacity plans for, s",
    )
    per_token_target_s: float = Field(
        default=0.0, ge=0, allow_inf_nan=False,
        description="time between output tokens that capacity plans for, s; 0: none",
    )

    @field_validator("accelerators")
    @classmethod
    def _no_repeats(cls, kinds: list[str]) -> list[str]:
        repeated = sorted({k for k in kinds if kinds.count(k) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} given more than once")
        return kinds


class CatalogueFile(_Strict):
    version: Literal[1] = 1
    models: list[CatalogueEntry] = Field(min_length=1)


class CatalogueError(ConfigFileError):
    """An invalid catalogue file; `problems` lists each as `path: message`."""

    what = "catalogue"


def default_catalogue_path() -> Path:
    """The catalogue shipped with the package: `DEFAULT_CATALOGUE`'s two embedded models."""
    return Path(str(resources.files("scheduler.fleet").joinpath(DEFAULT_CATALOGUE_FILE)))


def _tiers(entry: CatalogueEntry) -> dict[Tier, TierTerms]:
    defaults = KIND_DEFAULT_TIERS[ModelKind(entry.kind)]
    out: dict[Tier, TierTerms] = {}
    for tier in Tier:
        given: TierTermsModel = getattr(entry.tiers, tier.value)
        base = defaults[tier]
        out[tier] = TierTerms(
            usd_per_million_tokens=(
                base.usd_per_million_tokens
                if given.usd_per_million_tokens is None else given.usd_per_million_tokens
            ),
            latency_target_s=(
                base.latency_target_s if given.latency_target_s is None else given.latency_target_s
            ),
            default_deadline_s=(
                base.default_deadline_s
                if given.default_deadline_s is None else given.default_deadline_s
            ),
        )
    return out


def cross_check(catalogue: CatalogueFile) -> list[str]:
    """Problems no single field shows, each as `path: message`."""
    problems: list[str] = []
    first_index: dict[str, int] = {}
    for i, entry in enumerate(catalogue.models):
        where = f"models[{i}] ({entry.name})"
        if entry.name in first_index:
            problems.append(f"{where}.name: duplicate of models[{first_index[entry.name]}]")
        else:
            first_index[entry.name] = i
        if entry.kind == "embedding" and entry.embedding_dimensions < 1:
            problems.append(f"{where}.embedding_dimensions: an embedding model needs >= 1")
        if entry.kind == "generation" and entry.max_output_tokens < 1:
            problems.append(
                f"{where}.max_output_tokens: a generation model must allow >= 1 output token"
            )
        for tier, terms in _tiers(entry).items():
            if terms.latency_target_s > terms.default_deadline_s:
                problems.append(
                    f"{where}.tiers.{tier.value}: latency_target_s ({terms.latency_target_s:g}) "
                    f"must be <= default_deadline_s ({terms.default_deadline_s:g})"
                )
    return problems


def to_catalogue(catalogue: CatalogueFile) -> dict[str, ModelSpec]:
    """The validated file as the core's catalogue, in the file's order."""
    return {
        entry.name: ModelSpec(
            name=entry.name,
            kind=ModelKind(entry.kind),
            max_input_tokens=entry.max_input_tokens,
            max_output_tokens=entry.max_output_tokens,
            memory_mb=entry.memory_mb,
            embedding_dimensions=entry.embedding_dimensions,
            max_batch=entry.max_batch,
            reference_tokens_per_s=entry.reference_tokens_per_s,
            tiers=_tiers(entry),
            accelerators=frozenset(entry.accelerators),
            ttft_target_s=entry.ttft_target_s,
            per_token_target_s=entry.per_token_target_s,
        )
        for entry in catalogue.models
    }


def parse_catalogue(data: Any, source: str = "<catalogue>") -> dict[str, ModelSpec]:
    """Validate already-parsed YAML/JSON data and build the catalogue."""
    if not isinstance(data, Mapping):
        raise CatalogueError(source, ["(top level): must be a mapping with a list of models"])
    try:
        model = CatalogueFile.model_validate(data)
    except ValidationError as exc:
        raise CatalogueError(source, format_errors(exc, data)) from None
    problems = cross_check(model)
    if problems:
        raise CatalogueError(source, problems)
    return to_catalogue(model)


def load_catalogue(path: Path | str) -> dict[str, ModelSpec]:
    """Read and validate a catalogue YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(str(path), [f"(file): cannot read: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogueError(str(path), [f"(yaml): {exc}"]) from None
    return parse_catalogue(data, str(path))
