"""The placer: filters and their status codes, USD scores worked by hand, the queue order, flex
deferral, and a brute-force oracle on small random fleets.

Numbers used throughout (builders' defaults): a MiniLM job of 200 tokens on a node with no learned
rate runs at the profile's 100 tokens/s, so 2 s; the node draws 0.3 kW idle and 0.7 kW busy, so
the job costs 0.4 kW * 2 s = 0.8 kJ = 0.000222 kWh = 2.2222e-7 MWh of marginal energy.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from scheduler.core.models import DEFAULT_CATALOGUE, Tier
from scheduler.core.placement import (
    DEFAULT_PROFILE,
    Deferral,
    JobRequest,
    NodeView,
    Placement,
    SiteView,
    StatusCode,
    Unplaceable,
    place,
    queue_order,
)
from scheduler.core.placement.filters import (
    DEFAULT_FILTERS,
    FilterFn,
    has_capacity,
    memory_fits,
    model_served,
    node_healthy,
    node_serving,
    region_allowed,
)
from scheduler.core.placement.scores import score
from tests.unit.scheduler.core.builders import (
    EMBED_MODEL,
    GEN_MODEL,
    T0_S,
    make_job,
    make_node,
    make_site,
    sites_by_name,
)

JOB_MWH = 0.4 * 2.0 / 3600.0 / 1000.0  # 2.2222e-7 MWh, see the module docstring


def _one(decisions: Sequence[object]) -> object:
    assert len(decisions) == 1
    return decisions[0]


# ----- filters ---------------------------------------------------------------------------------

FILTER_CASES = [
    # (id, filter, node changes, job changes, expected code)
    ("model", model_served, {"models": frozenset({GEN_MODEL})}, {}, StatusCode.UNRESOLVABLE),
    (
        "region", region_allowed, {"region": "r2"}, {"allowed_regions": frozenset({"r1"})},
        StatusCode.UNRESOLVABLE,
    ),
    ("memory", memory_fits, {"memory_mb": 64}, {"memory_mb": 128}, StatusCode.UNRESOLVABLE),
    ("healthy", node_healthy, {"healthy": False}, {}, StatusCode.UNSCHEDULABLE),
    ("serving", node_serving, {"serving": False}, {}, StatusCode.UNSCHEDULABLE),
    ("capacity", has_capacity, {"slots_free": 0}, {}, StatusCode.UNSCHEDULABLE),
]


@pytest.mark.parametrize(
    ("check", "node_changes", "job_changes", "code"),
    [case[1:] for case in FILTER_CASES],
    ids=[case[0] for case in FILTER_CASES],
)
def test_each_filter_refuses_with_its_status_code(
    check: FilterFn,
    node_changes: dict[str, object],
    job_changes: dict[str, object],
    code: StatusCode,
) -> None:
    job = replace(make_job(), **job_changes)  # type: ignore[arg-type]
    good, bad = make_node(), replace(make_node(), **node_changes)  # type: ignore[arg-type]
    assert check(job, good) is None
    verdict = check(job, bad)
    assert verdict is not None
    assert verdict.plugin == check.__name__
    assert verdict.code is code
    # The same node alone in the fleet: the job is unplaceable with that code and reason.
    decision = _one(place([job], [bad], sites_by_name(make_site()), T0_S))
    assert isinstance(decision, Unplaceable)
    assert decision.code is code
    assert decision.reasons[0].startswith(f"{check.__name__}: ")


def test_default_node_passes_every_filter() -> None:
    assert [f(make_job(), make_node()) for f in DEFAULT_FILTERS] == [None] * len(DEFAULT_FILTERS)


def test_memory_fits_at_exactly_the_node_memory() -> None:
    assert memory_fits(make_job(memory_mb=128), make_node(memory_mb=128)) is None


def test_region_filter_passes_any_region_when_the_job_names_none() -> None:
    assert region_allowed(make_job(allowed_regions=()), make_node(region="r9")) is None


def test_the_most_permanent_reason_is_reported() -> None:
    # Wrong model AND no free slot: waiting for a slot would not help, so say "model".
    node = make_node(models=[GEN_MODEL], slots_free=0)
    decision = _one(place([make_job()], [node], {}, T0_S))
    assert isinstance(decision, Unplaceable)
    assert decision.code is StatusCode.UNRESOLVABLE
    assert decision.reasons == (f"model_served: no node serves {EMBED_MODEL}",)


def test_one_node_that_may_fit_later_makes_the_job_unschedulable_not_unresolvable() -> None:
    nodes = [make_node("n1", models=[GEN_MODEL]), make_node("n2", slots_free=0)]
    decision = _one(place([make_job()], nodes, {}, T0_S))
    assert isinstance(decision, Unplaceable)
    assert decision.code is StatusCode.UNSCHEDULABLE
    assert sorted(r.split(":")[0] for r in decision.reasons) == ["has_capacity", "model_served"]


def test_an_empty_fleet_is_unresolvable() -> None:
    decision = _one(place([make_job()], [], {}, T0_S))
    assert decision == Unplaceable("j1", StatusCode.UNRESOLVABLE, ("no nodes",))


# ----- scores ----------------------------------------------------------------------------------


def test_cheapest_opportunity_price_wins_with_equal_queues() -> None:
    # Standard MiniLM job, 200 tokens, submitted now, no backlog anywhere:
    #   energy  s1: 2.2222e-7 MWh * 90 $/MWh = 2.0e-5 $;  s2: * 45 $/MWh = 1.0e-5 $
    #   delay   finish after 0 + 0 + 2 s at 1e-5 $/s (standard) -> 2e-5 $ (30 s target: not late)
    #   warmth  not warm: 2 s cold start * 1e-5 $/s = 2e-5 $
    # s2 wins: 1.0e-5 + 2e-5 + 2e-5 = 5.0e-5 $ against 6.0e-5 $ at s1.
    nodes = [make_node("n1", site="s1"), make_node("n2", site="s2")]
    sites = sites_by_name(
        make_site("s1", opportunity_usd_per_mwh=90.0), make_site("s2", opportunity_usd_per_mwh=45.0)
    )
    decision = _one(place([make_job(tier="standard")], nodes, sites, T0_S))
    assert isinstance(decision, Placement)
    assert (decision.node_id, decision.site, decision.region) == ("n2", "s2", "r1")
    assert decision.candidates == 2
    assert decision.score.energy_usd == pytest.approx(1.0e-5, rel=1e-9)
    assert decision.score.delay_usd == pytest.approx(2.0e-5, rel=1e-9)
    assert decision.score.warmth_usd == pytest.approx(2.0e-5, rel=1e-9)
    assert decision.score.total_usd == pytest.approx(5.0e-5, rel=1e-9)


def test_energy_is_priced_at_the_opportunity_price_not_the_power_price() -> None:
    # s1 buys power at 20 $/MWh but could sell its hashrate for 120 $/MWh of power: running AI
    # there forgoes 120. s2 pays 60 and has nothing better to do with it.
    nodes = [make_node("n1", site="s1"), make_node("n2", site="s2")]
    sites = sites_by_name(
        make_site("s1", price_usd_per_mwh=20.0, opportunity_usd_per_mwh=120.0),
        make_site("s2", price_usd_per_mwh=60.0, opportunity_usd_per_mwh=60.0),
    )
    decision = _one(place([make_job(tier="standard")], nodes, sites, T0_S))
    assert isinstance(decision, Placement) and decision.node_id == "n2"
    assert decision.score.energy_usd == pytest.approx(JOB_MWH * 60.0, rel=1e-9)  # 1.3333e-5 $


def test_a_learned_faster_rate_makes_a_node_cheaper() -> None:
    # n2 has run MiniLM at 400 tokens/s: 0.5 s, energy 0.4 kW * 0.5 s = 5.556e-8 MWh, a quarter.
    nodes = [make_node("n1"), make_node("n2", tokens_per_s={EMBED_MODEL: 400.0})]
    sites = sites_by_name(make_site(opportunity_usd_per_mwh=90.0))
    decision = _one(place([make_job(tier="standard")], nodes, sites, T0_S))
    assert isinstance(decision, Placement) and decision.node_id == "n2"
    assert decision.score.energy_usd == pytest.approx(JOB_MWH / 4 * 90.0, rel=1e-9)


def test_interactive_work_pays_for_cheap_power_with_a_queue_it_will_not_take() -> None:
    # Interactive waits at 1e-3 $/s. n2 is at half the price but has 10 s of backlog:
    #   n1: energy 2.2222e-7 * 90 = 2.0e-5; delay 1e-3 * 2 s = 2.0e-3           -> about 2.02e-3 $
    #   n2: energy 1.0e-5;                   delay 1e-3 * 12 s = 1.2e-2 (12 s > target 2 s:
    #       10 s late * 1e-2 $/s = 0.1 more)                                      -> about 0.112 $
    nodes = [
        make_node("n1", site="s1", warm_models=[EMBED_MODEL]),
        make_node("n2", site="s2", warm_models=[EMBED_MODEL], backlog_s=10.0),
    ]
    sites = sites_by_name(
        make_site("s1", opportunity_usd_per_mwh=90.0), make_site("s2", opportunity_usd_per_mwh=45.0)
    )
    decision = _one(place([make_job(tier="interactive")], nodes, sites, T0_S))
    assert isinstance(decision, Placement) and decision.node_id == "n1"
    assert decision.score.total_usd == pytest.approx(2.0e-5 + 2.0e-3, rel=1e-9)


def test_a_warm_model_saves_the_cold_start() -> None:
    # Same price; n2 has MiniLM loaded: standard warmth 0 instead of 2 s * 1e-5 $/s = 2e-5 $.
    nodes = [make_node("n1"), make_node("n2", warm_models=[EMBED_MODEL])]
    decision = _one(place([make_job(tier="standard")], nodes, {}, T0_S))
    assert isinstance(decision, Placement) and decision.node_id == "n2"
    assert decision.score.warmth_usd == 0.0


def test_region_restricted_job_never_leaves_its_region() -> None:
    nodes = [make_node("n1", site="s1", region="r1"), make_node("n2", site="s2", region="r2")]
    sites = sites_by_name(
        make_site("s1", "r1", opportunity_usd_per_mwh=200.0),
        make_site("s2", "r2", opportunity_usd_per_mwh=5.0),
    )
    job = make_job(tier="standard", allowed_regions=["r1"])
    decision = _one(place([job], nodes, sites, T0_S))
    assert isinstance(decision, Placement) and decision.region == "r1"
    # With r1 full, it waits rather than run in r2.
    full = [replace(nodes[0], slots_free=0), nodes[1]]
    decision = _one(place([job], full, sites, T0_S))
    assert isinstance(decision, Unplaceable) and decision.code is StatusCode.UNSCHEDULABLE


def test_ties_go_to_the_lower_node_id_whatever_the_input_order() -> None:
    nodes = [make_node("n-b"), make_node("n-c"), make_node("n-a")]
    for order in (nodes, nodes[::-1]):
        decision = _one(place([make_job()], order, {}, T0_S))
        assert isinstance(decision, Placement) and decision.node_id == "n-a"


def test_two_jobs_in_one_call_do_not_both_take_the_last_slot() -> None:
    cheap, dear = make_site("s1", opportunity_usd_per_mwh=10.0), make_site("s2")
    nodes = [make_node("n1", site="s1", slots_free=1), make_node("n2", site="s2", slots_free=1)]
    jobs = [make_job("j1", tier="standard"), make_job("j2", tier="standard")]
    decisions = place(jobs, nodes, sites_by_name(cheap, dear), T0_S)
    assert [(d.job_id, getattr(d, "node_id", None)) for d in decisions] == [
        ("j1", "n1"), ("j2", "n2")
    ]
    # One node, one slot: the second job is told to wait, for capacity.
    decisions = place(jobs, nodes[:1], sites_by_name(cheap), T0_S)
    assert isinstance(decisions[0], Placement)
    second = decisions[1]
    assert isinstance(second, Unplaceable)
    assert second.code is StatusCode.UNSCHEDULABLE
    assert second.reasons == ("has_capacity: all slots busy",)


def test_a_placement_in_the_same_call_adds_backlog_to_the_node() -> None:
    # n1 has 2 slots: after j1 (2 s on 2 slots -> 1 s of backlog per slot), j2 on n1 would finish
    # after 1 + 2 = 3 s. Standard delay: 1e-5 * 3 = 3e-5 $, warm now (j1 loaded the model): 0.
    node = make_node("n1", slots_free=2)
    jobs = [make_job("j1", tier="standard"), make_job("j2", tier="standard")]
    first, second = place(jobs, [node], {}, T0_S)
    assert isinstance(first, Placement) and isinstance(second, Placement)
    assert first.score.delay_usd == pytest.approx(2e-5, rel=1e-9)
    assert second.score.delay_usd == pytest.approx(3e-5, rel=1e-9)
    assert second.score.warmth_usd == 0.0


# ----- queue order -----------------------------------------------------------------------------


def test_interactive_before_standard_before_flex_then_earliest_deadline() -> None:
    jobs = [
        make_job("flex-early", tier="flex", deadline_s=T0_S + 100),
        make_job("std-late", tier="standard", deadline_s=T0_S + 900),
        make_job("std-early", tier="standard", deadline_s=T0_S + 300),
        make_job("inter", tier="interactive", deadline_s=T0_S + 600),
    ]
    expected = ["inter", "std-early", "std-late", "flex-early"]
    assert [j.job_id for j in sorted(jobs, key=queue_order)] == expected
    # One slot: the interactive job gets it; the decisions come back in queue order.
    decisions = place(jobs, [make_node()], {}, T0_S)
    assert [d.job_id for d in decisions] == expected
    assert [type(d).__name__ for d in decisions] == ["Placement"] + ["Unplaceable"] * 3


def test_equal_tier_and_deadline_go_first_come_then_by_id() -> None:
    a = make_job("a", submitted_s=T0_S + 5, deadline_s=T0_S + 900)
    b = make_job("b", submitted_s=T0_S, deadline_s=T0_S + 900)
    c = make_job("c", submitted_s=T0_S, deadline_s=T0_S + 900)
    assert [j.job_id for j in sorted([a, c, b], key=queue_order)] == ["b", "c", "a"]


# ----- flex deferral ---------------------------------------------------------------------------
# s1 costs 50 $/MWh now; the outlook says 10 $/MWh from T0 + 3600 s. A flex job (deadline
# T0 + 6 h) saves 2.2222e-7 MWh * (50 - 10) $/MWh = 8.889e-6 $, 80 % of its energy cost now, well
# over the 10 % threshold. The latest start keeping the 1800 s margin is deadline - 2 s - 1800 s.


def _deferral_sites(later_usd_per_mwh: float = 10.0, start_s: float = T0_S + 3600) -> dict[
    str, SiteView
]:
    return sites_by_name(
        make_site("s1", opportunity_usd_per_mwh=50.0, outlook=[(start_s, later_usd_per_mwh)])
    )


def test_flex_job_waits_for_a_much_cheaper_window() -> None:
    decision = _one(place([make_job(tier="flex")], [make_node()], _deferral_sites(), T0_S))
    assert isinstance(decision, Deferral)
    assert decision.until_s == T0_S + 3600
    assert decision.expected_saving_usd == pytest.approx(JOB_MWH * 40.0, rel=1e-9)  # 8.889e-6 $


@pytest.mark.parametrize(
    ("deadline_after_s", "deferred"),
    [
        (3600 + 2 + 1800, True),  # latest start is exactly the window start: still safe
        (3600 + 2 + 1800 - 1, False),  # one second short of the margin: run now
        (3600, False),  # the window opens at the deadline
    ],
)
def test_flex_job_too_close_to_its_deadline_runs_now(
    deadline_after_s: float, deferred: bool
) -> None:
    job = make_job(tier="flex", deadline_s=T0_S + deadline_after_s)
    decision = _one(place([job], [make_node()], _deferral_sites(), T0_S))
    assert isinstance(decision, Deferral if deferred else Placement)


@pytest.mark.parametrize("tier", ["interactive", "standard"])
def test_only_flex_jobs_are_deferred(tier: str) -> None:
    decision = _one(place([make_job(tier=tier)], [make_node()], _deferral_sites(), T0_S))
    assert isinstance(decision, Placement)


@pytest.mark.parametrize(
    ("later_usd_per_mwh", "deferred"),
    [
        (46.0, False),  # saves 4/50 = 8 % < 10 %: not worth the wait
        (44.0, True),  # saves 6/50 = 12 %
        (50.0, False),  # saves nothing
        (70.0, False),  # dearer later
    ],
)
def test_flex_deferral_needs_the_minimum_saving(
    later_usd_per_mwh: float, deferred: bool
) -> None:
    sites = _deferral_sites(later_usd_per_mwh)
    decision = _one(place([make_job(tier="flex")], [make_node()], sites, T0_S))
    assert isinstance(decision, Deferral if deferred else Placement)


@pytest.mark.parametrize("start_after_s", [0.0, -600.0])
def test_windows_that_already_began_are_not_waited_for(start_after_s: float) -> None:
    sites = _deferral_sites(start_s=T0_S + start_after_s)
    decision = _one(place([make_job(tier="flex")], [make_node()], sites, T0_S))
    assert isinstance(decision, Placement)


def test_only_windows_in_the_allowed_regions_count() -> None:
    sites = sites_by_name(
        make_site("s1", "r1", opportunity_usd_per_mwh=50.0),
        make_site("s2", "r2", opportunity_usd_per_mwh=50.0, outlook=[(T0_S + 3600, 1.0)]),
    )
    job = make_job(tier="flex", allowed_regions=["r1"])
    assert isinstance(_one(place([job], [make_node()], sites, T0_S)), Placement)
    anywhere = make_job(tier="flex")
    assert isinstance(_one(place([anywhere], [make_node()], sites, T0_S)), Deferral)


def test_the_cheapest_window_is_chosen() -> None:
    # s1: 30 $/MWh at +1 h; s2 (same region, no node of its own here): 10 $/MWh at +2 h.
    sites = sites_by_name(
        make_site("s1", opportunity_usd_per_mwh=50.0, outlook=[(T0_S + 3600, 30.0)]),
        make_site("s2", opportunity_usd_per_mwh=50.0, outlook=[(T0_S + 7200, 10.0)]),
    )
    decision = _one(place([make_job(tier="flex")], [make_node()], sites, T0_S))
    assert isinstance(decision, Deferral)
    assert decision.until_s == T0_S + 7200
    assert decision.expected_saving_usd == pytest.approx(JOB_MWH * 40.0, rel=1e-9)


# ----- brute-force oracle ----------------------------------------------------------------------

REGIONS = ("r1", "r2", "r3")
MODELS = (EMBED_MODEL, GEN_MODEL)


def _random_fleet(rng: random.Random) -> tuple[list[NodeView], dict[str, SiteView]]:
    sites = {}
    for i in range(rng.randint(1, 4)):
        sites[f"s{i}"] = make_site(
            f"s{i}", rng.choice(REGIONS),
            price_usd_per_mwh=rng.uniform(-10.0, 150.0),
            opportunity_usd_per_mwh=rng.uniform(-10.0, 150.0),
        )
    nodes = []
    for i in range(rng.randint(0, 6)):
        site_name = rng.choice(list(sites))
        region = sites[site_name].region
        if rng.random() < 0.1:  # a site the placer has no price for (new, or its feed is late)
            site_name, region = f"unpriced{i}", rng.choice(REGIONS)
        idle_kw = rng.uniform(0.05, 0.5)
        slots_free = rng.randint(0, 2)
        models = rng.sample(MODELS, rng.randint(1, 2))
        nodes.append(
            make_node(
                f"n{rng.randint(0, 99):02d}-{i}",
                site=site_name,
                region=region,
                models=models,
                memory_mb=rng.choice([64, 256, 1024]),
                slots_free=slots_free,
                slots_total=slots_free + rng.randint(0, 2) or 1,
                serving=rng.random() > 0.15,
                healthy=rng.random() > 0.1,
                idle_power_kw=idle_kw,
                busy_power_kw=idle_kw + rng.uniform(0.0, 1.0),
                tokens_per_s={m: rng.uniform(20.0, 800.0) for m in models if rng.random() < 0.5},
                warm_models=[m for m in models if rng.random() < 0.5],
                backlog_s=rng.choice([0.0, rng.uniform(0.0, 60.0)]),
            )
        )
    return nodes, sites


def _random_job(rng: random.Random, job_id: str, now_s: float) -> JobRequest:
    model = rng.choice(MODELS)
    submitted_s = now_s - rng.uniform(0.0, 600.0)
    return make_job(
        job_id,
        tier=rng.choice(list(Tier)),
        model=model,
        input_tokens=rng.randint(1, 2000),
        output_tokens_est=0 if model == EMBED_MODEL else rng.randint(1, 300),
        submitted_s=submitted_s,
        deadline_s=submitted_s + rng.uniform(60.0, 20_000.0),
        allowed_regions=rng.sample(REGIONS, rng.choice([0, 0, 1, 2])),
        memory_mb=DEFAULT_CATALOGUE[model].memory_mb,
    )


def _oracle(
    job: JobRequest, nodes: Sequence[NodeView], sites: Mapping[str, SiteView], now_s: float
) -> tuple[str, float, int] | StatusCode:
    """(best node, its total USD, candidates), or the code of the Unplaceable, by enumeration."""
    target_s = DEFAULT_CATALOGUE[job.model].tiers[job.tier].latency_target_s
    scored = []
    may_fit_later = False
    for node in nodes:
        verdicts = [f(job, node) for f in DEFAULT_FILTERS]
        failed = [v for v in verdicts if v is not None]
        if not failed:
            site = sites.get(node.site, SiteView(node.site, node.region))
            total = score(job, node, site, target_s, now_s, DEFAULT_PROFILE).total_usd
            scored.append((total, node.node_id))
        elif all(v.code is StatusCode.UNSCHEDULABLE for v in failed):
            may_fit_later = True
    if not scored:
        return StatusCode.UNSCHEDULABLE if may_fit_later else StatusCode.UNRESOLVABLE
    total, node_id = min(scored)
    return node_id, total, len(scored)


def test_place_matches_brute_force_for_one_job_on_small_random_fleets() -> None:
    now_s = T0_S
    outcomes: dict[str, int] = {}
    for seed in range(200):
        rng = random.Random(seed)
        nodes, sites = _random_fleet(rng)
        job = _random_job(rng, "j", now_s)
        decision = _one(place([job], nodes, sites, now_s))
        expected = _oracle(job, nodes, sites, now_s)
        if isinstance(expected, StatusCode):
            assert isinstance(decision, Unplaceable), f"seed {seed}: {decision}"
            assert decision.code is expected, f"seed {seed}: {decision}"
            outcomes[expected.value] = outcomes.get(expected.value, 0) + 1
        else:
            # No outlook in these fleets, so a flex job is never deferred.
            assert isinstance(decision, Placement), f"seed {seed}: {decision}"
            assert (decision.node_id, decision.candidates) == (expected[0], expected[2]), seed
            assert decision.score.total_usd == expected[1], f"seed {seed}"
            outcomes["placed"] = outcomes.get("placed", 0) + 1
    # The fleets exercise every outcome, so the oracle is not vacuously agreeing.
    assert min(outcomes.values()) >= 20 and len(outcomes) == 3, outcomes


def test_several_jobs_never_overbook_and_the_first_in_line_gets_the_oracle_node() -> None:
    now_s = T0_S
    for seed in range(200):
        rng = random.Random(1000 + seed)
        nodes, sites = _random_fleet(rng)
        jobs = [_random_job(rng, f"j{k}", now_s) for k in range(rng.randint(1, 4))]
        decisions = place(jobs, nodes, sites, now_s)
        in_order = sorted(jobs, key=queue_order)
        assert [d.job_id for d in decisions] == [j.job_id for j in in_order], seed
        by_id = {n.node_id: n for n in nodes}
        taken: dict[str, int] = {}
        for job, decision in zip(in_order, decisions, strict=True):
            if isinstance(decision, Placement):
                node = by_id[decision.node_id]
                assert all(f(job, node) is None for f in DEFAULT_FILTERS[:-1]), seed
                taken[node.node_id] = taken.get(node.node_id, 0) + 1
        assert all(taken[n] <= by_id[n].slots_free for n in taken), seed
        first = _oracle(in_order[0], nodes, sites, now_s)
        if isinstance(first, StatusCode):
            assert isinstance(decisions[0], Unplaceable) and decisions[0].code is first, seed
        else:
            assert isinstance(decisions[0], Placement) and decisions[0].node_id == first[0], seed
