"""The layers, beside the purity test: decisions in the core, messages in the api.

- Agent messages are built and read in `scheduler/api` only (`agent_codec`): the control loop and
  the power edge emit intents and hand them there, and take typed events
  (`control/agent_events.py`) from it, so the agent wire format has one home.
- The live power edge decides nothing itself: it calls the core's `power_step`, which alone calls
  the planner, so the power mode is decided in one place.
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


def test_the_live_power_edge_plans_only_through_the_core_step() -> None:
    power = REPO / "scheduler" / "control" / "power.py"
    names = {name.split(".")[-1] for _, name in calls(power)}
    assert "power_step" in names
    assert "plan_power" not in names and "shed_orders" not in names and "may_serve" not in names
