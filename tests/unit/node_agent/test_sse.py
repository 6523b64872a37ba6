"""Server-sent event framing as OpenAI-compatible servers use it."""

from __future__ import annotations

from node_agent.backends.sse import iter_sse_data


def test_events_split_on_blank_lines() -> None:
    lines = ['data: {"a": 1}', "", 'data: {"b": 2}', "", "data: [DONE]", ""]
    assert list(iter_sse_data(lines)) == ['{"a": 1}', '{"b": 2}', "[DONE]"]


def test_multi_line_data_joins_with_newlines_and_other_fields_are_ignored() -> None:
    lines = [": keep-alive comment", "event: message", "id: 7", "data: one", "data:two", "", ""]
    # "data:two" has no space after the colon: the value is still "two".
    assert list(iter_sse_data(lines)) == ["one\ntwo"]


def test_crlf_endings_and_a_missing_final_blank_line() -> None:
    lines = ["data: x\r\n", "\r\n", "data: [DONE]"]
    assert list(iter_sse_data(lines)) == ["x", "[DONE]"]


def test_only_the_first_space_is_stripped() -> None:
    assert list(iter_sse_data(["data:  two spaces", ""])) == [" two spaces"]
