"""Loading llama.cpp so that it runs on the CPU it meets, whatever that CPU is.

hashserve builds llama-cpp-python once per machine kind, not per CPU (`scripts/install.sh`):
`GGML_BACKEND_DL` with `GGML_CPU_ALL_VARIANTS` gives one CPU backend library per x86-64 level
(`libggml-cpu-x64.so` ... `libggml-cpu-sapphirerapids.so`) beside one libllama. Nothing loads a
backend by itself in such a build, and ggml's own choice reads CPUID alone (its scorer says so: it
"does not check for OS support"). A CPU can report what the OS will not let a process use: AMX
tiles need the process to ask the kernel first (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), and a kernel
or hypervisor that does not save a register state clears that feature from `/proc/cpuinfo`. So the
choice is made here, from the flags the kernel reports, after asking for AMX, and the chosen
library is loaded with `ggml_backend_load`.

A build made another way (one backend built in, `-march=native` perhaps) has no variants; it is
used as it is. Whether an engine runs at all is then proven by `llama_probe` in a child process,
before any job reaches it: an illegal instruction kills the child, not the agent.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hashserve.cpu_env import cpu_flags

log = logging.getLogger(__name__)

# x86-64 variants as ggml builds them (ggml/src/CMakeLists.txt), each with the kernel's cpuinfo
# names of the features it is compiled for. ggml scores a variant by these bits; so do we.
_FEATURE_BITS: dict[str, int] = {
    "fma": 1,
    "f16c": 1 << 1,
    "sse4_2": 1 << 2,
    "bmi2": 1 << 3,
    "avx": 1 << 4,
    "avx2": 1 << 5,
    "avx_vnni": 1 << 6,
    "avx512": 1 << 7,  # F, CD, VL, DQ and BW together
    "avx512vbmi": 1 << 8,
    "avx512_bf16": 1 << 9,
    "avx512_vnni": 1 << 10,
    "amx_int8": 1 << 11,
}
_AVX512_BASE = frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})
_HASWELL = ("sse4_2", "avx", "f16c", "fma", "avx2", "bmi2")
_SKYLAKEX = (*_HASWELL, "avx512")
X86_VARIANTS: dict[str, tuple[str, ...]] = {
    "x64": (),
    "sse42": ("sse4_2",),
    "sandybridge": ("sse4_2", "avx"),
    "ivybridge": ("sse4_2", "avx", "f16c"),
    "piledriver": ("sse4_2", "avx", "f16c", "fma"),
    "haswell": _HASWELL,
    "skylakex": _SKYLAKEX,
    "cannonlake": (*_SKYLAKEX, "avx512vbmi"),
    "cascadelake": (*_SKYLAKEX, "avx512_vnni"),
    "icelake": (*_SKYLAKEX, "avx512vbmi", "avx512_vnni"),
    "cooperlake": (*_SKYLAKEX, "avx512_vnni", "avx512_bf16"),
    "zen4": (*_SKYLAKEX, "avx512vbmi", "avx512_vnni", "avx512_bf16"),
    "alderlake": (*_HASWELL, "avx_vnni"),
    "sapphirerapids": (
        *_SKYLAKEX, "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8",
    ),
}

# Linux x86-64: arch_prctl(2) and the AMX tile-data state component.
_SYS_ARCH_PRCTL = 158
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18


class EngineUnavailable(RuntimeError):
    """llama.cpp cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class EngineInfo:
    build: str  # "variants" (runtime dispatch) or "single" (one backend built in)
    variant: str  # the CPU backend loaded, or "built-in"
    library: str  # its file, or libllama's
    usable_features: tuple[str, ...]  # the features that matter, as the OS lets us use them
    amx_permitted: bool

    def describe(self) -> str:
        feats = " ".join(self.usable_features) or "none beyond x86-64"
        return (
            f"llama.cpp {self.build} build, CPU backend {self.variant} ({self.library}); "
            f"usable: {feats}; AMX tile data {'permitted' if self.amx_permitted else 'no'}"
        )


def request_amx_permission() -> bool:
    """Ask Linux for AMX tile data for this process; True when it is (now) permitted."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA)) == 0
    except (OSError, AttributeError):
        return False


def usable_features(flags: frozenset[str], amx_permitted: bool) -> frozenset[str]:
    """The variant features these flags allow, in `_FEATURE_BITS`' names plus the AMX pair."""
    usable = set(flags & set(_FEATURE_BITS))
    if flags >= _AVX512_BASE:
        usable.add("avx512")
    if amx_permitted and {"amx_tile", "amx_int8"} <= flags:
        usable |= {"amx_tile", "amx_int8"}
    else:
        usable.discard("amx_int8")
    return frozenset(usable)


def choose_variant(available: list[str], usable: frozenset[str]) -> str | None:
    """The best-scoring available variant whose every feature is usable (ggml's score).

    `available`: the shipped variants that the CPU itself supports, as CPUID says
    (`cpuid_supported`); `usable` adds what the OS allows."""
    best: tuple[int, str] | None = None
    for name in available:
        needs = X86_VARIANTS.get(name)
        if needs is None or not set(needs) <= usable:
            continue
        score = 1 + sum(_FEATURE_BITS.get(f, 0) for f in needs)
        if best is None or score > best[0]:
            best = (score, name)
    return best[1] if best else None


