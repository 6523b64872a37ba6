"""`--catalogue FILE` on `hashserve scheduler` and `hashserve up`: a bad file stops the command
with its problems before anything starts; a good one reaches the scheduler's settings as an
absolute path (the scheduler actor need not share the command's working directory)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hashserve.cli import app
from scheduler.settings import SchedulerSettings

runner = CliRunner()
GOOD = {"models": [{"name": "llama-70b", "kind": "generation", "max_input_tokens": 4096,
                    "max_output_tokens": 512, "memory_mb": 143_360, "accelerators": ["h100"]}]}


class Started(Exception):
    """Raised by the stand-in supervisor: the command got as far as starting the scheduler."""


@pytest.fixture()
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[SchedulerSettings]:
    """Settings the scheduler would have started with (nothing is started)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HASHSERVE_CATALOGUE_PATH", raising=False)
    seen: list[SchedulerSettings] = []

    class Supervisor:
        def __init__(self, settings: SchedulerSettings) -> None:
            seen.append(settings)

        def start(self, wait_leader: bool = True) -> dict[str, object]:
            raise Started

    import hashserve.cli
    import hashserve.logs
    import scheduler.runtime.ray_host as ray_host

    monkeypatch.setattr(ray_host, "SupervisedScheduler", Supervisor)
    # No process-wide logging set-up or fault handler from inside a test.
    monkeypatch.setattr(hashserve.cli, "_logging", lambda *a, **k: logging.NullHandler())
    monkeypatch.setattr(hashserve.logs, "enable_fatal_signal_trace", lambda handler: None)
    return seen


def test_a_bad_catalogue_stops_the_scheduler_before_it_starts(
    started: list[SchedulerSettings], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"models": [{**GOOD["models"][0], "memory_mb": -1}]}))
    for command in (["scheduler"], ["up", "--agents", "0"]):
        result = runner.invoke(app, [*command, "--catalogue", str(bad)])
        assert result.exit_code == 2, result.output
        assert "models[0] (llama-70b).memory_mb: must be >= 0 (got -1)" in result.output
    assert started == []


def test_a_good_catalogue_reaches_the_settings_as_an_absolute_path(
    started: list[SchedulerSettings], tmp_path: Path
) -> None:
    (tmp_path / "catalogue.yaml").write_text(yaml.safe_dump(GOOD))
    result = runner.invoke(app, ["scheduler", "--catalogue", "catalogue.yaml"])
    assert isinstance(result.exception, Started), result.output
    assert [s.catalogue_path for s in started] == [str(tmp_path / "catalogue.yaml")]


def test_without_the_flag_the_setting_is_left_to_the_environment(
    started: list[SchedulerSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASHSERVE_CATALOGUE_PATH", "/etc/hashserve/catalogue.yaml")
    result = runner.invoke(app, ["scheduler"])
    assert isinstance(result.exception, Started), result.output
    assert [s.catalogue_path for s in started] == ["/etc/hashserve/catalogue.yaml"]
