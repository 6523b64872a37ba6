"""Which llama.cpp CPU backend a machine takes: from the kernel's flags, AMX only when permitted."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.backends.llama_engine import (
    X86_VARIANTS,
    choose_variant,
    cpu_flags,
    usable_features,
    variant_libraries,
)

ALL = list(X86_VARIANTS)
HASWELL = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi1 bmi2 avx2"
AVX512 = f"{HASWELL} avx512f avx512cd avx512vl avx512dq avx512bw"
ZEN4 = f"{AVX512} avx512vbmi avx512_vnni avx512_bf16"
SAPPHIRE = f"{ZEN4} avx512_fp16 avx_vnni amx_tile amx_int8 amx_bf16"


def flags(text: str) -> frozenset[str]:
    return cpu_flags(f"processor\t: 0\nflags\t\t: {text}\nbugs\t\t: spectre_v1\n")


def test_cpu_flags_are_read_from_the_first_flags_line() -> None:
    assert flags("sse4_2 avx2") == frozenset({"sse4_2", "avx2"})
    assert cpu_flags("no flags here") == frozenset()


@pytest.mark.parametrize(
    ("cpu", "amx", "expected"),
    [
        ("fpu sse sse2", False, "x64"),
        ("sse2 sse4_2", False, "sse42"),
        (HASWELL, False, "haswell"),
        (f"{HASWELL} avx_vnni", False, "alderlake"),
        (AVX512, False, "skylakex"),
        (ZEN4, False, "zen4"),
        # An AMX CPU whose kernel refused tile data: the best variant without AMX.
        (SAPPHIRE, False, "zen4"),
        (SAPPHIRE, True, "sapphirerapids"),
        # AVX-512 needs all five of F, CD, VL, DQ, BW (a kernel that clears one rules it out).
        (AVX512.replace(" avx512dq", ""), False, "haswell"),
    ],
)
def test_the_best_variant_the_os_allows(cpu: str, amx: bool, expected: str) -> None:
    assert choose_variant(ALL, usable_features(flags(cpu), amx)) == expected


def test_only_shipped_variants_are_chosen() -> None:
    usable = usable_features(flags(ZEN4), False)
    assert choose_variant(["x64", "haswell"], usable) == "haswell"
    assert choose_variant(["sapphirerapids"], usable) is None
    assert choose_variant([], usable) is None
    assert choose_variant(["not-a-variant"], usable) is None


def test_amx_counts_only_with_permission() -> None:
    assert "amx_int8" not in usable_features(flags(SAPPHIRE), False)
    assert {"amx_tile", "amx_int8"} <= usable_features(flags(SAPPHIRE), True)
    assert "amx_int8" not in usable_features(flags(ZEN4), True)  # permitted, but no AMX


def test_variant_libraries_found_in_the_package_or_the_bin_folder(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "llama_cpp"
    (package / "lib").mkdir(parents=True)
    (tmp_path / "site-packages" / "bin").mkdir()
    (package / "lib" / "libggml-cpu-haswell.so").write_bytes(b"")
    (tmp_path / "site-packages" / "bin" / "libggml-cpu-x64.so").write_bytes(b"")
    (package / "lib" / "libggml-base.so").write_bytes(b"")
    found = variant_libraries(package)
    assert sorted(found) == ["haswell", "x64"]
    assert variant_libraries(tmp_path / "nowhere") == {}
