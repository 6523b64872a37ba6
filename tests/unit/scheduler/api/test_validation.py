"""Customer request validation: every rule gives its gRPC code and a message naming the field,
and an accepted spec comes back with its defaults filled in."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from hashserve.v1 import jobs_pb2
from scheduler.api.validation import (
    DEFAULT_MAX_TOKENS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_PROMPT_CHARS,
    MAX_TEXT_CHARS,
    InvalidRequest,
    check_idempotency_key,
    check_job_id,
    estimate_tokens,
    validate_spec,
)
from scheduler.core.jobs import JobSpecData
from scheduler.core.models import DEFAULT_CATALOGUE, MINILM, SMOLLM2, ModelKind, Tier

NOW_S = 1_700_000_000.0
REGIONS = ("us-east", "eu-north")


def embed_spec(*texts: str, **fields: object) -> jobs_pb2.JobSpec:
    spec = jobs_pb2.JobSpec(model=MINILM.name, **fields)  # type: ignore[arg-type]
    spec.embed.texts.extend(texts or ("hello world",))
    return spec


def gen_spec(prompt: str = "Say hi.", **generate: object) -> jobs_pb2.JobSpec:
    spec = jobs_pb2.JobSpec(model=SMOLLM2.name)
    spec.generate.CopyFrom(jobs_pb2.GenerateInput(prompt=prompt, **generate))  # type: ignore[arg-type]
    return spec


def validate(spec: jobs_pb2.JobSpec) -> tuple[JobSpecData, jobs_pb2.JobSpec]:
    return validate_spec(spec, DEFAULT_CATALOGUE, REGIONS, NOW_S)


def _with_deadline(spec: jobs_pb2.JobSpec, ahead_s: float) -> jobs_pb2.JobSpec:
    spec.deadline.FromNanoseconds(int((NOW_S + ahead_s) * 1e9))
    return spec


def _with_regions(spec: jobs_pb2.JobSpec, *regions: str) -> jobs_pb2.JobSpec:
    spec.allowed_regions.extend(regions)
    return spec


def _with_tier(spec: jobs_pb2.JobSpec, tier: int) -> jobs_pb2.JobSpec:
    spec.tier = tier  # type: ignore[assignment]  # an open enum: a client may send any number
    return spec


def _without_input(model: str) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(model=model)


SPEC_RULES: list[tuple[str, Callable[[], jobs_pb2.JobSpec], str, str]] = [
    # (case, spec, code, text the message must contain)
    ("model missing", lambda: jobs_pb2.JobSpec(), "INVALID_ARGUMENT", "spec.model"),
    ("model unknown", lambda: jobs_pb2.JobSpec(model="gpt-9"), "NOT_FOUND", "gpt-9"),
    ("tier out of range", lambda: _with_tier(embed_spec(), 7), "INVALID_ARGUMENT", "tier 7"),
    ("embed without texts field", lambda: _without_input(MINILM.name), "INVALID_ARGUMENT",
     "spec.embed.texts"),
    ("embed given a prompt", lambda: jobs_pb2.JobSpec(
        model=MINILM.name, generate=jobs_pb2.GenerateInput(prompt="x")), "INVALID_ARGUMENT",
     "spec.embed.texts"),
    ("texts empty", lambda: jobs_pb2.JobSpec(model=MINILM.name, embed=jobs_pb2.EmbedInput()),
     "INVALID_ARGUMENT", "spec.embed.texts is empty"),
    ("too many texts", lambda: embed_spec(*["t"] * (MINILM.max_batch + 1)), "INVALID_ARGUMENT",
     "spec.embed.texts has 65 texts"),
    ("blank text", lambda: embed_spec("ok", "   "), "INVALID_ARGUMENT", "spec.embed.texts[1]"),
    ("text too long", lambda: embed_spec("x" * (MAX_TEXT_CHARS + 1)), "INVALID_ARGUMENT",
     "spec.embed.texts[0] has 8193 characters"),
    ("generate without prompt field", lambda: _without_input(SMOLLM2.name), "INVALID_ARGUMENT",
     "spec.generate.prompt"),
    ("generate given texts", lambda: jobs_pb2.JobSpec(
        model=SMOLLM2.name, embed=jobs_pb2.EmbedInput(texts=["x"])), "INVALID_ARGUMENT",
     "spec.generate.prompt"),
    ("prompt blank", lambda: gen_spec(" \n"), "INVALID_ARGUMENT", "spec.generate.prompt is empty"),
    ("prompt too long", lambda: gen_spec("x" * (MAX_PROMPT_CHARS + 1)), "INVALID_ARGUMENT",
     "spec.generate.prompt has 16385 characters"),
    ("max_tokens too big", lambda: gen_spec(max_tokens=SMOLLM2.max_output_tokens + 1),
     "INVALID_ARGUMENT", "spec.generate.max_tokens is 513"),
    # 7000 ASCII characters: about 1750 tokens, plus 512 to generate > the 2048-token context.
    ("prompt + max_tokens over context", lambda: gen_spec("x" * 7000, max_tokens=512),
     "INVALID_ARGUMENT", "max_tokens 512 exceeds"),
    ("temperature negative", lambda: gen_spec(temperature=-0.5), "INVALID_ARGUMENT",
     "spec.generate.temperature"),
    ("temperature too high", lambda: gen_spec(temperature=2.5), "INVALID_ARGUMENT",
     "spec.generate.temperature"),
    ("temperature NaN", lambda: gen_spec(temperature=math.nan), "INVALID_ARGUMENT",
     "spec.generate.temperature"),
    ("deadline in the past", lambda: _with_deadline(embed_spec(), -10.0), "INVALID_ARGUMENT",
     "deadline is -10 s from now"),
    ("deadline too soon", lambda: _with_deadline(embed_spec(), 0.5), "INVALID_ARGUMENT",
     "deadline"),
    ("deadline beyond 7 days", lambda: _with_deadline(embed_spec(), 7 * 86400 + 60),
     "INVALID_ARGUMENT", "deadline"),
    ("unknown region", lambda: _with_regions(embed_spec(), "us-east", "mars"),
     "INVALID_ARGUMENT", "unknown region(s) mars"),
]


@pytest.mark.parametrize(
    ("make_spec", "code", "needle"),
    [case[1:] for case in SPEC_RULES],
    ids=[case[0] for case in SPEC_RULES],
)
def test_each_spec_rule_gives_its_code_and_names_the_field(
    make_spec: Callable[[], jobs_pb2.JobSpec], code: str, needle: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(make_spec())
    assert info.value.code == code
    assert needle in info.value.message, info.value.message
    assert str(info.value) == info.value.message


def test_unknown_model_lists_the_available_ones() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(jobs_pb2.JobSpec(model="gpt-9"))
    assert f"available: {MINILM.name}, {SMOLLM2.name}" in info.value.message


def test_embedding_defaults_are_filled_in() -> None:
    # "hello world" is 11 bytes: ceil(11 / 4) = 3 tokens. No tier: standard, deadline now + 900 s.
    data, filled = validate_spec(embed_spec("hello world"), DEFAULT_CATALOGUE, REGIONS, NOW_S)
    assert (data.model, data.kind, data.tier) == (MINILM.name, ModelKind.EMBEDDING, Tier.STANDARD)
    assert (data.input_tokens, data.output_tokens_est) == (3, 0)
    assert data.deadline_s == NOW_S + 900.0
    assert data.memory_mb == MINILM.memory_mb
    assert data.allowed_regions == frozenset()
    # 3 tokens at 0.015 $/million (standard embedding) = 4.5e-8 $.
    assert data.value_usd == pytest.approx(4.5e-8, rel=1e-12)
    assert filled.tier == jobs_pb2.TIER_STANDARD
    assert filled.deadline.ToNanoseconds() == int((NOW_S + 900.0) * 1e9)
    assert list(filled.embed.texts) == ["hello world"]


def test_generation_defaults_are_filled_in() -> None:
    # "Say hi." is 7 bytes: 2 tokens; max_tokens unset: 128. Flex deadline: now + 6 h.
    spec = gen_spec("Say hi.")
    spec.tier = jobs_pb2.TIER_FLEX
    data, filled = validate_spec(spec, DEFAULT_CATALOGUE, REGIONS, NOW_S)
    assert (data.tier, data.input_tokens, data.output_tokens_est) == (Tier.FLEX, 2, 128)
    assert DEFAULT_MAX_TOKENS == 128
    assert data.deadline_s == NOW_S + 6 * 3600.0
    # (2 + 128) tokens at 0.08 $/million (flex generation) = 1.04e-5 $.
    assert data.value_usd == pytest.approx(1.04e-5, rel=1e-12)
    assert filled.generate.max_tokens == 128
    assert filled.tier == jobs_pb2.TIER_FLEX
    assert spec.generate.max_tokens == 0  # the caller's message is not modified


def test_given_values_are_kept() -> None:
    spec = _with_regions(_with_deadline(gen_spec("Say hi.", max_tokens=64), 3600.0), "eu-north")
    spec.tier = jobs_pb2.TIER_INTERACTIVE
    data, filled = validate_spec(spec, DEFAULT_CATALOGUE, REGIONS, NOW_S)
    assert (data.tier, data.output_tokens_est) == (Tier.INTERACTIVE, 64)
    assert data.deadline_s == NOW_S + 3600.0
    assert data.allowed_regions == frozenset({"eu-north"})
    assert filled == spec


@pytest.mark.parametrize("ahead_s", [1.0, 7 * 86400.0])
def test_deadline_bounds_are_inclusive(ahead_s: float) -> None:
    data, _ = validate(_with_deadline(embed_spec(), ahead_s))
    assert data.deadline_s == pytest.approx(NOW_S + ahead_s)


def test_long_texts_count_only_what_the_model_reads() -> None:
    # 4000 ASCII characters: 1000 tokens, but MiniLM reads 256 of them.
    data, _ = validate(embed_spec("x" * 4000, "abcd"))
    assert data.input_tokens == 256 + 1


def test_any_region_is_accepted_when_no_regions_are_known() -> None:
    data, _ = validate_spec(_with_regions(embed_spec(), "anywhere"), DEFAULT_CATALOGUE, (), NOW_S)
    assert data.allowed_regions == frozenset({"anywhere"})


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 1), ("a", 1), ("abcd", 1), ("abcde", 2), ("é" * 4, 2)],  # é is 2 bytes in UTF-8
)
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


# ----- ids and keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    ["", "job_", "job_" + "0" * 31, "job_" + "0" * 33, "job_" + "G" * 32, "JOB_" + "0" * 32,
     "job_" + "A" * 32, "job_" + "0" * 32 + "\n"],  # a trailing newline, which `$` allows
)
def test_malformed_job_ids_are_refused(job_id: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_job_id(job_id)
    assert info.value.code == "INVALID_ARGUMENT" and "job_id" in info.value.message


def test_a_well_formed_job_id_passes() -> None:
    job_id = "job_" + "0123456789abcdef" * 2
    assert check_job_id(job_id) == job_id


def test_a_very_long_job_id_is_quoted_shortened() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_job_id("x" * 10_000)
    assert len(info.value.message) < 200


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("k" * (MAX_IDEMPOTENCY_KEY_CHARS + 1), "idempotency_key is 129 characters"),
        ("has space", "idempotency_key must be printable ASCII"),
        ("tab\there", "idempotency_key must be printable ASCII"),
        ("naïve", "idempotency_key must be printable ASCII"),
        ("order-42\n", "idempotency_key must be printable ASCII"),  # `$` alone would let it by
    ],
)
def test_bad_idempotency_keys_are_refused(key: str, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_idempotency_key(key)
    assert info.value.code == "INVALID_ARGUMENT" and needle in info.value.message


@pytest.mark.parametrize("key", ["", "order-42", "k" * MAX_IDEMPOTENCY_KEY_CHARS, "a!~"])
def test_good_idempotency_keys_pass(key: str) -> None:
    assert check_idempotency_key(key) == key


def test_a_generation_takes_a_prompt_or_messages_and_up_to_four_stops() -> None:
    from hashserve.v1 import jobs_pb2

    def gen(**fields: object) -> jobs_pb2.JobSpec:
        return jobs_pb2.JobSpec(model="smollm2-135m-instruct",
                                generate=jobs_pb2.GenerateInput(**fields))  # type: ignore[arg-type]

    def refusal(spec: jobs_pb2.JobSpec) -> str:
        with pytest.raises(InvalidRequest) as err:
            validate_spec(spec, DEFAULT_CATALOGUE, REGIONS, NOW_S)
        return err.value.message

    turns = [jobs_pb2.ChatMessage(role="system", content="Be brief."),
             jobs_pb2.ChatMessage(role="user", content="Hi")]
    data, _ = validate_spec(gen(messages=turns, stop=["\n"]), DEFAULT_CATALOGUE, REGIONS, NOW_S)
    assert data.input_tokens > 2
    assert "both prompt and messages" in refusal(gen(prompt="x", messages=turns))
    assert "raw_prompt" in refusal(gen(messages=turns, raw_prompt=True))
    assert "role is 'tool'" in refusal(gen(messages=[jobs_pb2.ChatMessage(role="tool",
                                                                          content="x")]))
    assert "no user message" in refusal(gen(messages=turns[:1]))
    assert "at most 4" in refusal(gen(prompt="x", stop=["a", "b", "c", "d", "e"]))
    assert "stop[0]" in refusal(gen(prompt="x", stop=[""]))
    validate_spec(gen(prompt="The sky is", raw_prompt=True), DEFAULT_CATALOGUE, REGIONS, NOW_S)
