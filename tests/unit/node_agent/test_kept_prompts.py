"""The llama.cpp engine's bookkeeping of kept prompts: which sequence keeps which prompt, what
they cost in KV cells when they share prefixes, and which are dropped to stay within budget.
Pure: no llama.cpp (the integration tests run the engine)."""

from __future__ import annotations

import itertools
import random

import pytest

from node_agent.backends.llama_cpp_generation import Keep, KeptPrompts, shared_cells

SYSTEM = tuple(range(100, 160))  # 60 tokens every conversation starts with


def conversation(i: int, length: int) -> tuple[int, ...]:
    return SYSTEM + tuple(1000 * (i + 1) + k for k in range(length))


def trie_size(prompts: list[tuple[int, ...]]) -> int:
    return len({p[:n] for p in prompts for n in range(1, len(p) + 1)})


def test_shared_cells_count_a_shared_prefix_once() -> None:
    assert shared_cells([]) == 0
    assert shared_cells([SYSTEM]) == 60
    assert shared_cells([conversation(0, 10), conversation(1, 20)]) == 60 + 10 + 20
    assert shared_cells([SYSTEM, conversation(0, 10)]) == 70  # one is the other's prefix
    assert shared_cells([(1, 2, 3), (4, 5)]) == 5  # nothing shared


def test_shared_cells_is_the_size_of_the_prompts_token_trie() -> None:
    rng = random.Random(5)
    for _ in range(200):
        prompts = list({tuple(rng.choice((1, 2, 3)) for _ in range(rng.randint(1, 8)))
                        for _ in range(rng.randint(1, 6))})
        assert shared_cells(prompts) == trie_size(prompts)


def test_a_prompt_is_kept_in_a_sequence_of_its_own_and_found_by_its_longest_prefix() -> None:
    kept = KeptPrompts(capacity_cells=1000)
    first = kept.keep(conversation(0, 10), blocks=(7,))
    second = kept.keep(conversation(1, 30), blocks=(7, 8))
    assert first.drop == () and second.drop == ()
    assert first.into is not None and second.into is not None and first.into != second.into
    assert 0 not in (first.into, second.into)  # sequence 0 generates
    assert kept.held_cells == 60 + 10 + 30
    # A third conversation over the same system prompt starts from either (60 shared).
    shared, _ = kept.longest(conversation(2, 5)) or (0, 0)
    assert shared == 60
    # The next turn of the second conversation starts from all of it.
    assert kept.longest((*conversation(1, 30), 5, 6)) == (90, second.into)
    assert kept.longest((9, 9, 9)) is None
    assert kept.blocks() == [7, 8]


def test_keeping_a_prompt_kept_already_refreshes_it_and_copies_nothing() -> None:
    kept = KeptPrompts(capacity_cells=150)
    a = kept.keep(conversation(0, 40), ())
    kept.keep(conversation(1, 40), ())
    assert kept.keep(conversation(0, 40), (3,)) == Keep(None, ())  # now the most recent
    dropped = kept.keep(conversation(2, 40), ())
    assert a.into is not None and a.into not in dropped.drop
    assert len(dropped.drop) == 1 and kept.blocks() == [3]


def test_the_least_recently_used_prompts_go_first_to_stay_within_budget() -> None:
    kept = KeptPrompts(capacity_cells=60 + 3 * 20)
    seqs = [kept.keep(conversation(i, 20), ()).into for i in range(3)]
    assert kept.held_cells == 120 and len(kept) == 3
    kept.longest(conversation(0, 20))  # used: now the most recent
    fourth = kept.keep(conversation(3, 20), ())
    assert fourth.drop == (seqs[1],)  # the oldest not used since
    assert fourth.into not in seqs  # a free sequence keeps it, while the oldest is dropped
    assert kept.held_cells == 120
    # A prompt sharing nothing needs room for all of it.
    other = kept.keep(tuple(range(5000, 5100)), ())
    assert len(other.drop) == 3 and kept.held_cells == 100 and len(kept) == 1


def test_a_prompt_larger_than_the_budget_is_not_kept() -> None:
    kept = KeptPrompts(capacity_cells=50)
    assert kept.keep(SYSTEM, (1,)) == Keep(None, ())
    assert len(kept) == 0 and kept.blocks() == []


def test_sequences_are_reused_when_all_are_taken() -> None:
    kept = KeptPrompts(capacity_cells=10_000, max_prompts=3)
    seqs = [kept.keep(conversation(i, 5), ()).into for i in range(3)]
    assert sorted(s for s in seqs if s is not None) == [1, 2, 3]
    fourth = kept.keep(conversation(3, 5), ())
    assert fourth.drop == (seqs[0],) and fourth.into == seqs[0]
    kept.clear()
    assert len(kept) == 0 and kept.held_cells == 0
    assert sorted(kept.keep(conversation(i, 5), ()).into or 0 for i in range(3)) == [1, 2, 3]


def test_cells_stay_within_budget_and_sequences_unique_over_a_random_walk() -> None:
    rng = random.Random(11)
    kept = KeptPrompts(capacity_cells=400, max_prompts=8)
    live: dict[int, tuple[int, ...]] = {}
    for step in range(500):
        prompt = conversation(rng.randrange(12), rng.randrange(0, 200))
        if rng.random() < 0.2:
            prompt = tuple(rng.randrange(50) for _ in range(rng.randrange(1, 300)))
        kept.longest(prompt)
        keep = kept.keep(prompt, (step,))
        for seq_id in keep.drop:
            del live[seq_id]
        if keep.into is not None:
            assert keep.into not in live and 1 <= keep.into <= 8
            live[keep.into] = prompt
        assert kept.held_cells == shared_cells(live.values()) <= 400
        assert len(kept) == len(live)
    assert all(a != b for a, b in itertools.combinations(live.values(), 2))


def test_max_prompts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_prompts"):
        KeptPrompts(100, max_prompts=0)
