"""Which front engine serves (`resolve_engine`), and the native front's command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler.front.app import FrontEngine, FrontSettings, native_options, resolve_engine
from scheduler.front.native import BINARY_ENV, NativeFrontError, NativeFrontOptions


def settings(**values: object) -> FrontSettings:
    return FrontSettings.model_validate(values)


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    binary = tmp_path / "hashserve-front-native"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv(BINARY_ENV, str(binary))
    return binary


@pytest.fixture
def not_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "nowhere"))


def test_auto_takes_the_native_front_where_it_is_built(built: Path) -> None:
    assert resolve_engine(settings()) is FrontEngine.NATIVE


def test_auto_takes_the_python_front_where_the_native_one_is_not_built(not_built: None) -> None:
    assert resolve_engine(settings()) is FrontEngine.PYTHON


def test_auto_takes_the_python_front_for_the_http_api(built: Path) -> None:
    assert resolve_engine(settings(http_port=8000)) is FrontEngine.PYTHON


def test_native_asked_for_with_an_http_port_is_refused_with_what_to_do(built: Path) -> None:
    with pytest.raises(ValueError, match="--engine python"):
        resolve_engine(settings(engine=FrontEngine.NATIVE, http_port=8000))


def test_native_asked_for_and_not_built_says_how_to_build_it(not_built: None) -> None:
    with pytest.raises(NativeFrontError, match=r"scripts/build_front\.sh"):
        resolve_engine(settings(engine=FrontEngine.NATIVE))


def test_python_is_python_even_where_the_native_front_is_built(built: Path) -> None:
    assert resolve_engine(settings(engine=FrontEngine.PYTHON)) is FrontEngine.PYTHON


def test_a_binary_that_cannot_run_is_not_taken(built: Path) -> None:
    os.chmod(built, 0o644)
    assert resolve_engine(settings()) is FrontEngine.PYTHON


def test_the_native_command_carries_the_settings_and_the_leaders_list() -> None:
    options = native_options(settings(
        scheduler="10.0.0.5:50061,10.0.0.6:50061", host="0.0.0.0", port=50051,
        max_batch_items=64, failover_wait_s=7.5, tls_cert="c.pem", tls_key="k.pem"))
    command = options.command(Path("/opt/front"))
    assert command[0] == "/opt/front"
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    assert flags == {
        "--listen": "0.0.0.0:50051",
        "--scheduler": "ipv4:10.0.0.5:50061,10.0.0.6:50061",
        "--max-batch-items": "64",
        "--failover-wait-s": "7.5",
        "--tls-cert": "c.pem",
        "--tls-key": "k.pem",
    }


def test_options_leave_out_tls_they_were_not_given() -> None:
    command = NativeFrontOptions("127.0.0.1:0", "127.0.0.1:1").command(Path("f"))
    assert "--tls-cert" not in command and "--scheduler-tls-ca" not in command
