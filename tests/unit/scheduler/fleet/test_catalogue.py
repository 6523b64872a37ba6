"""The catalogue file: the shipped one is DEFAULT_CATALOGUE; a file offers a new model (its memory,
accelerator kinds and tier prices) without a code change; bad files name the field and the model;
the fleet file's prices win over the catalogue's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.core.models import (
    DEFAULT_CATALOGUE,
    KIND_DEFAULT_TIERS,
    MINILM,
    SMOLLM2,
    ModelKind,
    Tier,
    TierTerms,
    priced_catalogue,
)
from scheduler.fleet import (
    CatalogueError,
    default_catalogue_path,
    default_fleet_path,
    load_catalogue,
    load_fleet,
    parse_catalogue,
)
from scheduler.runtime.app import load_model_catalogue
from scheduler.settings import SchedulerSettings


def minimal() -> dict[str, Any]:
    return {
        "version": 1,
        "models": [
            {"name": "embed-small", "kind": "embedding", "max_input_tokens": 512,
             "memory_mb": 256, "embedding_dimensions": 768, "max_batch": 32},
            {"name": "llama-70b", "kind": "generation", "max_input_tokens": 8192,
             "max_output_tokens": 1024, "memory_mb": 143_360,
             "accelerators": ["h100", "a100"],
             "tiers": {"interactive": {"usd_per_million_tokens": 0.9, "latency_target_s": 20}}},
        ],
    }


def problems_of(data: Any) -> list[str]:
    with pytest.raises(CatalogueError) as info:
        parse_catalogue(data, "test.yaml")
    return info.value.problems


def test_the_shipped_file_is_the_default_catalogue_field_for_field() -> None:
    shipped = load_catalogue(default_catalogue_path())
    assert shipped == DEFAULT_CATALOGUE
    assert list(shipped) == list(DEFAULT_CATALOGUE)  # ListModels lists them in this order
    assert shipped["all-minilm-l6-v2"] == MINILM and shipped["smollm2-135m-instruct"] == SMOLLM2
    for spec in shipped.values():
        assert spec.accelerators == frozenset()  # the embedded models run on any node
        assert spec.tiers == KIND_DEFAULT_TIERS[spec.kind]


def test_a_new_model_maps_onto_model_spec_with_its_kinds_defaults_for_what_it_leaves_out() -> None:
    catalogue = parse_catalogue(minimal())
    assert list(catalogue) == ["embed-small", "llama-70b"]
    llama = catalogue["llama-70b"]
    assert llama.kind is ModelKind.GENERATION
    assert (llama.max_input_tokens, llama.max_output_tokens, llama.memory_mb) == (8192, 1024,
                                                                                  143_360)
    assert llama.accelerators == frozenset({"h100", "a100"})
    assert (llama.embedding_dimensions, llama.max_batch, llama.reference_tokens_per_s) == (
        0, 1, 100.0)
    gen = KIND_DEFAULT_TIERS[ModelKind.GENERATION]
    # Interactive: two terms given, the third the kind's; the other tiers wholly the kind's.
    assert llama.tiers[Tier.INTERACTIVE] == TierTerms(
        0.9, 20.0, gen[Tier.INTERACTIVE].default_deadline_s)
    assert llama.tiers[Tier.STANDARD] == gen[Tier.STANDARD]
    assert llama.tiers[Tier.FLEX] == gen[Tier.FLEX]
    embed = catalogue["embed-small"]
    assert embed.accelerators == frozenset()  # absent: any kind
    assert embed.tiers == KIND_DEFAULT_TIERS[ModelKind.EMBEDDING]
    assert (embed.max_output_tokens, embed.embedding_dimensions, embed.max_batch) == (0, 768, 32)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("models", 1, "kind"), "chat",
         "models[1] (llama-70b).kind: must be one of 'embedding' or 'generation' (got 'chat')"),
        (("models", 1, "memory_mb"), -1,
         "models[1] (llama-70b).memory_mb: must be >= 0 (got -1)"),
        (("models", 0, "max_input_tokens"), 0,
         "models[0] (embed-small).max_input_tokens: must be > 0 (got 0)"),
        (("models", 0, "max_batch"), 0, "models[0] (embed-small).max_batch: must be >= 1"),
        (("models", 1, "reference_tokens_per_s"), float("nan"),
         "models[1] (llama-70b).reference_tokens_per_s: Input should be a finite number"),
        (("models", 1, "tiers", "interactive", "usd_per_million_tokens"), -0.5,
         "models[1] (llama-70b).tiers.interactive.usd_per_million_tokens: must be >= 0"),
        (("models", 1, "tiers", "interactive", "default_deadline_s"), 0,
         "models[1] (llama-70b).tiers.interactive.default_deadline_s: must be > 0"),
        (("models", 1, "tiers", "premium"), {"usd_per_million_tokens": 2.0},
         "models[1] (llama-70b).tiers.premium: unknown field"),
        (("models", 1, "accelerators"), ["h100", "h100"],
         "models[1] (llama-70b).accelerators: h100 given more than once"),
        (("models", 1, "accelerators"), ["h100", "a100 x8"],
         "models[1] (llama-70b).accelerators[1]: String should match pattern"),
        (("models", 1, "name"), "llama 70b", "models[1] (llama 70b).name: String should match"),
        (("models", 1, "gpu"), "h100", "models[1] (llama-70b).gpu: unknown field"),
        (("version",), 2, "version: must be one of 1 (got 2)"),
    ],
)
def test_errors_name_the_field_and_the_model(
    path: tuple[Any, ...], value: Any, expected: str
) -> None:
    data = minimal()
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    problems = problems_of(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_missing_field_is_required() -> None:
    data = minimal()
    del data["models"][1]["memory_mb"]
    assert problems_of(data) == ["models[1] (llama-70b).memory_mb: required"]


def test_cross_checks_name_the_model() -> None:
    data = minimal()
    data["models"].append(copy.deepcopy(data["models"][0]))
    data["models"][0]["embedding_dimensions"] = 0
    data["models"][1]["max_output_tokens"] = 0
    data["models"][1]["tiers"]["interactive"]["latency_target_s"] = 600
    problems = problems_of(data)
    assert problems == [
        "models[0] (embed-small).embedding_dimensions: an embedding model needs >= 1",
        "models[1] (llama-70b).max_output_tokens: a generation model must allow >= 1 output "
        "token",
        "models[1] (llama-70b).tiers.interactive: latency_target_s (600) must be <= "
        "default_deadline_s (300)",
        "models[2] (embed-small).name: duplicate of models[0]",
    ]


def test_an_empty_catalogue_is_refused() -> None:
    assert problems_of({"models": []}) == ["models: List should have at least 1 item after "
                                           "validation, not 0"]
    assert problems_of({"version": 1}) == ["models: required"]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(CatalogueError, match=r"\(yaml\)"):
        load_catalogue(bad)
    for text in ("- just a list\n", ""):
        bad.write_text(text)
        with pytest.raises(CatalogueError, match="must be a mapping"):
            load_catalogue(bad)
    bad.write_text(yaml.safe_dump({"models": [{"name": "x", "kind": "vision"}]}))
    with pytest.raises(CatalogueError) as info:
        load_catalogue(bad)
    assert str(info.value) == (
        f"{bad}: invalid catalogue (3 problem(s)):\n"
        "  - models[0] (x).kind: must be one of 'embedding' or 'generation' (got 'vision')\n"
        "  - models[0] (x).max_input_tokens: required\n"
        "  - models[0] (x).memory_mb: required"
    )
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(minimal()))
    assert set(load_catalogue(good)) == {"embed-small", "llama-70b"}


def test_the_fleet_files_prices_win_over_the_catalogues() -> None:
    catalogue = parse_catalogue(minimal())
    priced = priced_catalogue(catalogue, {"llama-70b": {"standard": 0.4}})
    llama = priced["llama-70b"]
    assert llama.tiers[Tier.STANDARD].usd_per_million_tokens == 0.4  # the fleet file's
    assert llama.tiers[Tier.INTERACTIVE].usd_per_million_tokens == 0.9  # the catalogue's
    assert llama.tiers[Tier.STANDARD].latency_target_s == (
        KIND_DEFAULT_TIERS[ModelKind.GENERATION][Tier.STANDARD].latency_target_s)
    assert llama.accelerators == catalogue["llama-70b"].accelerators  # prices only
    assert priced["embed-small"] == catalogue["embed-small"]


def test_the_scheduler_reads_the_catalogue_setting(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HASHSERVE_CATALOGUE_PATH", raising=False)
    assert load_model_catalogue(None) == DEFAULT_CATALOGUE
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(minimal()))
    monkeypatch.setenv("HASHSERVE_CATALOGUE_PATH", str(path))
    settings = SchedulerSettings.model_validate({})
    assert settings.catalogue_path == str(path)
    assert set(load_model_catalogue(settings.catalogue_path)) == {"embed-small", "llama-70b"}


def test_the_example_fleet_prices_the_shipped_catalogue_as_it_stands() -> None:
    # Both price the embedded models alike, so which one wins changes nothing out of the box.
    fleet = load_fleet(default_fleet_path())
    priced = priced_catalogue(DEFAULT_CATALOGUE, fleet.tier_prices_usd_per_million_tokens)
    assert priced == DEFAULT_CATALOGUE


def test_the_readmes_example_is_a_valid_catalogue() -> None:
    readme = (Path(__file__).resolve().parents[4] / "README.md").read_text()
    after = readme.split("`--catalogue FILE`", 1)[1]
    example = after.split("```yaml\n", 1)[1].split("```", 1)[0]
    catalogue = parse_catalogue(yaml.safe_load(example), "README.md")
    llama = catalogue["llama-70b"]
    assert llama.accelerators == frozenset({"h100", "a100"}) and llama.memory_mb == 143_360
    assert llama.tiers[Tier.FLEX] == TierTerms(0.30, 3600.0, 43_200.0)
