"""Customer request validation: every rule, and the message a customer reads when it is broken.

Pure functions of the request, the catalogue and the time; raise `InvalidRequest` with a gRPC
status name and a message that says what is wrong and what would be right.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from hashserve.v1 import jobs_pb2
from scheduler.core.jobs import JobSpecData
from scheduler.core.models import ModelKind, ModelSpec
from scheduler.core.prefix import prompt_prefix_blocks

MAX_TEXT_CHARS = 8192
MAX_PROMPT_CHARS = 16384
MAX_DEADLINE_AHEAD_S = 7 * 24 * 3600.0
MIN_DEADLINE_AHEAD_S = 1.0
MAX_IDEMPOTENCY_KEY_CHARS = 128
MAX_BATCH_JOBS = 256
DEFAULT_MAX_TOKENS = 128
MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_STOP_CHARS = 64
CHAT_ROLES = frozenset({"system", "user", "assistant"})
_TIERS = frozenset(jobs_pb2.Tier.values())  # the enum lists them anew at each call
TEMPLATE_TOKENS_PER_TURN = 4
JOB_ID_RE = re.compile(r"^job_[0-9a-f]{32}$")
_KEY_RE = re.compile(r"^[\x21-\x7e]+$")


@dataclass
class InvalidRequest(Exception):
    code: str  # "INVALID_ARGUMENT", "NOT_FOUND", ...
    message: str

    def __str__(self) -> str:
        return self.message


# google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31 (timestamp.proto).
MIN_TIMESTAMP_S = -62_135_596_800
MAX_TIMESTAMP_S = 253_402_300_799


def timestamp_s(ts: Timestamp, field: str) -> float:
    """Seconds since the epoch, or INVALID_ARGUMENT naming the field for an invalid Timestamp."""
    if not (MIN_TIMESTAMP_S <= ts.seconds <= MAX_TIMESTAMP_S and 0 <= ts.nanos < 1_000_000_000):
        raise InvalidRequest(
            "INVALID_ARGUMENT",
            f"{field} is not a valid timestamp (seconds {ts.seconds}, nanos {ts.nanos})",
        )
    return ts.seconds + ts.nanos / 1e9


def estimate_tokens(text: str) -> int:
    # About four bytes of English per token for BPE/WordPiece vocabularies; the agent reports
    # the exact count afterwards, this only sizes the job for placement and limits.
    return max(1, math.ceil(len(text.encode("utf-8")) / 4))


def check_job_id(job_id: str) -> str:
    if not JOB_ID_RE.fullmatch(job_id):
        raise InvalidRequest(
            "INVALID_ARGUMENT", f"job_id {job_id[:80]!r} is malformed: expected job_<32 hex digits>"
        )
    return job_id


def check_job_count(n: int) -> None:
    """A SubmitJobs call's size: at least one job, at most MAX_BATCH_JOBS."""
    if not n:
        raise InvalidRequest("INVALID_ARGUMENT", "jobs is empty")
    if n > MAX_BATCH_JOBS:
        raise InvalidRequest("INVALID_ARGUMENT",
                             f"{n} jobs in one batch; at most {MAX_BATCH_JOBS}")


def check_idempotency_key(key: str) -> str:
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidRequest(
            "INVALID_ARGUMENT",
            f"idempotency_key is {len(key)} characters; at most {MAX_IDEMPOTENCY_KEY_CHARS}",
        )
    if key and not _KEY_RE.fullmatch(key):
        raise InvalidRequest(
            "INVALID_ARGUMENT", "idempotency_key must be printable ASCII without spaces"
        )
    return key


def validate_spec(
    spec: jobs_pb2.JobSpec,
    catalogue: Mapping[str, ModelSpec],
    known_regions: Collection[str],
    now_s: float,
) -> tuple[JobSpecData, jobs_pb2.JobSpec]:
    """Check a JobSpec; return the core's view of it and the spec with defaults filled in."""
    if not spec.model:
        raise InvalidRequest("INVALID_ARGUMENT", "spec.model is required")
    model = catalogue.get(spec.model)
    if model is None:
        raise InvalidRequest(
            "NOT_FOUND",
            f"unknown model {spec.model[:80]!r}; available: {', '.join(sorted(catalogue))}",
        )
    if spec.tier not in _TIERS:
        raise InvalidRequest(
            "INVALID_ARGUMENT",
            f"tier {spec.tier} is not one of interactive (1), standard (2), flex (3)",
        )
    from scheduler.api.convert import TIER_FROM_PROTO  # local: keeps this module proto-light

    tier = TIER_FROM_PROTO[spec.tier]
    filled = jobs_pb2.JobSpec()
    filled.CopyFrom(spec)
    filled.tier = spec.tier or jobs_pb2.TIER_STANDARD
    which = spec.WhichOneof("input")
    blocks: tuple[int, ...] = ()
    if model.kind is ModelKind.EMBEDDING:
        if which != "embed":
            raise InvalidRequest(
                "INVALID_ARGUMENT", f"{model.name} is an embedding model: set spec.embed.texts"
            )
        input_tokens = _check_texts(list(spec.embed.texts), model)
        output_tokens = 0
    else:
        if which != "generate":
            raise InvalidRequest(
                "INVALID_ARGUMENT",
                f"{model.name} is a generation model: set spec.generate.prompt",
            )
        input_tokens, output_tokens = _check_generate(spec.generate, model)
        filled.generate.max_tokens = output_tokens
        gen = spec.generate
        blocks = prompt_prefix_blocks(tuple((m.role, m.content) for m in gen.messages),
                                      gen.prompt, gen.raw_prompt)
    terms = model.tiers[tier]
    if spec.HasField("deadline"):
        deadline_s = timestamp_s(spec.deadline, "spec.deadline")
        ahead_s = deadline_s - now_s
        if not MIN_DEADLINE_AHEAD_S <= ahead_s <= MAX_DEADLINE_AHEAD_S:
            raise InvalidRequest(
                "INVALID_ARGUMENT",
                f"deadline is {ahead_s:.0f} s from now; it must be between "
                f"{MIN_DEADLINE_AHEAD_S:.0f} s and 7 days ahead",
            )
    else:
        deadline_s = now_s + terms.default_deadline_s
        filled.deadline.FromNanoseconds(int(deadline_s * 1e9))
    regions = frozenset(spec.allowed_regions)
    unknown = sorted(r for r in regions if r not in known_regions)
    if unknown and known_regions:
        raise InvalidRequest(
            "INVALID_ARGUMENT",
            f"unknown region(s) {', '.join(x[:40] for x in unknown[:5])}; "
            f"known: {', '.join(sorted(known_regions))}",
        )
    tokens = input_tokens + output_tokens
    data = JobSpecData(
        model=model.name,
        kind=model.kind,
        tier=tier,
        input_tokens=input_tokens,
        output_tokens_est=output_tokens,
        deadline_s=deadline_s,
        allowed_regions=regions,
        memory_mb=model.memory_mb,
        value_usd=tokens * terms.usd_per_million_tokens / 1e6,
        prefix_blocks=blocks,
    )
    return data, filled



