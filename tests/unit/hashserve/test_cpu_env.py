"""A forced OpenBLAS core type the CPU cannot run is dropped before numpy loads it."""

from __future__ import annotations

import pytest

from hashserve import cpu_env
from hashserve.cpu_env import ENV, drop_unusable_openblas_coretype, unusable_coretype

NEHALEM = frozenset({"sse4_2", "popcnt", "ssse3"})
HASWELL = NEHALEM | {"avx", "avx2", "fma"}


def test_a_core_type_needing_more_than_the_cpu_has_is_unusable() -> None:
    assert unusable_coretype("Haswell", NEHALEM) == "avx2"
    assert unusable_coretype("SkylakeX", HASWELL) == "avx512f"
    assert unusable_coretype("haswell", HASWELL) is None
    assert unusable_coretype("Nehalem", NEHALEM) is None  # not known to need more
    assert unusable_coretype("Haswell", frozenset()) is None  # flags unknown: leave it


def test_only_an_unusable_setting_is_removed(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cpu_env, "cpu_flags", lambda: NEHALEM)
    env = {ENV: "Haswell", "OTHER": "x"}
    warning = drop_unusable_openblas_coretype(env)
    assert env == {"OTHER": "x"}
    assert warning is not None and "avx2" in warning
    assert "ignoring OPENBLAS_CORETYPE=Haswell" in capsys.readouterr().err
    kept = {ENV: "Sandybridge"}
    monkeypatch.setattr(cpu_env, "cpu_flags", lambda: HASWELL)
    assert drop_unusable_openblas_coretype(kept) is None
    assert kept == {ENV: "Sandybridge"}
