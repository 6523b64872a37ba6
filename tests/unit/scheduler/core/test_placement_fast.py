"""The node-index placer decides exactly as the straightforward loop: randomized equivalence.

`reference_place` below is the loop `place()` ran before the node index (every node through every
filter, every survivor scored, the lowest (total, node id) wins), copied here so that it cannot
drift with the code it checks. Random fleets and queues from fixed seeds are placed three ways:
by the reference, by `place()` on a list of views, and by `place()` on a `NodeIndex` (built once
and also changed incrementally); the decision lists must be equal, field for field, floats
included (the index path repeats the score arithmetic operation for operation).

The fleets are made to hit what could go wrong: identical nodes (ties to the lowest id), duplicate
node ids (the later view wins), nodes at sites without a price, flex jobs with outlooks (deferral),
nodes with zero marginal power (every window costs 0: ties on start time), full nodes and several
jobs per call (reservations within a call), region-restricted jobs including unknown regions,
models nobody serves, and non-finite numbers (the index path must hand those to the scan).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from scheduler.core.clock import ManualClock
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.models import DEFAULT_CATALOGUE, ModelSpec, Tier
from scheduler.core.placement import (
    DEFAULT_PROFILE,
    Decision,
    Deferral,
    JobRequest,
    NodeIndex,
    NodeView,
    Placement,
    ScoreBreakdown,
    ScoringProfile,
    SiteView,
    StatusCode,
    Unplaceable,
    place,
    place_by_scan,
    queue_order,
)
from scheduler.core.placement.filters import DEFAULT_FILTERS, FilterFn, has_capacity, model_served
from scheduler.core.placement.scores import energy_usd, estimated_run_s, score
from scheduler.core.placement.types import FilterVerdict
from scheduler.core.scheduler import SchedulerCore, SchedulerPolicy
from tests.unit.scheduler.core.builders import (
    EMBED_MODEL,
    GEN_MODEL,
    T0_S,
    make_job,
    make_node,
    make_node_info,
    make_record,
    make_site,
)

# ----- the reference: the loop as it was -------------------------------------------------------


def reference_place(
    jobs: Sequence[JobRequest],
    nodes: Sequence[NodeView],
    sites: Mapping[str, SiteView],
    now_s: float,
    profile: ScoringProfile = DEFAULT_PROFILE,
    filters: Sequence[FilterFn] = DEFAULT_FILTERS,
    catalogue: Mapping[str, ModelSpec] = DEFAULT_CATALOGUE,
) -> list[Decision]:
    working = {n.node_id: n for n in sorted(nodes, key=lambda n: n.node_id)}
    decisions: list[Decision] = []
    for job in sorted(jobs, key=queue_order):
        decision = _ref_place_one(job, working, sites, now_s, profile, filters, catalogue)
        decisions.append(decision)
        if isinstance(decision, Placement):
            node = working[decision.node_id]
            run_s = estimated_run_s(job, node, profile)
            working[node.node_id] = replace(
                node,
                slots_free=node.slots_free - 1,
                backlog_s=node.backlog_s + run_s / max(node.slots_total, 1),
                warm_models=node.warm_models | {job.model},
            )
    return decisions


def _ref_place_one(
    job: JobRequest,
    nodes: Mapping[str, NodeView],
    sites: Mapping[str, SiteView],
    now_s: float,
    profile: ScoringProfile,
    filters: Sequence[FilterFn],
    catalogue: Mapping[str, ModelSpec],
) -> Decision:
    spec = catalogue.get(job.model)
    if spec is None or job.tier not in spec.tiers:
        target_s = job.deadline_s - job.submitted_s
    else:
        target_s = spec.tiers[job.tier].latency_target_s
    best: tuple[float, str] | None = None
    best_score: ScoreBreakdown | None = None
    candidates = 0
    verdicts: dict[str, FilterVerdict] = {}
    for node in nodes.values():
        verdict = None
        for check in filters:
            verdict = check(job, node)
            if verdict is not None:
                break
        if verdict is not None:
            verdicts.setdefault(verdict.plugin, verdict)
            continue
        site = sites.get(node.site) or SiteView(node.site, node.region)
        breakdown = score(job, node, site, target_s, now_s, profile)
        candidates += 1
        key = (breakdown.total_usd, node.node_id)
        if best is None or key < best:
            best, best_score = key, breakdown
    if best is None or best_score is None:
        if not verdicts:
            return Unplaceable(job.job_id, StatusCode.UNRESOLVABLE, ("no nodes",))
        code = (
            StatusCode.UNSCHEDULABLE
            if any(v.code is StatusCode.UNSCHEDULABLE for v in verdicts.values())
            else StatusCode.UNRESOLVABLE
        )
        return Unplaceable(
            job.job_id, code, tuple(f"{v.plugin}: {v.reason}" for v in verdicts.values())
        )
    node = nodes[best[1]]
    if job.tier is Tier.FLEX:
        run_s = estimated_run_s(job, node, profile)
        latest_start_s = job.deadline_s - run_s - profile.defer_deadline_margin_s
        best_window: tuple[float, float] | None = None
        for site in sites.values():
            if job.allowed_regions and site.region not in job.allowed_regions:
                continue
            for window in site.outlook:
                if window.start_s <= now_s or window.start_s > latest_start_s:
                    continue
                cost = energy_usd(job, node, site, profile, window.opportunity_price_usd_per_mwh)
                if best_window is None or (cost, window.start_s) < best_window:
                    best_window = (cost, window.start_s)
        if best_window is not None:
            saving = best_score.energy_usd - best_window[0]
            # As written before (not its De Morgan twin, which differs for NaN).
            if saving <= 0 or saving < profile.defer_min_saving_ratio * abs(best_score.energy_usd):
                pass
            else:
                return Deferral(
                    job.job_id, until_s=best_window[1], expected_saving_usd=saving,
                    reason=f"cheaper power expected at t={best_window[1]:.0f}",
                )
    return Placement(job.job_id, node.node_id, node.site, node.region, best_score, candidates)


# ----- random fleets and queues ----------------------------------------------------------------

REGIONS = ("r1", "r2", "r3", "r4")
MODELS = (EMBED_MODEL, GEN_MODEL, "big-model")  # big-model: not in the catalogue
NOW_S = T0_S


def random_sites(rng: random.Random, n_sites: int) -> dict[str, SiteView]:
    sites = {}
    for i in range(n_sites):
        # Few distinct prices, so different sites often price a job the same (ties).
        opportunity = rng.choice([20.0, 45.0, 45.0, 90.0, rng.uniform(-10, 150)])
        outlook = [
            (NOW_S + rng.choice([-600.0, 0.0, 600.0, 3600.0, 7200.0, 20_000.0]),
             rng.choice([0.0, 1.0, 5.0, 10.0, opportunity, rng.uniform(-10, 150)]))
            for _ in range(rng.randint(0, 6))
        ]
        sites[f"s{i}"] = make_site(
            f"s{i}", rng.choice(REGIONS), price_usd_per_mwh=rng.uniform(0, 100),
            opportunity_usd_per_mwh=opportunity, outlook=outlook,
        )
    return sites


def random_node(rng: random.Random, node_id: str, sites: Mapping[str, SiteView]) -> NodeView:
    if sites and rng.random() > 0.05:
        site = rng.choice(list(sites.values()))
        site_name, region = site.site, site.region
    else:  # a site the placer has no price for
        site_name, region = f"unpriced{rng.randint(0, 2)}", rng.choice(REGIONS)
    models = rng.sample(MODELS, rng.randint(1, 3))
    idle_kw = rng.choice([0.3, 0.3, rng.uniform(0.05, 0.5)])
    busy_kw = rng.choice([idle_kw, 0.7, idle_kw + rng.uniform(0.0, 1.0), idle_kw - 0.1])
    slots_total = rng.randint(1, 4)
    return make_node(
        node_id,
        site=site_name,
        region=region,
        models=models,
        memory_mb=rng.choice([64, 256, 1024, 8192]),
        slots_free=rng.choice([0, 1, slots_total, rng.randint(0, slots_total)]),
        slots_total=slots_total,
        serving=rng.random() > 0.1,
        healthy=rng.random() > 0.05,
        idle_power_kw=idle_kw,
        busy_power_kw=busy_kw,
        tokens_per_s={
            m: rng.choice([100.0, 400.0, rng.uniform(20.0, 800.0), 0.0])
            for m in models if rng.random() < 0.5
        },
        warm_models=[m for m in models if rng.random() < 0.5],
        backlog_s=rng.choice([0.0, 0.0, 10.0, rng.uniform(0.0, 60.0)]),
    )


def random_fleet(rng: random.Random, n_nodes: int) -> tuple[list[NodeView], dict[str, SiteView]]:
    sites = random_sites(rng, rng.randint(0, 8))
    nodes: list[NodeView] = []
    for i in range(n_nodes):
        if nodes and rng.random() < 0.1:
            template = rng.choice(nodes)  # an identical node under another id: a tie
            nodes.append(replace(template, node_id=f"n{rng.randint(0, 999):03d}-{i}"))
        else:
            nodes.append(random_node(rng, f"n{rng.randint(0, 999):03d}-{i}", sites))
    if nodes and rng.random() < 0.2:  # the same id twice: the later view is the node
        dup = replace(rng.choice(nodes), slots_free=rng.randint(0, 3))
        nodes.append(dup)
    rng.shuffle(nodes)
    return nodes, sites


def random_job(rng: random.Random, job_id: str) -> JobRequest:
    model = rng.choice(MODELS)
    submitted_s = NOW_S - rng.choice([0.0, rng.uniform(0.0, 600.0)])
    return make_job(
        job_id,
        tier=rng.choice(list(Tier)),
        model=model,
        input_tokens=rng.choice([0, rng.randint(1, 2000)]),
        output_tokens_est=0 if model == EMBED_MODEL else rng.randint(0, 300),
        submitted_s=submitted_s,
        deadline_s=submitted_s + rng.choice([60.0, 7200.0, 21_600.0, rng.uniform(60.0, 30_000.0)]),
        allowed_regions=rng.sample((*REGIONS, "nowhere"), rng.choice([0, 0, 0, 1, 2])),
        memory_mb=rng.choice([0, 128, 512, 2048]),
    )


def _decide_all_ways(
    jobs: Sequence[JobRequest], nodes: Sequence[NodeView], sites: Mapping[str, SiteView]
) -> tuple[list[Decision], list[Decision], list[Decision]]:
    expected = reference_place(jobs, nodes, sites, NOW_S)
    from_list = place(jobs, nodes, sites, NOW_S)
    from_index = place(jobs, NodeIndex(nodes), sites, NOW_S)
    return expected, from_list, from_index


# ----- equivalence -----------------------------------------------------------------------------


@pytest.mark.parametrize("n_nodes", [0, 1, 5, 40, 150])
def test_index_and_list_decide_exactly_as_the_reference(n_nodes: int) -> None:
    kinds: dict[str, int] = {}
    for seed in range(120 if n_nodes < 100 else 40):
        rng = random.Random(n_nodes * 100_000 + seed)
        nodes, sites = random_fleet(rng, n_nodes)
        jobs = [random_job(rng, f"j{k}") for k in range(rng.randint(1, 12))]
        expected, from_list, from_index = _decide_all_ways(jobs, nodes, sites)
        assert from_index == expected, f"seed {seed}"
        assert from_list == expected, f"seed {seed}"
        for d in expected:
            name = type(d).__name__ + (f":{d.code.value}" if isinstance(d, Unplaceable) else "")
            kinds[name] = kinds.get(name, 0) + 1
    if n_nodes >= 40:
        # Every kind of decision came up, so agreement is not vacuous.
        assert {"Placement", "Deferral", "Unplaceable:unschedulable"} <= set(kinds), kinds


GPU_KINDS = ("cpu", "h100", "a100", "l40s")


def with_kinds(
    rng: random.Random, nodes: Sequence[NodeView], jobs: Sequence[JobRequest]
) -> tuple[list[NodeView], list[JobRequest]]:
    """The same fleet and queue with accelerator kinds: nodes of mixed kinds, jobs limited to
    none, one or two kinds (including one no node has)."""
    kinded = [replace(n, gpu_kind=rng.choice(GPU_KINDS)) for n in nodes]
    limited = [
        replace(j, accelerators=frozenset(rng.sample((*GPU_KINDS, "tpu"), rng.choice([0, 1, 2]))))
        for j in jobs
    ]
    return kinded, limited


@pytest.mark.parametrize("n_nodes", [1, 5, 40, 150])
def test_accelerator_limits_decide_exactly_as_the_reference(n_nodes: int) -> None:
    refused = 0
    for seed in range(60):
        rng = random.Random(n_nodes * 100_000 + seed)
        nodes, sites = random_fleet(rng, n_nodes)
        jobs = [random_job(rng, f"j{k}") for k in range(rng.randint(1, 12))]
        nodes, jobs = with_kinds(random.Random(seed), nodes, jobs)
        expected, from_list, from_index = _decide_all_ways(jobs, nodes, sites)
        assert from_index == expected, f"seed {seed}"
        assert from_list == expected, f"seed {seed}"
        refused += sum(
            1 for d in expected if isinstance(d, Unplaceable)
            and any(r.startswith("accelerator_allowed") for r in d.reasons)
        )
    assert refused > 0  # the filter was hit, so agreement is not vacuous


def test_a_catalogue_that_limits_a_model_decides_as_jobs_that_name_its_kinds() -> None:
    kinds = frozenset({"h100", "a100"})
    catalogue = {**DEFAULT_CATALOGUE,
                 GEN_MODEL: replace(DEFAULT_CATALOGUE[GEN_MODEL], accelerators=kinds)}
    for seed in range(40):
        rng = random.Random(4242 + seed)
        nodes, sites = random_fleet(rng, 60)
        jobs = [random_job(rng, f"j{k}") for k in range(8)]
        nodes, _ = with_kinds(random.Random(seed), nodes, jobs)
        named = [replace(j, accelerators=kinds) if j.model == GEN_MODEL else j for j in jobs]
        expected = reference_place(named, nodes, sites, NOW_S, catalogue=catalogue)
        assert place(jobs, nodes, sites, NOW_S, catalogue=catalogue) == expected, seed
        assert place(jobs, NodeIndex(nodes), sites, NOW_S, catalogue=catalogue) == expected, seed


def test_a_kept_index_sees_a_node_change_its_kind() -> None:
    nodes = [make_node(f"n{i:02d}", gpu_kind="cpu") for i in range(40)]
    index = NodeIndex(nodes)
    jobs = [make_job("j1", tier="standard", accelerators=("h100",)), make_job("j2")]
    assert isinstance(place(jobs, index, {}, NOW_S)[0], Unplaceable)
    index.upsert(replace(nodes[7], gpu_kind="h100"))  # the agent said hello again, as an H100
    first = place(jobs, index, {}, NOW_S)[0]
    assert isinstance(first, Placement) and first.node_id == "n07"
    index.upsert(replace(nodes[7], node_id="n99", gpu_kind="h100"))  # a new node joins
    index.upsert(replace(nodes[7], gpu_kind="cpu"))
    first = place(jobs, index, {}, NOW_S)[0]
    assert isinstance(first, Placement) and first.node_id == "n99"


def test_ties_go_to_the_lowest_id_on_the_index_path() -> None:
    nodes = [make_node(f"n{i:02d}") for i in range(50)]
    rng = random.Random(3)
    rng.shuffle(nodes)
    index = NodeIndex(nodes)
    decisions = place([make_job(f"j{k}", tier="standard") for k in range(3)], index, {}, NOW_S)
    # j0 takes n00's only slot; j1 and j2 then tie on the rest and take the next ids.
    assert [getattr(d, "node_id", None) for d in decisions] == ["n00", "n01", "n02"]
    assert decisions == reference_place(
        [make_job(f"j{k}", tier="standard") for k in range(3)], nodes, {}, NOW_S
    )


def test_an_index_kept_up_to_date_decides_as_a_fresh_list() -> None:
    rng = random.Random(11)
    nodes, sites = random_fleet(rng, 120)
    current = {n.node_id: n for n in nodes}
    index = NodeIndex(nodes)
    for step in range(300):
        action = rng.random()
        if action < 0.6 and current:  # a known node changes (slots, backlog, rates, serving)
            node_id = rng.choice(sorted(current))
            changed = random_node(rng, node_id, sites)
            current[node_id] = changed
            index.upsert(changed)
        elif action < 0.8:  # a node joins
            node_id = f"new{step}"
            current[node_id] = random_node(rng, node_id, sites)
            index.upsert(current[node_id])
        elif current:  # a node leaves
            node_id = rng.choice(sorted(current))
            del current[node_id]
            index.remove(node_id)
        if step % 3 == 0:
            jobs = [random_job(rng, f"j{step}-{k}") for k in range(rng.randint(1, 6))]
            expected = reference_place(jobs, list(current.values()), sites, NOW_S)
            assert place(jobs, index, sites, NOW_S) == expected, f"step {step}"
            free = sum(n.slots_free for n in current.values() if n.serving and n.healthy)
            assert index.free_slots() == free


def test_placing_never_changes_the_index() -> None:
    rng = random.Random(5)
    nodes, sites = random_fleet(rng, 80)
    index = NodeIndex(nodes)
    jobs = [random_job(rng, f"j{k}") for k in range(30)]
    first = place(jobs, index, sites, NOW_S)
    assert place(jobs, index, sites, NOW_S) == first  # nothing was reserved in the index
    assert index.free_slots() == sum(n.slots_free for n in nodes if n.serving and n.healthy)


def test_changed_site_views_are_seen_by_a_kept_index() -> None:
    nodes = [make_node(f"n{i:02d}", site=f"s{i % 2}") for i in range(40)]
    index = NodeIndex(nodes)
    sites = {"s0": make_site("s0", opportunity_usd_per_mwh=10.0), "s1": make_site("s1")}
    job = make_job(tier="standard")
    first = place([job], index, sites, NOW_S)[0]
    assert isinstance(first, Placement) and first.site == "s0"
    sites["s1"] = make_site("s1", opportunity_usd_per_mwh=1.0)  # the same dict, a new view
    second = place([job], index, sites, NOW_S)[0]
    assert isinstance(second, Placement) and second.site == "s1"
    assert second == reference_place([job], nodes, sites, NOW_S)[0]


@pytest.mark.parametrize(
    "spoil",
    [
        {"backlog_s": math.nan},
        {"busy_power_kw": math.inf},
        {"tokens_per_s": {EMBED_MODEL: math.nan}},
    ],
    ids=["nan-backlog", "inf-power", "nan-rate"],
)
def test_non_finite_numbers_are_left_to_the_scan(spoil: dict[str, object]) -> None:
    rng = random.Random(2)
    nodes, sites = random_fleet(rng, 60)
    nodes[7] = replace(nodes[7], **spoil)  # type: ignore[arg-type]
    jobs = [random_job(rng, f"j{k}") for k in range(10)]
    expected = repr(reference_place(jobs, nodes, sites, NOW_S))  # repr: NaN != NaN
    assert repr(place(jobs, NodeIndex(nodes), sites, NOW_S)) == expected
    assert repr(place(jobs, nodes, sites, NOW_S)) == expected


def test_a_nan_outlook_is_left_to_the_scan() -> None:
    nodes = [make_node(f"n{i:02d}") for i in range(40)]
    sites = {"s1": make_site("s1", opportunity_usd_per_mwh=50.0,
                             outlook=[(NOW_S + 3600, math.nan), (math.nan, 1.0)])}
    jobs = [make_job("j1", tier="flex")]
    # The old loop defers with a NaN saving here; repr, since NaN != NaN.
    expected = reference_place(jobs, nodes, sites, NOW_S)
    assert isinstance(expected[0], Deferral)
    assert repr(place(jobs, NodeIndex(nodes), sites, NOW_S)) == repr(expected)


def test_custom_filters_are_applied_by_the_scan() -> None:
    rng = random.Random(9)
    nodes, sites = random_fleet(rng, 60)
    jobs = [random_job(rng, f"j{k}") for k in range(8)]
    only_two: tuple[FilterFn, ...] = (model_served, has_capacity)
    expected = reference_place(jobs, nodes, sites, NOW_S, filters=only_two)
    assert place(jobs, nodes, sites, NOW_S, filters=only_two) == expected
    assert place(jobs, NodeIndex(nodes), sites, NOW_S, filters=only_two) == expected
    assert place_by_scan(jobs, nodes, sites, NOW_S, filters=only_two) == expected


def test_another_profile_is_scored_the_same_way() -> None:
    profile = ScoringProfile(
        energy_weight=3.0, delay_weight=0.5, warmth_weight=2.0, cold_start_s=7.0,
        default_tokens_per_s=250.0, defer_min_saving_ratio=0.01,
    )
    for seed in range(30):
        rng = random.Random(700 + seed)
        nodes, sites = random_fleet(rng, 50)
        jobs = [random_job(rng, f"j{k}") for k in range(6)]
        expected = reference_place(jobs, nodes, sites, NOW_S, profile=profile)
        assert place(jobs, NodeIndex(nodes), sites, NOW_S, profile=profile) == expected, seed


def test_flex_queues_facing_cheaper_windows_are_deferred_the_same_way() -> None:
    deferred = 0
    for seed in range(60):
        rng = random.Random(9000 + seed)
        sites = {}
        for i in range(6):
            now_usd = rng.choice([40.0, 60.0, 90.0])
            # Windows at or below the price now, several at the same price and start (ties).
            outlook = [
                (NOW_S + rng.choice([600.0, 3600.0, 3600.0, 7200.0]),
                 rng.choice([0.0, 5.0, 5.0, now_usd * 0.95, now_usd]))
                for _ in range(rng.randint(1, 5))
            ]
            sites[f"s{i}"] = make_site(
                f"s{i}", rng.choice(REGIONS[:2]), opportunity_usd_per_mwh=now_usd, outlook=outlook
            )
        nodes = []
        for i in range(rng.randint(32, 90)):
            # Priced sites and some marginal power only, or the cheapest node costs nothing now.
            site = sites[f"s{rng.randrange(6)}"]
            node = random_node(rng, f"n{i:03d}", sites)
            nodes.append(replace(node, site=site.site, region=site.region,
                                 busy_power_kw=node.idle_power_kw + rng.choice([0.4, 0.4, 0.9])))
        jobs = [
            replace(random_job(rng, f"j{k}"), tier=Tier.FLEX,
                    deadline_s=NOW_S + rng.choice([3600.0, 21_600.0]))
            for k in range(rng.randint(1, 10))
        ]
        expected = reference_place(jobs, nodes, sites, NOW_S)
        assert place(jobs, NodeIndex(nodes), sites, NOW_S) == expected, seed
        deferred += sum(isinstance(d, Deferral) for d in expected)
    assert deferred >= 50, deferred


# ----- the scheduler core: its kept index and timeout heaps ------------------------------------


class RebuildingCore(SchedulerCore):
    """The core as it ran before: the index rebuilt from every node's view for each placement
    round, and every job looked at on every tick for its deadline and lease."""

    def placement_index(self) -> NodeIndex:
        self._changed_nodes.clear()
        return NodeIndex(self.node_views())

    def _due(self, now_s: float) -> list[JobRecord]:
        return list(self.jobs.values())


def _random_events(seed: int, n_events: int) -> None:
    """Play the same random events into both cores; every Step must be equal."""
    rng = random.Random(seed)
    policy = SchedulerPolicy(lease_s=15.0, disconnect_grace_s=10.0, recovery_grace_s=20.0,
                             max_attempts=3, max_placements_per_tick=rng.choice([4, 64]))
    fast, slow = SchedulerCore(policy), RebuildingCore(policy)
    clock = ManualClock(NOW_S)
    sites = [f"s{i}" for i in range(6)]
    node_ids = [f"n{i:02d}" for i in range(rng.randint(3, 40))]
    job_count = 0
    jobs: dict[str, JobRecord] = {}

    def both(call: str, *args: object, **kwargs: object) -> object:
        a = getattr(fast, call)(*args, **kwargs)
        b = getattr(slow, call)(*args, **kwargs)
        assert a == b, f"seed {seed}: {call}{args} differs"
        return a

    for _ in range(n_events):
        now_s = clock.now_s()
        draw = rng.random()
        if draw < 0.15:  # an agent says hello (again), maybe reporting what it runs
            node_id = rng.choice(node_ids)
            site = rng.choice(sites)
            info = make_node_info(
                node_id, site=site, region=f"r{int(site[1:]) % 3}",
                models=rng.sample([EMBED_MODEL, GEN_MODEL], rng.randint(1, 2)),
                memory_mb=rng.choice([256, 8192]), slots_total=rng.randint(1, 3),
                busy_power_kw=rng.choice([0.7, 1.5]),
            )
            # What it still runs: what the core thinks it holds (after a restart too), or less.
            running = sorted(
                (j.job_id, j.attempt) for j in fast.jobs.values()
                if j.node_id == node_id and j.state in (JobState.ASSIGNED, JobState.RUNNING)
            )
            kept = rng.sample(running, rng.randint(len(running) // 2, len(running)))
            both("connect_node", info, kept, now_s)
        elif draw < 0.40:  # a customer submits
            job_count += 1
            tier = rng.choice(["interactive", "standard", "flex"])
            model = rng.choice([EMBED_MODEL, GEN_MODEL])
            record = make_record(
                f"job{job_count:04d}", tier=tier, model=model, submitted_s=now_s,
                output_tokens_est=0 if model == EMBED_MODEL else 50,
                deadline_s=now_s + rng.choice([5.0, 30.0, 600.0, 7200.0]),
                allowed_regions=rng.sample(["r0", "r1", "r2"], rng.choice([0, 0, 1])),
            )
            both("submit", record)
        elif draw < 0.60:
            clock.advance(rng.choice([0.5, 0.5, 2.0, 11.0, 16.0]))
            both("tick", clock.now_s())
        elif draw < 0.72 and fast.nodes:  # a heartbeat, listing all, some or none it runs
            node_id = rng.choice(sorted(fast.nodes))
            running = sorted(fast.nodes[node_id].running)
            listed = rng.sample(running, rng.randint(0, len(running)))
            both("heartbeat", node_id, listed, now_s, draining=rng.random() < 0.1)
        elif draw < 0.84:  # a start or a result, sometimes from a stale attempt
            held = [(n, j, a) for n, node in sorted(fast.nodes.items()) for j, a in node.running]
            if held:
                node_id, job_id, attempt = rng.choice(held)
                if rng.random() < 0.3:
                    both("job_started", node_id, job_id, attempt, now_s)
                else:
                    both("job_outcome", node_id, job_id, attempt - rng.choice([0, 0, 1]), now_s,
                         error=rng.choice(["", "", "oom"]), tokens=rng.randint(1, 400),
                         run_ms=rng.uniform(10.0, 5000.0))
        elif draw < 0.88 and fast.nodes:
            both("disconnect_node", rng.choice(sorted(fast.nodes)), now_s)
        elif draw < 0.91 and fast.nodes:
            both("set_draining", rng.choice(sorted(fast.nodes)), rng.random() < 0.5)
        elif draw < 0.93 and job_count:
            both("cancel", f"job{rng.randint(1, job_count):04d}", now_s)
        elif draw < 0.95:  # the scheduler restarts: jobs come back from the journal
            fast, slow = SchedulerCore(policy), RebuildingCore(policy)
            both("restore", list(jobs.values()), now_s)
        elif draw < 0.97:
            serving = None if rng.random() < 0.3 else set(rng.sample(sites, rng.randint(0, 6)))
            fast.serving_sites = serving
            slow.serving_sites = serving
        else:
            views = {
                s: make_site(s, f"r{int(s[1:]) % 3}", opportunity_usd_per_mwh=rng.uniform(0, 90),
                             outlook=[(now_s + 3600.0, rng.uniform(0, 40))])
                for s in sites if rng.random() < 0.8
            }
            fast.site_views = views
            slow.site_views = dict(views)
        assert fast.jobs == slow.jobs, f"seed {seed}"
        assert fast.node_views() == slow.node_views(), f"seed {seed}"
        jobs = dict(fast.jobs)


@pytest.mark.parametrize("seed", range(12))
def test_the_core_decides_as_one_that_rebuilds_and_scans_everything(seed: int) -> None:
    _random_events(seed, 400)
