"""Session-wide: the header says which CPU and which llama.cpp engine this run had, so that a
failure on another machine can be read from its log."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest


def pytest_report_header(config: pytest.Config) -> list[str]:
    from node_agent.backends.llama_engine import cpu_flags, request_amx_permission

    matter = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")
    flags = cpu_flags()
    lines = [
        "cpu: " + " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in matter)
        + f" amx_permitted={'yes' if request_amx_permission() else 'no'}"
    ]
    if importlib.util.find_spec("llama_cpp") is None:
        return [*lines, "llama.cpp: not installed"]
    # In a child: an engine that cannot run here must not take pytest with it.
    proc = subprocess.run(
        [sys.executable, "-m", "node_agent.backends.llama_probe", "--engine-only"],
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode == 0:
        lines.append(json.loads(proc.stdout.strip().splitlines()[-1])["engine"])
    else:
        lines.append(f"llama.cpp engine does not load (exit {proc.returncode})")
    return lines
