"""Hypothesis strategies for any hashserve proto message, built from its descriptor.

Every scalar is drawn over its whole wire range (negative, zero, the extremes, NaN and infinities
for doubles), strings include any Unicode that protobuf can carry, enums include numbers that
name nothing, repeated fields are empty to a few long. `hints` steer chosen field names toward
values that pass the first checks (a real model name, a well-formed job id), so the fuzz reaches
the deeper rules too; a hint for a repeated field draws one element. Bytes that are not a valid
message at all (invalid UTF-8 in a string field,
truncated varints) come from `raw_requests`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

Strategy = st.SearchStrategy[Any]

_INT32 = st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]),
                   st.integers(-(2**31), 2**31 - 1))
_INT64 = st.one_of(st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]),
                   st.integers(-(2**63), 2**63 - 1))
_UINT32 = st.one_of(st.sampled_from([0, 1, 2**32 - 1]), st.integers(0, 2**32 - 1))
_UINT64 = st.one_of(st.sampled_from([0, 1, 2**64 - 1]), st.integers(0, 2**64 - 1))
_DOUBLE = st.one_of(
    st.sampled_from([0.0, -0.0, -1.0, 1e308, -1e308, float("nan"), float("inf"), float("-inf")]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=32)
# Protobuf strings are UTF-8: lone surrogates cannot be set from Python (see raw_requests).
_TEXT = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(["", " ", "\x00", "../../etc/passwd", "' OR 1=1 --", "é" * 300, "\u202e"]),
)

_SCALARS: Mapping[int, Strategy] = {
    FieldDescriptor.TYPE_DOUBLE: _DOUBLE,
    FieldDescriptor.TYPE_FLOAT: _FLOAT,
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_STRING: _TEXT,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=64),
}


def _enum(field: FieldDescriptor) -> Strategy:
    known = [v.number for v in field.enum_type.values]
    # Proto3 enums are open: any int32 arrives, named or not.
    return st.one_of(st.sampled_from(known), _INT32)


def _nested(
    field: FieldDescriptor, hints: Mapping[str, Strategy], depth: int, max_depth: int
) -> Strategy:
    # Deferred: the nested strategy is built on first draw, so deep trees cost nothing up front.
    return st.deferred(lambda: message_of(field.message_type, hints, depth, max_depth))


def message_of(
    descriptor: Descriptor,
    hints: Mapping[str, Strategy] | None = None,
    depth: int = 0,
    max_depth: int = 4,
) -> st.SearchStrategy[Message]:
    """Messages of `descriptor` with any subset of fields set, any values."""
    hints = hints or {}
    cls = GetMessageClass(descriptor)
    fields: list[tuple[FieldDescriptor, Strategy]] = []
    for field in descriptor.fields:
        value: Strategy
        if field.name in hints:
            value = hints[field.name]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= max_depth or field.message_type.GetOptions().map_entry:
                continue
            value = _nested(field, hints, depth + 1, max_depth)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            value = _enum(field)
        else:
            value = _SCALARS[field.type]
        if field.is_repeated:
            value = st.lists(value, max_size=4)
        fields.append((field, st.none() | value))

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for field, strategy in fields:
            value = draw(strategy)
            if value is None:
                continue
            if field.is_repeated:
                target = getattr(msg, field.name)
                for item in value:
                    if field.type == FieldDescriptor.TYPE_MESSAGE:
                        target.add().CopyFrom(item)
                    else:
                        target.append(item)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, field.name).CopyFrom(value)
            else:
                setattr(msg, field.name, value)
        return msg

    return build()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) holding `payload` as is, valid UTF-8 or not."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


INVALID_UTF8 = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"abc\x80", b"\xf8\x88\x80\x80\x80"]


def raw_requests() -> st.SearchStrategy[bytes]:
    """Request bodies that are not valid messages, or valid ones with invalid UTF-8 strings."""
    return st.one_of(
        st.binary(max_size=256),
        st.builds(string_field, st.integers(1, 20), st.sampled_from(INVALID_UTF8)),
        # A length that runs past the end; a varint that never ends.
        st.just(b"\x0a\xff\xff\xff\x0f"),
        st.just(b"\x08" + b"\xff" * 12),
    )
