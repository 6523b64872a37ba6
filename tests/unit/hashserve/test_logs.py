"""Log lines: JSON objects a fleet can ship and search, text for a terminal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from hashserve.logs import LogFormat, configure_logging, log_context, parse_log_format


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_the_process_and_record_fields(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(
        LogFormat.JSON, stream=stream, static_fields={"process": "agent", "agent_id": "a-1"}
    )
    log = logging.getLogger("hashserve.test")
    log.info("job %s failed", "j-1", extra={"job_id": "j-1", "attempt": 2, "tenant": "acme"})
    with log_context(job_id="j-2", attempt=1, site="tx-odessa"):
        log.warning("inside")
    log.info("after")
    first, second, third = (json.loads(line) for line in lines(stream))
    assert first["msg"] == "job j-1 failed" and first["level"] == "info"
    assert first["logger"] == "hashserve.test"
    assert (first["job_id"], first["attempt"], first["tenant"]) == ("j-1", 2, "acme")
    assert (first["process"], first["agent_id"]) == ("agent", "a-1")
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert (second["job_id"], second["site"], second["level"]) == ("j-2", "tx-odessa", "warning")
    assert "job_id" not in third


def test_a_traceback_stays_on_one_line(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(LogFormat.JSON, stream=stream)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logging.getLogger("x").exception("it broke")
    (line,) = lines(stream)
    record = json.loads(line)
    assert "ValueError: bad" in record["exc"] and "Traceback" in record["exc"]


def test_text_lines_append_fields(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(LogFormat.TEXT, stream=stream)
    logging.getLogger("hashserve.t").info("hello", extra={"job_id": "j-9"})
    (line,) = lines(stream)
    assert line.endswith("INFO hashserve.t hello job_id=j-9")


def test_an_unknown_format_is_refused_by_name() -> None:
    assert parse_log_format("json") is LogFormat.JSON
    with pytest.raises(ValueError, match="log format 'yaml': expected one of text, json"):
        parse_log_format("yaml")
