"""The poller around every live source: last good values kept, backoff, health, secrets."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from scheduler.core.clock import ManualClock
from scheduler.core.market import Quote
from scheduler.feeds.live import Fetched, PolledSource, SourceError, live_sources, read_secret
from scheduler.settings import SchedulerSettings

NOW_S = 1_733_000_000.0


class Scripted:
    """An adapter that answers from a script: a `Fetched`, or an exception to raise."""

    name = "scripted"

    def __init__(self, *answers: Fetched | Exception) -> None:
        self.answers = list(answers)

    def fetch(self, now_s: float) -> Fetched:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def price(value: float, as_of_s: float = NOW_S) -> Fetched:
    return Fetched(prices_by_zone={"DE-LU": Quote(value, as_of_s, "scripted", "EUR")},
                   btc_usd=Quote(90_000.0, as_of_s, "scripted"))


def test_a_failed_poll_keeps_the_last_values_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(NOW_S)
    source = PolledSource(Scripted(price(80.0), SourceError("scripted: down (HTTP 503)"),
                                   SourceError("scripted: down (HTTP 503)"), price(81.0)),
                          60.0, clock)
    assert source.quotes(NOW_S).problems == ("scripted: no answer yet",)
    assert source.poll_once()
    with caplog.at_level(logging.WARNING, "hashserve.feeds"):
        assert not source.poll_once()
        assert not source.poll_once()
    quotes = source.quotes(NOW_S)
    assert quotes.prices_by_zone["DE-LU"].value == 80.0  # kept, with its own time
    assert quotes.btc_usd is not None and quotes.btc_usd.value == 90_000.0
    assert quotes.problems == ("scripted: down (HTTP 503)",)
    # Said once in the log, not at every failed poll.
    assert [r.getMessage() for r in caplog.records].count(
        "scripted: down (HTTP 503) (keeping the last values until they go stale)") == 1
    assert source.health().errors == 2 and source.health().polls == 3
    assert source.poll_once()
    assert source.quotes(NOW_S).problems == ()
    assert source.quotes(NOW_S).prices_by_zone["DE-LU"].value == 81.0


def test_failures_back_off_up_to_the_interval() -> None:
    source = PolledSource(Scripted(*[SourceError("x")] * 8), 20.0, ManualClock(NOW_S),
                          backoff_s=1.0)
    waits = []
    for _ in range(7):
        source.poll_once()
        waits.append(source.next_wait_s())
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]


def test_an_adapter_bug_does_not_kill_the_poller() -> None:
    source = PolledSource(Scripted(KeyError("oops"), price(70.0)), 60.0, ManualClock(NOW_S))
    assert not source.poll_once()
    assert source.quotes(NOW_S).problems == ("scripted: poll raised KeyError",)
    assert source.poll_once()


def test_the_polling_thread_runs_and_stops() -> None:
    source = PolledSource(Scripted(*[price(60.0)] * 1000), 0.01, ManualClock(NOW_S))
    source.start()
    try:
        for _ in range(200):
            if source.health().polls >= 3:
                break
            time.sleep(0.01)
    finally:
        source.stop()
    assert source.health().polls >= 3


def test_a_secret_comes_from_the_setting_or_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    assert read_secret("inline", str(secret), "token") == "inline"
    assert read_secret(None, str(secret), "token") == "s3cr3t"
    assert read_secret(None, None, "token") is None
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        read_secret(None, str(tmp_path / "empty"), "token")
    with pytest.raises(ValueError, match="cannot read the secret file"):
        read_secret(None, str(tmp_path / "missing"), "token")


def settings(**values: object) -> SchedulerSettings:
    return SchedulerSettings.model_validate(values)


def test_no_live_source_by_default() -> None:
    assert live_sources(settings(), ["DE-LU"], ManualClock(NOW_S)) == []


def test_a_live_source_on_a_compressed_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="run on the real clock: set market_seconds_per_hour"):
        live_sources(settings(mempool_api_url="http://127.0.0.1:9/api",
                              market_seconds_per_hour=5.0), [], ManualClock(NOW_S))
    built = live_sources(settings(mempool_api_url="http://127.0.0.1:9/api",
                                  btc_usd_url="http://127.0.0.1:9/spot",
                                  market_seconds_per_hour=3600.0), [], ManualClock(NOW_S))
    assert [s.name for s in built] == ["mempool", "btc-spot"]
