"""Helpers for the deploy tests: which series names PromQL expressions use, and which exist.

`used_metric_names` is a small lexer, not a PromQL parser: it drops strings, label matchers,
ranges and grouping clauses, then keeps the identifiers that are not functions or keywords. It is
enough for the expressions in deploy/ (rules and dashboard panels), which promtool parses properly.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from node_agent.metrics import AgentMetrics
from scheduler.front.metrics import FrontMetrics
from scheduler.metrics.grpc_interceptor import GrpcServerMetrics
from scheduler.metrics.registry import SchedulerMetrics

# Series that Prometheus itself makes for every target, allowed in rules and panels.
PROMETHEUS_SERIES = frozenset({"up"})

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan", "Inf", "NaN"}
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def used_metric_names(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS:
            continue
        names.add(name)
    return names


def _series_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def defined_series_names() -> set[str]:
    """Every series name the scheduler (with its gRPC interceptor), a front and an agent can
    export (the native front exports the Python front's names)."""
    scheduler = SchedulerMetrics()
    GrpcServerMetrics(scheduler.registry)
    agent = AgentMetrics(agent_id="a", site="s", region="r", gpu_kind="cpu", models=["m"])
    return (_series_names(scheduler.registry) | _series_names(agent.registry)
            | _series_names(FrontMetrics().registry))
