"""A local Ray whose start times out is started again; other failures are not retried."""

from __future__ import annotations

import pytest

from scheduler.runtime import ray_host

TIMEOUT = Exception("The current node timed out during startup. This could happen because ...")


class Starts:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    def init(self, **_kwargs: object) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> Starts:
    fake = Starts([])
    monkeypatch.setattr(ray_host.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_host.ray, "init", fake.init)
    monkeypatch.setattr(ray_host.ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray_host.time, "sleep", lambda _s: None)
    return fake


def test_a_start_that_timed_out_is_tried_again(starts: Starts) -> None:
    starts.failures = [TIMEOUT]
    ray_host.init_ray(None)
    assert starts.calls == 2


def test_a_gcs_that_was_slow_to_write_its_port_is_tried_again(starts: Starts) -> None:
    starts.failures = [RuntimeError(
        "Timed out waiting for file /tmp/ray/session_x/gcs_server_port_0123abcd")]
    ray_host.init_ray(None)
    assert starts.calls == 2


def test_it_gives_up_after_three_tries(starts: Starts) -> None:
    starts.failures = [TIMEOUT, TIMEOUT, TIMEOUT]
    with pytest.raises(Exception, match="timed out during startup"):
        ray_host.init_ray(None)
    assert starts.calls == ray_host.LOCAL_RAY_START_TRIES


def test_other_failures_are_not_retried(starts: Starts) -> None:
    starts.failures = [RuntimeError("no such address")]
    with pytest.raises(RuntimeError, match="no such address"):
        ray_host.init_ray(None)
    assert starts.calls == 1
