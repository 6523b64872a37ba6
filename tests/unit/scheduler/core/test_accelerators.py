"""The accelerator filter: a job for a model the catalogue limits to some accelerator kinds never
lands on a node of another kind (its hello's `gpu_kind`), on either placement path, and a job that
only such nodes serve is unplaceable with a reason that says why."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core.job_states import JobState
from scheduler.core.models import DEFAULT_CATALOGUE, SMOLLM2, ModelSpec
from scheduler.core.placement import (
    JobRequest,
    NodeIndex,
    NodeView,
    Placement,
    StatusCode,
    Unplaceable,
    place,
    place_by_scan,
)
from scheduler.core.placement.filters import DEFAULT_FILTERS, accelerator_allowed, memory_fits
from scheduler.core.placement.rules import with_accelerators
from scheduler.core.scheduler import Assign, SchedulerCore
from tests.unit.scheduler.core.builders import (
    GEN_MODEL,
    T0_S,
    make_job,
    make_node,
    make_node_info,
    make_record,
)

BIG = "llama-70b"
LLAMA_70B = replace(SMOLLM2, name=BIG, memory_mb=1024, accelerators=frozenset({"h100", "a100"}))
CATALOGUE: dict[str, ModelSpec] = {**DEFAULT_CATALOGUE, BIG: LLAMA_70B}


def big_job(job_id: str = "j1", accelerators: tuple[str, ...] = ()) -> JobRequest:
    return make_job(job_id, tier="standard", model=BIG, output_tokens_est=50, memory_mb=1024,
                    accelerators=accelerators)


def test_the_filter_passes_any_kind_when_the_job_names_none() -> None:
    assert accelerator_allowed(make_job(), make_node(gpu_kind="tpu-v5")) is None


def test_the_filter_passes_a_listed_kind_and_refuses_another_for_good() -> None:
    job = make_job(accelerators=("h100", "a100"))
    assert accelerator_allowed(job, make_node(gpu_kind="a100")) is None
    verdict = accelerator_allowed(job, make_node(gpu_kind="cpu"))
    assert verdict is not None
    assert verdict.plugin == "accelerator_allowed"
    assert verdict.code is StatusCode.UNRESOLVABLE  # a node does not change its kind
    assert verdict.reason == "all-minilm-l6-v2 runs only on accelerator kinds a100,h100"
    # Kinds match exactly, as the agent reports them and the catalogue names them.
    assert accelerator_allowed(job, make_node(gpu_kind="H100")) is not None


def test_it_sits_with_the_memory_check_among_the_permanent_reasons() -> None:
    names = [f.__name__ for f in DEFAULT_FILTERS]
    assert names.index("accelerator_allowed") + 1 == names.index(memory_fits.__name__)


def test_jobs_take_their_models_kinds_from_the_catalogue() -> None:
    plain, big = make_job("a"), big_job("b")
    own = big_job("c", accelerators=("h200",))
    jobs = [plain, big, own]
    filled = with_accelerators(jobs, CATALOGUE)
    assert [j.accelerators for j in filled] == [
        frozenset(), frozenset({"h100", "a100"}), frozenset({"h200"})]
    assert with_accelerators([plain], CATALOGUE)[0] is plain
    unlimited = [plain, make_job("d", model=GEN_MODEL)]
    assert with_accelerators(unlimited, CATALOGUE) is unlimited  # nothing to change: no copy


def fleet(n_per_kind: int) -> list[NodeView]:
    # The CPU nodes are the cheapest (less power), so only the filter keeps the job off them.
    nodes = []
    for i in range(n_per_kind):
        nodes.append(make_node(f"c{i:03d}", models=(BIG,), gpu_kind="cpu",
                               idle_power_kw=0.1, busy_power_kw=0.2))
        nodes.append(make_node(f"h{i:03d}", models=(BIG,), gpu_kind="h100",
                               idle_power_kw=3.0, busy_power_kw=10.0))
        nodes.append(make_node(f"t{i:03d}", models=(BIG,), gpu_kind="tpu"))
    return nodes


@pytest.mark.parametrize("n_per_kind", [1, 20], ids=["scan", "index"])
def test_a_limited_model_lands_only_on_its_kinds(n_per_kind: int) -> None:
    nodes = fleet(n_per_kind)
    jobs = [big_job(f"j{k}") for k in range(3)]
    for decisions in (
        place(jobs, nodes, {}, T0_S, catalogue=CATALOGUE),
        place(jobs, NodeIndex(nodes), {}, T0_S, catalogue=CATALOGUE),
        place_by_scan(jobs, nodes, {}, T0_S, catalogue=CATALOGUE),
    ):
        placed = [d for d in decisions if isinstance(d, Placement)]
        assert placed, decisions
        assert all(d.node_id.startswith("h") for d in placed), decisions
        # Every h100 node is a candidate, and nothing else is.
        assert placed[0].candidates == n_per_kind
    # Without the limit the cheap CPU node would have won.
    free = place(jobs[:1], nodes, {}, T0_S)
    assert isinstance(free[0], Placement) and free[0].node_id.startswith("c")


@pytest.mark.parametrize("n_per_kind", [1, 20], ids=["scan", "index"])
def test_only_other_kinds_serving_it_is_unplaceable_and_says_why(n_per_kind: int) -> None:
    nodes = [n for n in fleet(n_per_kind) if not n.node_id.startswith("h")]
    jobs = [big_job(f"j{k}") for k in range(2)]
    want = Unplaceable("j0", StatusCode.UNRESOLVABLE, (
        "accelerator_allowed: llama-70b runs only on accelerator kinds a100,h100",))
    for where in (nodes, NodeIndex(nodes)):
        decisions = place(jobs, where, {}, T0_S, catalogue=CATALOGUE)
        assert decisions[0] == want
        assert decisions[1] == replace(want, job_id="j1")


def test_the_reasons_stay_in_filter_order_on_both_paths() -> None:
    # A node of the wrong kind, one with too little memory, one full: each fails first on its
    # own filter; the unplaceable job lists all three reasons, as the scan collects them.
    nodes = [
        make_node("a0", models=(BIG,), gpu_kind="cpu"),
        make_node("b0", models=(BIG,), gpu_kind="h100", memory_mb=512),
        make_node("c0", models=(BIG,), gpu_kind="a100", slots_free=0, slots_total=1),
    ] + [make_node(f"z{i:02d}", models=(BIG,), gpu_kind="cpu") for i in range(40)]
    job = big_job()
    by_scan = place_by_scan([job], nodes, {}, T0_S, catalogue=CATALOGUE)
    by_index = place([job, big_job("j2")], NodeIndex(nodes), {}, T0_S,
                     catalogue=CATALOGUE)
    assert by_index[0] == by_scan[0]
    assert isinstance(by_scan[0], Unplaceable)
    assert by_scan[0].code is StatusCode.UNSCHEDULABLE  # the a100 node may free its slot
    assert [r.split(":")[0] for r in by_scan[0].reasons] == [
        "accelerator_allowed", "memory_fits", "has_capacity"]


def test_the_core_places_by_the_kind_an_agent_says_in_its_hello() -> None:
    core = SchedulerCore(catalogue=CATALOGUE)
    core.connect_node(make_node_info("cpu-1", models=(BIG,), gpu_kind="cpu",
                                     idle_power_kw=0.1, busy_power_kw=0.2), (), T0_S)
    core.submit(make_record("j1", model=BIG, output_tokens_est=50, memory_mb=1024))
    step = core.tick(T0_S + 1.0)
    assert not [i for i in step.intents if isinstance(i, Assign)]
    assert core.jobs["j1"].state is JobState.QUEUED  # waits for a node of its kind
    core.connect_node(make_node_info("h100-1", models=(BIG,), gpu_kind="h100"), (), T0_S + 2.0)
    step = core.tick(T0_S + 3.0)
    assert [(i.node_id, i.job_id) for i in step.intents if isinstance(i, Assign)] == [
        ("h100-1", "j1")]


def test_the_core_without_a_catalogue_limits_nothing() -> None:
    core = SchedulerCore()  # DEFAULT_CATALOGUE: no model is limited
    core.connect_node(make_node_info("tpu-1", models=(BIG,), gpu_kind="tpu"), (), T0_S)
    core.submit(make_record("j1", model=BIG, output_tokens_est=50, memory_mb=1024))
    step = core.tick(T0_S + 1.0)
    assert [i.node_id for i in step.intents if isinstance(i, Assign)] == ["tpu-1"]


def test_a_job_no_node_of_its_kind_takes_expires_saying_why() -> None:
    core = SchedulerCore(catalogue=CATALOGUE)
    core.connect_node(make_node_info("cpu-1", models=(BIG,), gpu_kind="cpu"), (), T0_S)
    core.submit(make_record("j1", model=BIG, output_tokens_est=50, memory_mb=1024,
                            deadline_s=T0_S + 30.0))
    for t_s in (1.0, 10.0, 20.0, 30.0):  # queued all along: "unresolvable" may change
        assert core.tick(T0_S + t_s).changed == []
        assert core.jobs["j1"].state is JobState.QUEUED and core.jobs["j1"].attempt == 0
    step = core.tick(T0_S + 31.0)
    assert [(r.job_id, r.state) for r in step.changed] == [("j1", JobState.EXPIRED)]
    assert step.changed[0].error == (
        "deadline passed before it finished; no node would take it: "
        "accelerator_allowed: llama-70b runs only on accelerator kinds a100,h100"
    )
    assert core._unplaced_why == {}  # nothing kept for a job that ended
