"""The fleet file: the shipped example loads and fits the issue; bad files name the bad field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.core.fleet import REGIONS
from scheduler.core.market import PRICE_ZONE_CURRENCY
from scheduler.core.models import DEFAULT_CATALOGUE
from scheduler.fleet import FleetError, default_fleet_path, load_fleet, parse_fleet


def minimal() -> dict[str, Any]:
    return {
        "version": 1,
        "fx_usd_per_unit": {"USD": 1.0, "EUR": 1.07764},
        "tiers": {"m1": {"interactive": 0.2, "flex": 0.08}},
        "sites": [
            {
                "name": f"site-{i}",
                "region": "europe",
                "price_zone": "DE-LU",
                "power_cap_mw": 10,
                "asic": {"hashrate_phs": 400, "efficiency_j_per_th": 20, "pool_fee": 0.02,
                         "curtail_block_mw": 2.5, "ramp_s": 120},
                "gpus": [{"kind": "h100-sxm-8x", "count": 2, "gpus_per_node": 8,
                          "idle_power_kw": 3.0, "busy_power_kw": 10.2, "memory_mb": 655360,
                          "models": ["m1"]}],
            }
            for i in range(4)
        ],
    }


def problems_of(data: Any) -> list[str]:
    with pytest.raises(FleetError) as info:
        parse_fleet(data, "test.yaml")
    return info.value.problems


def test_the_example_fleet_is_a_large_miner_on_the_covered_zones() -> None:
    fleet = load_fleet(default_fleet_path())
    assert len(fleet.sites) >= 40
    assert {s.region for s in fleet.sites} == set(REGIONS)
    assert fleet.price_zones == set(PRICE_ZONE_CURRENCY)  # all 12 zones, no other
    assert 45_000 <= fleet.hashrate_phs <= 55_000  # ~50 EH/s
    assert 2_000 <= fleet.gpu_count <= 5_000  # a first few thousand GPUs
    assert set(fleet.fx_usd_per_unit) >= set(PRICE_ZONE_CURRENCY.values())
    assert fleet.fx_usd_per_unit["EUR"] == 1.07764  # the source repository's rate
    for model in DEFAULT_CATALOGUE:
        assert set(fleet.tier_prices_usd_per_million_tokens[model]) == {
            "interactive", "standard", "flex"}
    odessa = fleet.site("tx-odessa")
    # 2,700 PH/s at 17.5 J/TH = 47.25 MW, and an interconnect sized to it and its 10 kW of
    # CPU servers: a GPU node there takes its power from mining.
    assert odessa.asic.power_mw == pytest.approx(47.25)
    assert odessa.power_cap_mw == pytest.approx(47.26)
    assert odessa.gpu_groups[0].gpu_count == 240


def test_minimal_fleet_maps_onto_the_core_dataclasses() -> None:
    fleet = parse_fleet(minimal())
    site = fleet.sites[0]
    assert site.asic.power_mw == pytest.approx(8.0)  # 400 PH/s * 20 J/TH / 1000
    assert site.gpu_busy_mw == pytest.approx(0.0204)  # 2 nodes * 10.2 kW
    assert site.gpu_groups[0].models == ("m1",)
    assert fleet.tier_prices_usd_per_million_tokens["m1"]["flex"] == 0.08


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("sites", 3, "asic", "efficiency_j_per_th"), 0,
         "sites[3] (site-3).asic.efficiency_j_per_th: must be > 0 (got 0)"),
        (("sites", 1, "asic", "pool_fee"), 1.5, "sites[1] (site-1).asic.pool_fee: must be < 1"),
        (("sites", 0, "power_cap_mw"), -5, "sites[0] (site-0).power_cap_mw: must be > 0"),
        (("sites", 2, "price_zone"), "SE-3",
         "sites[2] (site-2).price_zone: 'SE-3' is not a zone the price data covers"),
        (("sites", 2, "region"), "africa", "sites[2] (site-2).region: must be one of"),
        (("sites", 0, "gpus", 0, "count"), -1, "sites[0] (site-0).gpus[0].count: must be >= 0"),
        (("sites", 0, "gpus", 0, "idle_power_kw"), 20.0,
         "sites[0] (site-0).gpus[0]: idle_power_kw (20) must be <= busy_power_kw (10.2)"),
        (("sites", 0, "asic", "hashrate"), 5, "sites[0] (site-0).asic.hashrate: unknown field"),
        (("fx_usd_per_unit", "EUR"), 0.0, "fx_usd_per_unit: every rate must be > 0"),
        (("tiers", "m1", "premium"), 1.0, "tiers: m1.premium: unknown tier"),
    ],
)
def test_errors_name_the_bad_field(path: tuple[Any, ...], value: Any, expected: str) -> None:
    data = minimal()
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    problems = problems_of(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_missing_field_is_required() -> None:
    data = minimal()
    del data["sites"][1]["asic"]["ramp_s"]
    assert problems_of(data) == ["sites[1] (site-1).asic.ramp_s: required"]


def test_cross_checks_name_the_field() -> None:
    data = minimal()
    data["sites"][2]["name"] = "site-0"
    data["sites"][3]["price_zone"] = "JP-TK"
    data["sites"][1]["gpus"][0]["models"] = ["m1", "m2"]
    problems = problems_of(data)
    assert "sites[2] (site-0).name: duplicate of sites[0]" in problems
    assert ("sites[3] (site-3).price_zone: JP-TK is priced in JPY, which has no rate in "
            "fx_usd_per_unit") in problems
    assert "sites[1] (site-1).gpus[0].models[1]: 'm2' has no prices in tiers" in problems


def test_every_problem_is_reported_at_once() -> None:
    data = minimal()
    data["sites"][0]["power_cap_mw"] = 0
    data["sites"][3]["asic"]["efficiency_j_per_th"] = -1
    assert len(problems_of(data)) == 2


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="cannot read"):
        load_fleet(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites: [unclosed\n")
    with pytest.raises(FleetError, match=r"\(yaml\)"):
        load_fleet(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(FleetError, match="must be a mapping"):
        load_fleet(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(copy.deepcopy(minimal())))
    assert len(load_fleet(good).sites) == 4
