"""A BLAS core type forced by the environment must fit the CPU we run on.

Some machines set `OPENBLAS_CORETYPE` (say `Haswell`) to pin OpenBLAS's kernels. The OpenBLAS in
numpy's wheel then runs those kernels whatever the CPU is, and numpy's import dies of SIGILL on
a CPU without their instructions (a copied environment file, an image moved to an older host).
This drops such a setting, saying so, before numpy is imported: hashserve's and the agent's
packages call `drop_unusable_openblas_coretype()` first thing. A core type this CPU can run, or
one not known here, is left as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

ENV = "OPENBLAS_CORETYPE"

# The CPU flag (as Linux's /proc/cpuinfo names it) each OpenBLAS x86-64 core type's kernels need.
_NEEDS: dict[str, str] = {
    "sandybridge": "avx",
    "bulldozer": "avx",
    "piledriver": "avx",
    "steamroller": "avx",
    "haswell": "avx2",
    "zen": "avx2",
    "excavator": "avx2",
    "skylakex": "avx512f",
    "cooperlake": "avx512_bf16",
    "sapphirerapids": "avx512_fp16",
}


def unusable_coretype(coretype: str, flags: frozenset[str]) -> str | None:
    """The flag a forced core type needs and these CPU flags lack; None: it can run here."""
    needed = _NEEDS.get(coretype.strip().lower())
    if needed is None or not flags or needed in flags:
        return None
    return needed


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU flags the kernel reports (it clears those whose register state it does not save).
    The agent's engine choice reads them too (node_agent/backends/llama_engine.py)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def drop_unusable_openblas_coretype(env: MutableMapping[str, str] | None = None) -> str | None:
    """Remove a forced OpenBLAS core type this CPU cannot run; the warning, if one was given."""
    env = os.environ if env is None else env
    coretype = env.get(ENV)
    if not coretype:
        return None
    needed = unusable_coretype(coretype, cpu_flags())
    if needed is None:
        return None
    del env[ENV]
    warning = (f"hashserve: ignoring {ENV}={coretype}: its kernels need {needed}, which this CPU "
               "lacks (OpenBLAS picks its kernels from the CPU instead)")
    print(warning, file=sys.stderr)
    return warning
