"""Print what a failure on another machine needs read from its log: the CPU, the features that
matter to the inference engines (as the kernel reports them, AMX permission included), and which
llama.cpp CPU backend this machine would load. Standard library only: it runs before any install.

    python3 scripts/cpu_report.py [--python VENV_PYTHON]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node_agent.backends.llama_engine import (  # noqa: E402
    X86_VARIANTS,
    choose_variant,
    cpu_flags,
    request_amx_permission,
    usable_features,
)

MATTER = (
    "sse4_2", "avx", "f16c", "fma", "bmi2", "avx2", "avx_vnni", "avx512f", "avx512bw",
    "avx512vl", "avx512dq", "avx512cd", "avx512vbmi", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", help="also ask this interpreter which engine it loads")
    ns = parser.parse_args()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    amx = request_amx_permission()
    usable = usable_features(flags, amx)
    name = model or platform.processor() or platform.machine()
    print(f"cpu: {name}, kernel {platform.release()}")
    print("cpu flags that matter: " + " ".join(f for f in MATTER if f in flags))
    print("cpu flags missing:     " + " ".join(f for f in MATTER if f not in flags))
    print(f"AMX tile data permitted by the kernel: {'yes' if amx else 'no'}")
    print(f"llama.cpp CPU backend this machine takes: {choose_variant(list(X86_VARIANTS), usable)}")
    if ns.python:
        probe = subprocess.run(
            [ns.python, "-m", "node_agent.backends.llama_probe", "--engine-only"],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )
        if probe.returncode == 0:
            print("engine: " + json.loads(probe.stdout.strip().splitlines()[-1])["engine"])
        else:
            print(f"engine: not loadable (exit {probe.returncode}): {probe.stderr.strip()[-400:]}")


if __name__ == "__main__":
    main()
