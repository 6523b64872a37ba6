"""The generated gRPC code must match proto/: regenerate with `python scripts/gen_proto.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_protos() -> None:
    pytest.importorskip("grpc_tools")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_commands_are_the_ones_ci_runs() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from readme_command import command

    assert command("test").endswith("-m pytest")
    assert "hashserve demo" in command("demo")
    assert "readme_command.py test" in (ROOT / ".ci" / "run").read_text()