def variant_libraries(package_dir: Path) -> dict[str, Path]:
    """CPU backend variants shipped with llama-cpp-python: its lib folder, or the `bin` folder
    beside the package, where ggml's install rule puts them."""
    found: dict[str, Path] = {}
    for folder in (package_dir / "lib", package_dir.parent / "bin"):
        if folder.is_dir():
            for lib in sorted(folder.glob("libggml-cpu-*.so")):
                found.setdefault(lib.name[len("libggml-cpu-") : -len(".so")], lib)
    return found


def cpuid_supported(variants: dict[str, Path]) -> list[str]:
    """The variants whose own CPUID check passes: each library exports ggml's score, 0 when the
    CPU lacks a feature it was built for (loading one runs no code built for its features,
    which is how ggml's own loader picks). The kernel's flags alone are not enough: an emulator
    or a hypervisor can show the host's flags for a CPU that has fewer."""
    supported: list[str] = []
    for name, path in variants.items():
        try:
            lib = ctypes.CDLL(str(path))
            score = lib.ggml_backend_score
        except (OSError, AttributeError):
            continue
        score.restype = ctypes.c_int
        score.argtypes = []
        if int(score()) > 0:
            supported.append(name)
    return sorted(supported)


def _libllama_ggml(package_dir: Path) -> ctypes.CDLL:
    """The libggml that libllama itself uses. A wheel stores symlinks as copies, so
    `lib/libggml.so` is another file than the `libggml.so.0` that libllama needs, and loading it
    by path would give a second ggml with a backend registry of its own. By soname, the loader
    hands back the library already loaded for libllama."""
    for soname in sorted(p.name for p in (package_dir / "lib").glob("libggml.so.*")):
        if soname.count(".") == 2:  # libggml.so.N: the soname, not the full version
            try:
                return ctypes.CDLL(soname)
            except OSError:
                break
    return ctypes.CDLL(str(package_dir / "lib" / "libggml.so"))


_lock = threading.Lock()
_loaded: EngineInfo | None = None
_engine_log = logging.getLogger("llama.cpp")
# ggml_log_level (ggml.h): 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous message.
# Info is the model loader's chatter (hundreds of lines), so it goes to DEBUG.
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_pending: list[str] = []
_log_callback: Any = None  # kept referenced: ggml calls it for the life of the process


def _route_engine_log(llama_cpp: Any) -> None:
    """llama.cpp's and ggml's messages into Python logging (and so into JSON lines), instead of
    the library's own prints to stderr."""
    global _log_callback
    state = {"level": logging.DEBUG}

    def on_log(level: int, text: bytes, _user: Any) -> None:
        if level != 5:  # 5: continues the previous message
            state["level"] = _GGML_LEVELS.get(level, logging.DEBUG)
        _pending.append(text.decode("utf-8", "replace"))
        if _pending[-1].endswith("\n"):
            line = "".join(_pending).rstrip()
            _pending.clear()
            if line and _engine_log.isEnabledFor(state["level"]):
                _engine_log.log(state["level"], "%s", line)

    _log_callback = llama_cpp.llama_log_callback(on_log)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def load_engine() -> tuple[Any, EngineInfo]:
    """Import llama_cpp and give it the CPU backend this process may run; once per process."""
    global _loaded
    amx = request_amx_permission()  # before any library that might use AMX is loaded
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineUnavailable(
            "llama-cpp-python is not installed: run `bash scripts/install.sh` (it builds the "
            "portable engine, several minutes) or `pip install 'hashserve[llm]'`"
        ) from exc
    with _lock:
        if _loaded is not None:
            return llama_cpp, _loaded
        _route_engine_log(llama_cpp)
        package_dir = Path(llama_cpp.__file__).parent
        flags = cpu_flags()
        usable = usable_features(flags, amx)
        shown = tuple(sorted(usable))
        variants = variant_libraries(package_dir)
        if not variants:
            info = EngineInfo("single", "built-in", str(package_dir / "lib"), shown, amx)
        else:
            supported = cpuid_supported(variants)
            chosen = choose_variant(supported, usable)
            if chosen is None:
                raise EngineUnavailable(
                    f"no llama.cpp CPU backend fits this CPU: shipped {sorted(variants)}, "
                    f"supported by its CPUID {supported}, usable features {sorted(usable)}"
                )
            libggml = _libllama_ggml(package_dir)
            libggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
            libggml.ggml_backend_load.restype = ctypes.c_void_p
            if not libggml.ggml_backend_load(str(variants[chosen]).encode()):
                raise EngineUnavailable(f"llama.cpp could not load {variants[chosen]}")
            info = EngineInfo("variants", chosen, str(variants[chosen]), shown, amx)
        _loaded = info
        log.info("%s", info.describe())
        return llama_cpp, info


__all__ = [
    "X86_VARIANTS",
    "EngineInfo",
    "EngineUnavailable",
    "choose_variant",
    "cpu_flags",
    "cpuid_supported",
    "load_engine",
    "request_amx_permission",
    "usable_features",
    "variant_libraries",
]
