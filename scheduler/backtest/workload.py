"""From request traces to hourly work: how many tokens of each (tier, model) arrive each hour.

What it decides: the traces (about an hour of real Azure requests each) are scaled to a chosen
request rate and split by a chosen tier mix, then repeated over the period, optionally shaped by
a daily cycle. Work is aggregated per hour and class in million tokens (input + output, the unit
the placer's run-time estimate uses) rather than as millions of individual jobs. What it leaves
to others: where and when the work runs (the policies), and what it earns (the class's price).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.backtest.inputs import S_PER_H, Trace
from scheduler.core.models import ModelSpec, Tier

TOKENS_PER_MTOK = 1e6
TIER_ORDER = (Tier.INTERACTIVE, Tier.STANDARD, Tier.FLEX)


@dataclass(frozen=True)
class WorkClass:
    """Work that is priced, deadlined and placed alike."""

    tier: Tier
    model: str
    deadline_h: int  # served within this many hours of arrival (1: the hour it arrives)
    usd_per_mtok: float
    latency_target_s: float
    deadline_s: float
    memory_mb: int = 0
    allowed_regions: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        return f"{self.tier.value}/{self.model}"


@dataclass(frozen=True)
class Workload:
    classes: tuple[WorkClass, ...]
    mtok: np.ndarray  # [K, T] million tokens arriving per class and hour
    requests: np.ndarray  # [K, T] requests arriving per class and hour
    # One repetition of the trace: per-request tokens, for latency percentiles and for the
    # representative job the placer scores.
    request_input_tokens: np.ndarray
    request_output_tokens: np.ndarray

    @property
    def hours(self) -> int:
        return int(self.mtok.shape[1])

    @property
    def mean_input_tokens(self) -> float:
        return float(self.request_input_tokens.mean())

    @property
    def mean_output_tokens(self) -> float:
        return float(self.request_output_tokens.mean())

    @property
    def mean_request_tokens(self) -> float:
        return self.mean_input_tokens + self.mean_output_tokens


def parse_tier_mix(text: str) -> dict[Tier, float]:
    """'interactive=0.3,standard=0.3,flex=0.4' -> shares that sum to 1."""
    mix: dict[Tier, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            tier = Tier(name.strip())
            share = float(value)
        except ValueError:
            raise ValueError(
                f"tier mix {text!r}: expected tier=share pairs with tiers "
                f"{', '.join(t.value for t in Tier)}"
            ) from None
        if share < 0:
            raise ValueError(f"tier mix {text!r}: negative share for {tier.value}")
        mix[tier] = share
    total = sum(mix.values())
    if total <= 0:
        raise ValueError(f"tier mix {text!r}: shares sum to zero")
    return {tier: share / total for tier, share in mix.items()}


def trace_requests_per_s(traces: Sequence[Trace]) -> float:
    """The traces' own combined arrival rate (each covers about an hour)."""
    rate = 0.0
    for trace in traces:
        rate += trace.offset_s.size / max(trace.duration_s, 1.0)
    return rate


def daily_shape(start_s: float, hours: int, amplitude: float, peak_hour_utc: float) -> np.ndarray:
    """1 + amplitude * cos(2 pi (h - peak) / 24): mean 1 over whole days."""
    hour_of_day = ((start_s / S_PER_H) + np.arange(hours)) % 24
    return 1.0 + amplitude * np.cos(2 * math.pi * (hour_of_day - peak_hour_utc) / 24)


def build_workload(
    traces: Sequence[Trace],
    start_s: float,
    hours: int,
    requests_per_s: float,
    tier_mix: Mapping[Tier, float],
    model: ModelSpec,
    daily_amplitude: float = 0.0,
    peak_hour_utc: float = 15.0,
) -> Workload:
    if not traces:
        raise ValueError("at least one request trace is needed")
    if requests_per_s < 0:
        raise ValueError("the request rate must not be negative")
    inputs = np.concatenate([t.input_tokens for t in traces])
    outputs = np.concatenate([t.output_tokens for t in traces])
    tokens_per_request = float((inputs + outputs).mean())
    shape = daily_shape(start_s, hours, daily_amplitude, peak_hour_utc)
    per_hour = requests_per_s * S_PER_H * shape
    classes: list[WorkClass] = []
    mtok_rows: list[np.ndarray] = []
    request_rows: list[np.ndarray] = []
    for tier in TIER_ORDER:
        share = tier_mix.get(tier, 0.0)
        if share <= 0:
            continue
        terms = model.tiers[tier]
        classes.append(
            WorkClass(
                tier=tier,
                model=model.name,
                deadline_h=max(1, int(terms.default_deadline_s // S_PER_H)),
                usd_per_mtok=terms.usd_per_million_tokens,
                latency_target_s=terms.latency_target_s,
                deadline_s=terms.default_deadline_s,
                memory_mb=model.memory_mb,
            )
        )
        requests = per_hour * share
        request_rows.append(requests)
        mtok_rows.append(requests * tokens_per_request / TOKENS_PER_MTOK)
    return Workload(
        classes=tuple(classes),
        mtok=np.vstack(mtok_rows),
        requests=np.vstack(request_rows),
        request_input_tokens=inputs,
        request_output_tokens=outputs,
    )
