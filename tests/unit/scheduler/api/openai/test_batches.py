"""A batch input file's lines: what is accepted, and the errors that fail a batch."""

from __future__ import annotations

import json

from hashserve.v1 import jobs_pb2
from scheduler.api.openai.batches import parse_lines

CHAT = "/v1/chat/completions"


def line(custom_id: object, body: dict[str, object] | None = None, url: str = CHAT,
         **extra: object) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url,
                       "body": body or {"model": "m",
                                        "messages": [{"role": "user", "content": "hi"}]},
                       **extra})


def lines_of(*raw: str, max_lines: int = 100) -> tuple[list, list]:  # type: ignore[type-arg]
    return parse_lines("\n".join(raw).encode(), CHAT, "flex", 90_000.0, 1_000.0, max_lines)


def test_good_lines_become_flex_jobs_due_at_the_windows_end() -> None:
    lines, errors = lines_of(line("a"), "", line("b", {"model": "m", "tier": "standard",
                                                        "messages": [{"role": "user",
                                                                      "content": "x"}]}))
    assert errors == []
    assert [(ln.index, ln.custom_id) for ln in lines] == [(0, "a"), (1, "b")]
    assert lines[0].spec.tier == jobs_pb2.TIER_FLEX
    assert lines[0].spec.deadline.seconds == 90_000
    assert lines[1].spec.tier == jobs_pb2.TIER_STANDARD  # a line may ask for its own tier


def test_each_bad_line_is_named_with_its_number() -> None:
    _, errors = lines_of(
        line("a"), "{not json", line("a"), line(""), line("c", url="/v1/embeddings"),
        line("d", method="GET"), line("e", {"model": "m", "messages": [], "stream": False}),
        line("f", {"model": "m", "stream": True,
                   "messages": [{"role": "user", "content": "x"}]}),
        json.dumps([1, 2]),
    )
    by_line = {e["line"]: e["code"] for e in errors}
    assert by_line == {2: "invalid_json_line", 3: "duplicate_custom_id", 4: "missing_custom_id",
                       5: "mismatched_url", 6: "invalid_method", 7: "invalid_request",
                       8: "invalid_request", 9: "invalid_json_line"}
    assert next(e for e in errors if e["line"] == 7)["param"] == "body.messages"


def test_whole_file_errors() -> None:
    assert lines_of("  ")[1][0]["code"] == "empty_file"
    assert lines_of(line("a"), line("b"), max_lines=1)[1][0]["code"] == "too_many_requests"
    _, errors = parse_lines(b"\xff\xfe", CHAT, "flex", 0.0, 0.0, 10)
    assert errors[0]["code"] == "invalid_file"


def test_fifty_thousand_lines_parse() -> None:
    raw = "\n".join(line(f"r{i}") for i in range(50_000))
    lines, errors = parse_lines(raw.encode(), CHAT, "flex", 90_000.0, 1_000.0, 50_000)
    assert errors == [] and len(lines) == 50_000 and lines[-1].custom_id == "r49999"
