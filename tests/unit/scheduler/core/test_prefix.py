"""Prefix block chains: one hash names a whole prefix, turns extend their conversation's chain."""

from __future__ import annotations

from scheduler.core.prefix import (
    BLOCK_CHARS,
    MAX_BLOCKS,
    cached_blocks,
    cached_tokens,
    prefix_blocks,
    prompt_text,
)

SYSTEM = "You are the support assistant of a mining company. " * 20  # about 1 KB


def test_only_whole_blocks_are_hashed_and_the_chain_is_stable() -> None:
    assert prefix_blocks("x" * (BLOCK_CHARS - 1)) == ()
    chain = prefix_blocks("a" * (3 * BLOCK_CHARS + 10))
    assert len(chain) == 3 and len(set(chain)) == 3
    assert prefix_blocks("a" * (3 * BLOCK_CHARS + 99)) == chain  # the tail does not count
    assert all(0 <= h < 2**64 for h in chain)
    assert len(prefix_blocks("z" * BLOCK_CHARS * (MAX_BLOCKS + 5))) == MAX_BLOCKS


def test_a_hash_covers_everything_before_it() -> None:
    one = prefix_blocks("a" * BLOCK_CHARS + "b" * BLOCK_CHARS)
    other = prefix_blocks("c" * BLOCK_CHARS + "b" * BLOCK_CHARS)
    assert one[1] != other[1]  # the same second block after another first is another prefix


def test_a_later_turn_extends_its_conversation_and_shares_the_system_prompt() -> None:
    first = [("system", SYSTEM), ("user", "What is my hashrate today?")]
    second = [*first, ("assistant", "About 1.2 EH/s."), ("user", "And yesterday?")]
    elsewhere = [("system", SYSTEM), ("user", "Reset my password, please.")]
    a = prefix_blocks(prompt_text(first, "", raw=False))
    b = prefix_blocks(prompt_text(second, "", raw=False))
    c = prefix_blocks(prompt_text(elsewhere, "", raw=False))
    assert b[: len(a)] == a
    shared = len(SYSTEM) // BLOCK_CHARS
    assert c[:shared] == a[:shared]
    # A plain prompt is a user turn; a raw one is its text.
    assert prompt_text((), "hi", raw=False) == prompt_text((("user", "hi"),), "", raw=False)
    assert prompt_text((), "hi", raw=True) == "hi"


def test_what_a_node_holds_of_a_chain() -> None:
    chain = prefix_blocks("q" * BLOCK_CHARS * 4)
    assert cached_blocks(chain, set()) == 0
    assert cached_blocks(chain, {chain[1]}) == 2
    assert cached_blocks(chain, {chain[0], chain[3]}) == 4
    assert cached_blocks(chain, {12345}) == 0
    assert cached_tokens(chain, {chain[0]}) == BLOCK_CHARS / 4
