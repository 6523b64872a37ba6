"""The OpenAI front's own decisions: how a chat becomes a prompt, and errors in OpenAI's shape."""

from __future__ import annotations

import json

import pytest

from scheduler.api.openai_front import ApiError, ChatMessage, _encode, render_prompt


def msgs(*pairs: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role=r, content=c) for r, c in pairs]


def test_one_user_message_is_the_prompt() -> None:
    assert render_prompt(msgs(("user", "Name a colour."))) == "Name a colour."


def test_system_messages_come_first_and_turns_are_labelled() -> None:
    prompt = render_prompt(msgs(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"),
                                ("user", "Name a colour.")))
    assert prompt == "Be brief.\n\nuser: Hi\nassistant: Hello\nuser: Name a colour."


def test_text_parts_are_joined_and_other_parts_refused() -> None:
    parts = [ChatMessage(role="user", content=[{"type": "text", "text": "a"},
                                               {"type": "text", "text": "b"}])]
    assert render_prompt(parts) == "ab"
    image = [ChatMessage(role="user", content=[{"type": "image_url", "image_url": {}}])]
    with pytest.raises(ApiError, match="only text content"):
        render_prompt(image)
    with pytest.raises(ApiError, match="need a user message"):
        render_prompt(msgs(("system", "only a system prompt")))


def test_errors_carry_retry_after_where_openai_clients_expect_it() -> None:
    limited = ApiError(429, "rate_limit_error", "slow down").response()
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    body = json.loads(bytes(limited.body))
    assert body == {"error": {"message": "slow down", "type": "rate_limit_error", "param": None,
                              "code": None}}
    assert "retry-after" not in ApiError(400, "invalid_request_error", "x").response().headers


def test_base64_embeddings_are_little_endian_float32() -> None:
    import base64
    import struct

    encoded = _encode([1.0, -0.5], "base64")
    assert isinstance(encoded, str)
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (1.0, -0.5)
    assert _encode([1.0], "float") == [1.0]
