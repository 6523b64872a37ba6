"""Prefix-aware placement: a node whose engine holds a job's prompt prefix saves its prefill, and
that saving is weighed against the node's backlog; with the weight at 0 the caches are ignored.
The same answer whether the nodes come as a list or as the kept index."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core.models import Tier
from scheduler.core.placement import (
    DEFAULT_PROFILE,
    Decision,
    Hold,
    JobRequest,
    NodeIndex,
    NodeView,
    Placement,
    place,
)
from scheduler.core.prefix import BLOCK_CHARS, prefix_blocks
from tests.unit.scheduler.core.builders import (
    GEN_MODEL,
    T0_S,
    make_job,
    make_node,
    make_site,
    sites_by_name,
)

CHAIN = prefix_blocks("s" * BLOCK_CHARS * 8)  # about 512 tokens of system prompt


def job(chain: tuple[int, ...] = CHAIN) -> JobRequest:
    return replace(make_job("j1", tier="interactive", model=GEN_MODEL, input_tokens=600,
                            output_tokens_est=8), prefix_blocks=chain)


def nodes(holder_backlog_s: float = 0.0) -> list[NodeView]:
    rate = {GEN_MODEL: 300.0}
    return [
        make_node("n1", models=(GEN_MODEL,), tokens_per_s=rate),
        replace(make_node("n2", models=(GEN_MODEL,), tokens_per_s=rate),
                prefix_blocks=frozenset(CHAIN), backlog_s=holder_backlog_s),
    ]


def where(decisions: list[Decision]) -> str:
    (decision,) = decisions
    assert isinstance(decision, Placement)
    return decision.node_id


@pytest.mark.parametrize("as_index", [False, True])
def test_the_node_holding_the_prefix_wins_a_tie_on_load(as_index: bool) -> None:
    views = nodes()
    given = NodeIndex(views) if as_index else views
    assert where(place([job()], given, sites_by_name(make_site()), T0_S)) == "n2"
    # Without the prefix weight, the id order breaks the tie, as before prefix routing.
    off = replace(DEFAULT_PROFILE, prefix_cache_weight=0.0)
    assert where(place([job()], NodeIndex(views) if as_index else views,
                       sites_by_name(make_site()), T0_S, off)) == "n1"


def test_a_busy_holder_loses_to_an_idle_node_when_its_backlog_costs_more() -> None:
    sites = sites_by_name(make_site())
    # 512 held tokens at the profile's 2,000 prefill tokens/s save about 0.26 s of waiting: a
    # backlog of 0.1 s is worth waiting for, one of 1 s is not.
    assert where(place([job()], nodes(holder_backlog_s=0.1), sites, T0_S)) == "n2"
    assert where(place([job()], nodes(holder_backlog_s=1.0), sites, T0_S)) == "n1"


def test_a_job_without_a_shared_prefix_is_placed_on_load_alone() -> None:
    other = prefix_blocks("t" * BLOCK_CHARS * 8)
    assert where(place([job(other)], nodes(), sites_by_name(make_site()), T0_S)) == "n1"
    assert where(place([job(())], nodes(), sites_by_name(make_site()), T0_S)) == "n1"


def test_the_saving_is_at_the_holders_own_measured_prefill_rate() -> None:
    # A CPU engine that evaluates 150 prompt tokens/s saves 3.4 s on 512 held tokens: worth a
    # backlog of 1 s, which the profile's default rate would not pay for.
    sites = sites_by_name(make_site())
    slow = [nodes(holder_backlog_s=1.0)[0],
            replace(nodes(holder_backlog_s=1.0)[1], prefill_tokens_per_s=150.0)]
    assert where(place([job()], slow, sites, T0_S)) == "n2"
    assert where(place([job()], nodes(holder_backlog_s=1.0), sites, T0_S)) == "n1"


# ----- waiting for a busy holder ------------------------------------------------------------

def busy_holder(backlog_s: float) -> list[NodeView]:
    rate = {GEN_MODEL: 300.0}
    return [
        make_node("n1", models=(GEN_MODEL,), tokens_per_s=rate),
        replace(make_node("n2", models=(GEN_MODEL,), tokens_per_s=rate, slots_free=0,
                          slots_total=1),
                prefix_blocks=frozenset(CHAIN), backlog_s=backlog_s),
    ]


def test_a_job_waits_for_the_busy_node_holding_its_prefix_when_its_slot_frees_sooner() -> None:
    # 512 held tokens at the profile's 2,000 tokens/s: 0.256 s of prefill saved.
    (decision,) = place([job()], busy_holder(0.1), sites_by_name(make_site()), T0_S)
    assert isinstance(decision, Hold)
    assert decision.node_id == "n2"
    assert decision.expected_wait_s == pytest.approx(0.1)
    assert decision.saved_s == pytest.approx(512 / 2000)


def test_a_job_goes_to_the_free_node_when_the_holder_is_busy_longer_than_it_saves() -> None:
    assert where(place([job()], busy_holder(1.0), sites_by_name(make_site()), T0_S)) == "n1"


def test_a_job_that_has_waited_what_the_prefix_saves_waits_no_longer() -> None:
    later_s = T0_S + 0.3  # past the 0.256 s the prefix would save
    assert where(place([job()], busy_holder(0.1), sites_by_name(make_site()), later_s)) == "n1"


def test_flex_work_and_a_zero_prefix_weight_never_wait_for_a_holder() -> None:
    flex = replace(job(), tier=Tier.FLEX, deferrable=False)
    assert where(place([flex], busy_holder(0.1), sites_by_name(make_site()), T0_S)) == "n1"
    off = replace(DEFAULT_PROFILE, prefix_cache_weight=0.0)
    assert where(place([job()], busy_holder(0.1), sites_by_name(make_site()), T0_S, off)) == "n1"


def test_a_held_job_is_parked_and_placed_on_the_holder_once_its_slot_frees() -> None:
    from scheduler.core.scheduler import NodeInfo, SchedulerCore, SchedulerPolicy
    from tests.unit.scheduler.core.builders import make_node_info, make_record

    core = SchedulerCore(SchedulerPolicy())
    for node_id in ("n1", "n2"):
        info: NodeInfo = make_node_info(node_id, models=(GEN_MODEL,))
        core.connect_node(info, (), T0_S)
        # A CPU engine: 512 held tokens at 150 tokens/s save 3.4 s, more than a job's 1 s.
        core.heartbeat(node_id, (), T0_S, prefill_tokens_per_s=150.0)
    text = "s" * BLOCK_CHARS * 8
    first = replace(make_record("a", tier="interactive", model=GEN_MODEL, input_tokens=600))
    first = replace(first, spec=replace(first.spec, prefix_blocks=prefix_blocks(text)))
    core.submit(first)
    step = core.schedule(T0_S)
    (held_on,) = [d.node_id for d in step.decisions if isinstance(d, Placement)]
    # The node now holds the prefix and is busy; the next turn of the conversation arrives.
    second = replace(first, job_id="b", idempotency_key="")
    core.submit(second)
    step = core.schedule(T0_S + 0.01)
    assert [type(d) for d in step.decisions] == [Hold]
    assert core.jobs["b"].state.value == "queued"
    core.job_started(held_on, "a", 1, T0_S + 0.02)
    core.job_outcome(held_on, "a", 1, T0_S + 0.05, result_blob=b"x", run_ms=30.0, tokens=608)
    step = core.schedule(T0_S + 0.06)
    assert [d.node_id for d in step.decisions if isinstance(d, Placement)] == [held_on]


@pytest.mark.parametrize("as_index", [False, True])
def test_a_nodes_measured_load_time_is_its_cold_start(as_index: bool) -> None:
    from scheduler.core.placement import ScoringProfile

    def cold(node_id: str, load_s: float | None) -> NodeView:
        view = make_node(node_id, models=(GEN_MODEL,), tokens_per_s={GEN_MODEL: 300.0})
        return view if load_s is None else replace(view, cold_start_s={GEN_MODEL: load_s})

    views = [cold(f"a{i}", 30.0) for i in range(20)] + [cold(f"b{i}", 0.5) for i in range(20)]
    given = NodeIndex(views) if as_index else views
    profile: ScoringProfile = DEFAULT_PROFILE
    (decision,) = place([replace(job(), prefix_blocks=())], given,
                        sites_by_name(make_site()), T0_S, profile)
    assert isinstance(decision, Placement)
    assert decision.node_id.startswith("b")  # 0.5 s to load beats 30 s
    assert decision.score.warmth_usd == pytest.approx(0.5 * profile.wait_usd_per_s[job().tier])
    unmeasured = [cold("c", None)]
    (decision,) = place([replace(job(), prefix_blocks=())], unmeasured,
                        sites_by_name(make_site()), T0_S, profile)
    assert isinstance(decision, Placement)
    assert decision.score.warmth_usd == pytest.approx(
        profile.cold_start_s * profile.wait_usd_per_s[job().tier])


# ----- the index path decides as the scan, prefixes included ---------------------------------

def test_the_index_path_decides_as_the_scan_with_prefixes_held() -> None:
    """Random fleets whose engines hold some of a few system prompts (whole or in part) and
    queues of jobs over them: `place()` on a kept index, changed node by node, and on a list
    decide exactly as the scan, holds and score terms included."""
    import random

    from scheduler.core.placement import place_by_scan
    from tests.unit.scheduler.core.test_placement_fast import NOW_S, random_fleet, random_job

    chains = [prefix_blocks(f"system prompt {k} " * (BLOCK_CHARS // 4)) for k in range(4)]
    kinds: dict[str, int] = {}
    for seed in range(60):
        rng = random.Random(seed)
        fleet, sites = random_fleet(rng, rng.choice([5, 40, 120]))
        fleet = [
            replace(view, models=view.models | {GEN_MODEL},
                    prefix_blocks=frozenset(b for c in rng.sample(chains, rng.randint(1, 2))
                                            for b in c[: rng.randint(1, len(c))]),
                    prefill_tokens_per_s=rng.choice([0.0, 150.0, 2_000.0]))
            if rng.random() < 0.5 else view
            for view in fleet
        ]
        jobs = [
            replace(random_job(rng, f"j{k}"), model=GEN_MODEL, allowed_regions=frozenset(),
                    prefix_blocks=rng.choice([*chains, ()]),
                    input_tokens=rng.randint(200, 3_000))
            for k in range(rng.randint(1, 10))
        ]
        expected = place_by_scan(jobs, fleet, sites, NOW_S)
        assert place(jobs, fleet, sites, NOW_S) == expected, f"seed {seed}"
        kept = NodeIndex()
        for view in fleet:  # joins, then changes of what each engine holds
            kept.upsert(replace(view, prefix_blocks=frozenset()))
        kept.refresh()
        for view in fleet:
            kept.upsert(view)
        assert place(jobs, kept, sites, NOW_S) == expected, f"seed {seed}"
        for d in expected:
            name = type(d).__name__
            if isinstance(d, Placement) and d.score.prefix_usd:
                name = "Placement:prefix"
            kinds[name] = kinds.get(name, 0) + 1
    # Every kind came up, so agreement is not vacuous.
    assert {"Placement", "Placement:prefix", "Hold", "Unplaceable"} <= set(kinds), kinds


def test_the_index_forgets_what_a_node_no_longer_holds() -> None:
    views = nodes()
    index = NodeIndex(views)
    assert index.holding(CHAIN[0]).tolist() == [1]
    index.upsert(replace(views[1], prefix_blocks=frozenset()))
    index.upsert(replace(views[0], prefix_blocks=frozenset(CHAIN[:1])))
    assert index.holding(CHAIN[0]).tolist() == [0]
    index.remove("n1")
    assert index.holding(CHAIN[0]).tolist() == []
    assert where(place([job()], index, sites_by_name(make_site()), T0_S)) == "n2"
