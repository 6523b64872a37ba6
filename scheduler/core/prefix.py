"""Prompt prefixes as chains of block hashes, for routing a job to an engine that holds its start.

A front has no tokenizer for every model, so a block is characters, not tokens: `BLOCK_CHARS` of
the prompt as `prompt_text` renders it (each chat turn as its role and content, in order; a raw
prompt as it is). Block i's hash covers blocks 0..i (a chain, like the `hash_ids` of the Mooncake
trace), so one hash names a whole prefix: a node that holds block i's hash holds the first i + 1
blocks. Only whole blocks count; a short prompt has none and is routed on load alone.

The agents report the hashes of the prompts their engine keeps (`Heartbeat.prefix_blocks`), and
placement counts what a node holds of a job's chain as prefill it need not do
(`scheduler/core/placement/scores.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence

BLOCK_CHARS = 256
# Characters per token for the estimate of what a cached block saves (English text, BPE).
CHARS_PER_TOKEN = 4.0
# A prompt longer than this is hashed only this far (64 blocks, 16 KiB of text).
MAX_BLOCKS = 64


def prompt_text(messages: Sequence[tuple[str, str]], prompt: str, raw: bool) -> str:
    """The text blocks are cut from: what the engine's prefix cache matches on, up to the
    chat template's own markup (which is the same for every job of one model)."""
    if raw:
        return prompt
    turns = messages or (("user", prompt),)
    return "".join(f"\x1e{role}\x1f{content}" for role, content in turns)


def prefix_blocks(text: str, block_chars: int = BLOCK_CHARS) -> tuple[int, ...]:
    """The chain of 64-bit hashes of `text`'s whole blocks."""
    hashes: list[int] = []
    previous = b""
    for i in range(min(len(text) // block_chars, MAX_BLOCKS)):
        block = text[i * block_chars:(i + 1) * block_chars].encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(previous + block, digest_size=8).digest()
        hashes.append(int.from_bytes(digest, "big"))
        previous = digest
    return tuple(hashes)


def prompt_prefix_blocks(messages: Sequence[tuple[str, str]], prompt: str,
                         raw: bool) -> tuple[int, ...]:
    """A generation's chain: what the scheduler routes on and the agent's engine keeps under."""
    return prefix_blocks(prompt_text(messages, prompt, raw))


def cached_blocks(chain: Sequence[int], held: Collection[int]) -> int:
    """How many of the chain's leading blocks a node holding the hashes `held` has cached."""
    if not held:
        return 0
    for i in range(len(chain) - 1, -1, -1):
        if chain[i] in held:
            return i + 1
    return 0


def cached_tokens(chain: Sequence[int], held: Collection[int],
                  block_chars: int = BLOCK_CHARS) -> float:
    """The estimated prompt tokens a node need not evaluate for a job with this chain."""
    return cached_blocks(chain, held) * block_chars / CHARS_PER_TOKEN
