"""The layers, beside the purity test: decisions in the core, messages in the api.

- Agent messages are built and read in `scheduler/api` only (`agent_codec`): the control loop and
  the power edge emit intents and hand them there, and take typed events
  (`control/agent_events.py`) from it, so the agent wire format has one home.
- The live power edge and the backtest's twin decide nothing themselves: both run the core's
  `PowerTick` (which alone calls `power_step`, which alone calls the planner), so the power mode
  is decided in one place, and the backtest's ledger is the live one's.
Read with `ast`, nothing imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTROL = sorted((REPO / "scheduler" / "control").glob("*.py"))
AGENT_MESSAGES = {
    "SchedulerMessage", "Assignment", "CancelAssignment", "PowerMode", "Welcome", "OutcomeAck",
}


def calls(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every call in the module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            parts = []
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
            found.append((node.lineno, ".".join(reversed(parts))))
    return found


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


@pytest.mark.parametrize("path", CONTROL, ids=lambda p: p.name)
def test_control_does_not_touch_the_agent_wire_format(path: Path) -> None:
    assert "hashserve.v1.agent_pb2" not in imports(path), (
        f"{path.name} imports the agent protos; go through scheduler/api/agent_codec"
    )


@pytest.mark.parametrize("path", CONTROL, ids=lambda p: p.name)
def test_control_builds_no_agent_message(path: Path) -> None:
    built = [
        (line, name) for line, name in calls(path)
        if name.startswith("agent_pb2.") and name.split(".")[-1] in AGENT_MESSAGES
    ]
    assert built == [], f"{path.name} builds agent messages; use scheduler/api/agent_codec"


DRIVERS = [
    REPO / "scheduler" / "control" / "power.py",
    REPO / "scheduler" / "backtest" / "twin.py",
]
DECISIONS = {"power_step", "plan_power", "shed_orders", "may_serve", "site_demand", "place",
             "account_interval"}


@pytest.mark.parametrize("path", DRIVERS, ids=lambda p: p.parent.name + "/" + p.name)
def test_the_power_drivers_plan_only_through_the_core_tick(path: Path) -> None:
    names = {name.split(".")[-1] for _, name in calls(path)}
    assert "PowerTick" in names, f"{path.name} does not run the core's PowerTick"
    assert names.isdisjoint(DECISIONS), sorted(names & DECISIONS)


def test_the_core_tick_is_the_one_caller_of_the_power_step() -> None:
    callers = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "scheduler").rglob("*.py")
        if "power_step" in {name.split(".")[-1] for _, name in calls(path)}
    )
    assert callers == ["scheduler/core/power_tick.py"]
