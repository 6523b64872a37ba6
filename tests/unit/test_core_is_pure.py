"""scheduler/core/ is pure: no RPC, Ray, database, metrics, network, event loop or wall clock.

Reads every module under scheduler/core/ with `ast` (nothing is imported, so a module that would
open a socket at import time cannot hide it) and fails on any import, at any depth (inside
functions too), of a forbidden module or of one of the scheduler's I/O edges. The core may only be
handed time through `Clock`; clock.py alone holds the wall clock, in `SystemClock`, which the live
service passes in.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "scheduler" / "core"

FORBIDDEN = (
    "grpc", "ray", "sqlite3", "prometheus_client", "socket", "httpx", "requests", "time",
    "asyncio", "hashserve.v1",
    # The scheduler's own edges and everything built on top of the core.
    "hashserve", "node_agent", "scheduler.api", "scheduler.journal", "scheduler.runtime",
    "scheduler.control", "scheduler.metrics", "scheduler.feeds", "scheduler.fleet",
    "scheduler.backtest", "scheduler.settings",
)
# (module path relative to the repository, forbidden module it may import, why)
ALLOWED = {
    ("scheduler/core/clock.py", "time"),  # SystemClock: the one wall clock, injected by the edge
}
DYNAMIC_IMPORTS = ("__import__", "import_module")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in `source`, relative ones resolved.

    `from a import b` yields both `a` and `a.b`, since b may be a module (`from hashserve
    import v1`)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in DYNAMIC_IMPORTS:
                yield node.lineno, f"<dynamic import via {name}()>"


def violations(source: str, module: str, rel_path: str, is_package: bool = False) -> list[str]:
    found = []
    for line, name in imported_modules(source, module, is_package):
        if name.startswith("<dynamic"):
            found.append(f"{rel_path}:{line}: {name}")
            continue
        for bad in FORBIDDEN:
            if (name == bad or name.startswith(bad + ".")) and (rel_path, bad) not in ALLOWED:
                found.append(f"{rel_path}:{line}: imports {name} (forbidden: {bad})")
                break
    return found


CORE_FILES = sorted(CORE.rglob("*.py"))


def test_the_walk_finds_the_core() -> None:
    names = {p.relative_to(CORE).as_posix() for p in CORE_FILES}
    assert {"scheduler.py", "job_states.py", "placement/placer.py", "clock.py"} <= names


@pytest.mark.parametrize(
    "path", CORE_FILES, ids=lambda p: p.relative_to(REPO).as_posix()
)
def test_core_module_is_pure(path: Path) -> None:
    rel = path.relative_to(REPO).as_posix()
    found = violations(
        path.read_text(encoding="utf-8"), _module_name(path), rel, path.name == "__init__.py"
    )
    assert found == [], "scheduler/core must stay pure:\n" + "\n".join(found)


# ----- the checker itself can fail -------------------------------------------------------------

BAD_SOURCES = [
    ("import grpc", "grpc"),
    ("import ray.util.queue", "ray"),
    ("from time import monotonic", "time"),
    ("import time as clock", "time"),
    ("from hashserve.v1 import jobs_pb2", "hashserve.v1"),
    ("from hashserve import v1", "hashserve"),
    ("import sqlite3", "sqlite3"),
    ("from prometheus_client import Counter", "prometheus_client"),
    ("def f():\n    import socket\n", "socket"),
    ("import asyncio", "asyncio"),
    ("import httpx", "httpx"),
    ("import requests", "requests"),
    ("from scheduler.journal.sqlite import SqliteJournal", "scheduler.journal"),
    ("from ...api import validation", "scheduler.api"),  # relative, from scheduler/core/placement
    ("import importlib\nimportlib.import_module('grpc')", "dynamic"),
    ("__import__('ray')", "dynamic"),
]


@pytest.mark.parametrize(("source", "bad"), BAD_SOURCES, ids=[b[0] for b in BAD_SOURCES])
def test_the_checker_catches(source: str, bad: str) -> None:
    found = violations(
        source, "scheduler.core.placement.placer", "scheduler/core/placement/placer.py"
    )
    assert found, source
    assert bad in found[0]


@pytest.mark.parametrize(
    "source",
    [
        "import heapq\nimport datetime as dt\nfrom collections.abc import Mapping",
        "from scheduler.core.models import Tier",
        "from . import filters",  # scheduler.core.placement.filters
        "from ..jobs import JobRecord",  # scheduler.core.jobs
        "import timeit_free_name",  # a prefix of a forbidden name is not that name
    ],
)
def test_the_checker_lets_pure_imports_pass(source: str) -> None:
    assert violations(
        source, "scheduler.core.placement.placer", "scheduler/core/placement/placer.py"
    ) == []


def test_only_clock_may_read_the_wall_clock() -> None:
    assert violations("import time", "scheduler.core.clock", "scheduler/core/clock.py") == []
    assert violations("import time", "scheduler.core.jobs", "scheduler/core/jobs.py") != []