def _check_texts(texts: list[str], model: ModelSpec) -> int:
    if not texts:
        raise InvalidRequest("INVALID_ARGUMENT", "spec.embed.texts is empty: give 1 or more texts")
    if len(texts) > model.max_batch:
        raise InvalidRequest(
            "INVALID_ARGUMENT",
            f"spec.embed.texts has {len(texts)} texts; {model.name} takes at most "
            f"{model.max_batch} per job",
        )
    total = 0
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidRequest("INVALID_ARGUMENT", f"spec.embed.texts[{i}] is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidRequest(
                "INVALID_ARGUMENT",
                f"spec.embed.texts[{i}] has {len(text)} characters; at most {MAX_TEXT_CHARS}",
            )
        # Texts beyond the model's window are truncated by the model, so count what it reads.
        total += min(estimate_tokens(text), model.max_input_tokens)
    return total


def _check_generate(gen: jobs_pb2.GenerateInput, model: ModelSpec) -> tuple[int, int]:
    _check_prompt(gen)
    _check_stops(list(gen.stop))
    # The chat template adds a few tokens per turn; the estimate is for admission, not billing.
    if gen.messages:
        prompt_tokens = sum(
            estimate_tokens(m.content) + TEMPLATE_TOKENS_PER_TURN for m in gen.messages
        )
    else:
        prompt_tokens = estimate_tokens(gen.prompt)
    max_tokens = gen.max_tokens or min(DEFAULT_MAX_TOKENS, model.max_output_tokens)
    if max_tokens > model.max_output_tokens:
        raise InvalidRequest(
            "INVALID_ARGUMENT",
            f"spec.generate.max_tokens is {gen.max_tokens}; {model.name} generates at most "
            f"{model.max_output_tokens}",
        )
    if prompt_tokens + max_tokens > model.max_input_tokens:
        raise InvalidRequest(
            "INVALID_ARGUMENT",
            f"prompt (about {prompt_tokens} tokens) plus max_tokens {max_tokens} exceeds "
            f"{model.name}'s context of {model.max_input_tokens} tokens",
        )
    if not (0.0 <= gen.temperature <= 2.0) or math.isnan(gen.temperature):
        raise InvalidRequest(
            "INVALID_ARGUMENT", f"spec.generate.temperature {gen.temperature} is not in [0, 2]"
        )
    return prompt_tokens, max_tokens


def _check_prompt(gen: jobs_pb2.GenerateInput) -> None:
    """A prompt or messages, not both; messages only with the chat template; in bounds."""
    if gen.messages:
        if gen.prompt:
            raise InvalidRequest(
                "INVALID_ARGUMENT", "spec.generate has both prompt and messages: give one"
            )
        if gen.raw_prompt:
            raise InvalidRequest(
                "INVALID_ARGUMENT",
                "spec.generate.raw_prompt is for a prompt; messages always use the chat template",
            )
        for i, message in enumerate(gen.messages):
            if message.role not in CHAT_ROLES:
                raise InvalidRequest(
                    "INVALID_ARGUMENT",
                    f"spec.generate.messages[{i}].role is {message.role!r}; one of "
                    f"{', '.join(sorted(CHAT_ROLES))}",
                )
        if not any(m.role == "user" and m.content.strip() for m in gen.messages):
            raise InvalidRequest(
                "INVALID_ARGUMENT", "spec.generate.messages has no user message with content"
            )
        chars = sum(len(m.content) for m in gen.messages)
        what = "spec.generate.messages"
    else:
        if not gen.prompt.strip():
            raise InvalidRequest("INVALID_ARGUMENT", "spec.generate.prompt is empty")
        chars = len(gen.prompt)
        what = "spec.generate.prompt"
    if chars > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            "INVALID_ARGUMENT", f"{what} has {chars} characters; at most {MAX_PROMPT_CHARS}"
        )


def _check_stops(stops: list[str]) -> None:
    if len(stops) > MAX_STOP_STRINGS:
        raise InvalidRequest(
            "INVALID_ARGUMENT",
            f"spec.generate.stop has {len(stops)} strings; at most {MAX_STOP_STRINGS}",
        )
    for i, stop in enumerate(stops):
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise InvalidRequest(
                "INVALID_ARGUMENT",
                f"spec.generate.stop[{i}] has {len(stop)} characters; give 1 to {MAX_STOP_CHARS}",
            )
