"""The job state machine: the whole (state, event) table, and that every path ends.

The expected table is written out here a second time, on purpose: a change to the machine has to
be made in both places, so it is a decision, not an accident.
"""

from __future__ import annotations

import itertools

import pytest

from scheduler.core.job_states import (
    TERMINAL_STATES,
    TRANSITIONS,
    IllegalTransition,
    JobEvent,
    JobState,
    can,
    transition,
)
from tests.unit.scheduler.core.builders import make_record

Q, A, R = JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING
S, F, C, X = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED
E = JobEvent

EXPECTED: dict[tuple[JobState, JobEvent], JobState] = {
    (Q, E.ASSIGN): A,
    (Q, E.CANCEL): C,
    (Q, E.EXPIRE): X,
    (Q, E.FAIL): F,  # e.g. given up on while waiting
    (A, E.START): R,
    (A, E.SUCCEED): S,  # a fast job's result can overtake its start message
    (A, E.FAIL): F,
    (A, E.RETRY): Q,
    (A, E.CANCEL): C,
    (A, E.EXPIRE): X,
    (R, E.SUCCEED): S,
    (R, E.FAIL): F,
    (R, E.RETRY): Q,
    (R, E.CANCEL): C,
    (R, E.EXPIRE): X,
}
ALL_PAIRS = list(itertools.product(JobState, JobEvent))


def test_the_table_is_exactly_the_expected_one() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=lambda v: v.value)
def test_every_state_event_pair(state: JobState, event: JobEvent) -> None:
    expected = EXPECTED.get((state, event))
    assert can(state, event) is (expected is not None)
    if expected is None:
        with pytest.raises(IllegalTransition) as info:
            transition(state, event)
        assert (info.value.state, info.value.event) == (state, event)
        assert state.value in str(info.value) and event.value in str(info.value)
    else:
        assert transition(state, event) is expected


def test_illegal_transition_is_a_value_error() -> None:
    # The edges catch ValueError for bad input; an illegal move must not slip past as something
    # else (a KeyError from the table lookup, say).
    with pytest.raises(ValueError, match="a succeeded job cannot retry"):
        transition(S, E.RETRY)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES), ids=lambda s: s.value)
def test_terminal_states_have_no_outgoing_transitions(state: JobState) -> None:
    assert [e for e in JobEvent if can(state, e)] == []
    assert make_record().evolve(state=state).terminal


@pytest.mark.parametrize("state", [Q, A, R], ids=lambda s: s.value)
def test_live_states_can_always_end_in_one_step(state: JobState) -> None:
    # Whatever goes wrong (customer cancels, deadline passes), a live job can be finished at once.
    assert transition(state, E.CANCEL) is C
    assert transition(state, E.EXPIRE) is X
    assert not make_record().evolve(state=state).terminal


def _successors(state: JobState, events: set[JobEvent]) -> set[JobState]:
    return {dst for (src, ev), dst in TRANSITIONS.items() if src is state and ev in events}


def test_every_state_is_reachable_from_queued() -> None:
    seen, todo = {Q}, [Q]
    while todo:
        for nxt in _successors(todo.pop(), set(JobEvent)):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(JobState)


def test_without_retry_the_graph_is_acyclic_and_every_path_ends_terminal() -> None:
    """Walk every path from QUEUED with RETRY edges removed: each is finite and ends terminal.

    So the only loop is RETRY (back to QUEUED), and every such loop passes ASSIGN, which the core
    counts as an attempt and stops at max_attempts (tested in test_scheduler_core).
    """
    no_retry = set(JobEvent) - {E.RETRY}
    ends: set[JobState] = set()
    paths = 0

    def walk(state: JobState, path: tuple[JobState, ...]) -> None:
        nonlocal paths
        nexts = _successors(state, no_retry)
        if not nexts:
            paths += 1
            ends.add(state)
            return
        for nxt in nexts:
            assert nxt not in path, f"cycle without RETRY: {[*path, nxt]}"
            walk(nxt, (*path, nxt))

    walk(Q, (Q,))
    assert ends <= TERMINAL_STATES
    assert ends == TERMINAL_STATES
    # QUEUED: cancel, expire, fail, assign; ASSIGNED: 4 endings + start; RUNNING: 4 endings.
    # 3 + (4 + 4) = 11 distinct paths.
    assert paths == 11


def test_every_retry_loop_passes_through_assign() -> None:
    # RETRY always lands in QUEUED, and QUEUED leaves for a live state only by ASSIGN.
    assert {dst for (_, ev), dst in TRANSITIONS.items() if ev is E.RETRY} == {Q}
    assert {ev for (src, ev), dst in TRANSITIONS.items() if src is Q and dst not in
            TERMINAL_STATES} == {E.ASSIGN}
