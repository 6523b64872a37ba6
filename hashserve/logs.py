"""Logging for every hashserve process: plain text on a terminal, JSON lines for a fleet.

A fleet of agents at 40+ sites ships its logs to one place, where they are searched by job, attempt,
agent, site and tenant. In JSON mode each record is one line, an object with `ts` (UTC, ISO 8601),
`level`, `logger`, `msg`, the process's own fields (`process`, `agent_id`, `site`, ...) and the
record's: whatever a call passes in `extra=` under one of `FIELDS`, or what the running job has set
in `log_context`. A traceback goes in `exc`, never across lines.

Fatal signals are the one thing Python logging cannot see: `enable_fatal_signal_trace` has
`faulthandler` write the Python stack of every thread to the log's stream when the process dies of
SIGSEGV, SIGILL, SIGFPE, SIGBUS or SIGABRT, so no process ends without a line.
"""

from __future__ import annotations

import contextlib
import contextvars
import faulthandler
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import IO, Any

# Fields a record may carry, searched across the fleet.
FIELDS = ("job_id", "attempt", "agent_id", "site", "region", "tenant", "model", "node_id")

_context: contextvars.ContextVar[Mapping[str, object] | None] = contextvars.ContextVar(
    "hashserve_log_context", default=None
)


class LogFormat(str, Enum):
    TEXT = "text"
    JSON = "json"


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Within this block (and asyncio tasks created in it) records carry these fields."""
    merged = dict(_context.get() or {})
    merged.update({k: v for k, v in fields.items() if v is not None and v != ""})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def _record_fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = dict(_context.get() or {})
    for name in FIELDS:
        value = record.__dict__.get(name)
        if value is not None and value != "":
            fields[name] = value
    return fields


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, static_fields: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self.static_fields = dict(static_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(self.static_fields)
        line.update(_record_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with the record's fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _record_fields(record)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def parse_log_format(value: str | LogFormat) -> LogFormat:
    try:
        return LogFormat(value)
    except ValueError:
        known = ", ".join(f.value for f in LogFormat)
        raise ValueError(f"log format {value!r}: expected one of {known}") from None


def configure_logging(
    log_format: LogFormat | str = LogFormat.TEXT,
    *,
    verbose: bool = False,
    static_fields: Mapping[str, object] | None = None,
    stream: IO[str] | None = None,
    log_file: str | Path | None = None,
) -> logging.Handler:
    """Replace the root logger's handlers with one that writes `log_format` lines.

    To `log_file` (appended, created with its folder) when given, else to `stream` (stderr by
    default). Returns the handler, whose stream the fatal-signal trace should share.
    """
    fmt = parse_log_format(log_format)
    handler: logging.Handler
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonLineFormatter(static_fields) if fmt is LogFormat.JSON else TextFormatter()
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Library chatter at INFO (gRPC's, Ray's) is not ours to ship.
    for noisy in ("grpc", "ray", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def enable_fatal_signal_trace(handler: logging.Handler | None = None) -> None:
    """On a fatal signal, write every thread's Python stack where the log goes."""
    stream: Any = getattr(handler, "stream", None) or sys.stderr
    try:
        faulthandler.enable(file=stream, all_threads=True)
    except (ValueError, OSError, AttributeError):  # a stream with no file descriptor
        faulthandler.enable(file=sys.stderr, all_threads=True)


__all__ = [
    "FIELDS",
    "JsonLineFormatter",
    "LogFormat",
    "TextFormatter",
    "configure_logging",
    "enable_fatal_signal_trace",
    "log_context",
    "parse_log_format",
]
