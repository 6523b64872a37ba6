"""Server-sent events: turns the lines of a `text/event-stream` body into event data strings.

Only what OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server) use: `data:` fields, with
several `data:` lines of one event joined by newlines, events ended by a blank line, comment lines
(starting with ':') and other fields (`event:`, `id:`, `retry:`) ignored. Rules from the WHATWG
HTML standard, section 9.2.6 "Interpreting an event stream". What the data means (JSON chunks,
the `[DONE]` sentinel) is the caller's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def iter_sse_data(lines: Iterable[str]) -> Iterator[str]:
    """Yield the data of each event in `lines` (lines without their line endings)."""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if not sep:
            # A line with no colon is a field name with an empty value.
            field, value = line, ""
        elif value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
    # A stream cut off without the final blank line still delivers its last event's data: the
    # standard would drop it, but servers that close right after `data: [DONE]` are common.
    if data:
        yield "\n".join(data)
