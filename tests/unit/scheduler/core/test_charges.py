"""A job earns for the tokens it used, at the price per token it was admitted at."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.scheduler.core.builders import make_record


def test_the_charge_follows_the_tokens_actually_used() -> None:
    rec = make_record(input_tokens=100, output_tokens_est=300)
    rec = replace(rec, spec=replace(rec.spec, value_usd=0.0004))  # 400 tokens at $1/Mtok
    assert rec.charged_usd(400) == pytest.approx(0.0004)
    # A generation that stopped after 50 of its 300 tokens: 150 tokens used.
    assert rec.charged_usd(150) == pytest.approx(0.00015)
    assert rec.charged_usd(0) == 0.0


def test_a_job_priced_at_nothing_earns_nothing() -> None:
    rec = make_record(input_tokens=0, output_tokens_est=0)
    assert rec.charged_usd(100) == 0.0


def test_the_fleet_file_prices_the_catalogue_and_leaves_the_rest_at_defaults() -> None:
    from scheduler.core.models import DEFAULT_CATALOGUE, Tier, priced_catalogue

    priced = priced_catalogue(DEFAULT_CATALOGUE, {"smollm2-135m-instruct": {"flex": 0.5}})
    gen = priced["smollm2-135m-instruct"]
    assert gen.tiers[Tier.FLEX].usd_per_million_tokens == 0.5
    default = DEFAULT_CATALOGUE["smollm2-135m-instruct"].tiers
    assert gen.tiers[Tier.STANDARD] == default[Tier.STANDARD]
    assert gen.tiers[Tier.FLEX].default_deadline_s == default[Tier.FLEX].default_deadline_s
    assert priced["all-minilm-l6-v2"] == DEFAULT_CATALOGUE["all-minilm-l6-v2"]
