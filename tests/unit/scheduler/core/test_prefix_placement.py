"""Prefix-aware placement: a node whose engine holds a job's prompt prefix saves its prefill, and
that saving is weighed against the node's backlog; with the weight at 0 the caches are ignored.
The same answer whether the nodes come as a list or as the kept index."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.core.placement import (
    DEFAULT_PROFILE,
    Decision,
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
