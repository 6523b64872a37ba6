"""The installed llama.cpp engine runs on CPUs older than this one, choosing its backend by itself.

Each run is a real generation, under Debian's qemu-user emulating an older x86-64 CPU: Haswell
(AVX2, no AVX-512) and Nehalem (SSE4.2, no AVX). The text must equal this machine's own, and the
backend must be the one for that CPU: a build for this CPU alone dies there of SIGILL. (Plain
x86-64-v1 is not tried: numpy itself needs more.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.llm]

QEMU = shutil.which("qemu-x86_64")
PROBE = [sys.executable, "-m", "node_agent.backends.llama_probe"]


def probe(*prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    if prefix:
        # An older machine's environment: a BLAS core type pinned for this host's CPU (some
        # hosts set OPENBLAS_CORETYPE) would make numpy's OpenBLAS run this CPU's kernels on
        # the emulated one. On a real older CPU hashserve drops such a setting itself
        # (hashserve/cpu_env.py), but under qemu-user /proc/cpuinfo still shows this host.
        env.pop("OPENBLAS_CORETYPE", None)
    proc = subprocess.run(
        [*prefix, *PROBE], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env=env,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def native() -> dict[str, str]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (bash scripts/install.sh)")
    if QEMU is None:
        pytest.skip("qemu-user is not installed (Debian package qemu-user; .ci/run installs it)")
    return probe()


@pytest.mark.parametrize(("cpu", "variant"), [("Haswell", "haswell"), ("Nehalem", "sse42")])
def test_generation_under_an_emulated_older_cpu(
    native: dict[str, str], cpu: str, variant: str
) -> None:
    assert QEMU is not None
    emulated = probe(QEMU, "-cpu", cpu)
    assert emulated["variant"] == variant, emulated["engine"]
    assert emulated["text"] == native["text"]
