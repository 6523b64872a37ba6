"""What one policy run (or the optimum) earned and did, as plain data for tables, JSON and charts.

Decides nothing; the simulator and the optimum fill it in, the report reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LATENCY_PERCENTILES = (50.0, 95.0, 99.0)


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    scenario: str
    profit_usd: float
    mining_revenue_usd: float
    ai_revenue_usd_by_tier: Mapping[str, float]
    power_cost_usd: float
    mining_mwh: float
    ai_busy_mwh: float
    ai_idle_mwh: float
    curtailed_mwh: float  # cap headroom left unused
    requests_served_by_tier: Mapping[str, float]
    deadline_misses_by_tier: Mapping[str, float]  # requests dropped unserved past their deadline
    carried_past_end_requests: float  # still queued, not yet due, when the period ended
    interactive_latency_s: Mapping[str, float]  # "p50", "p95", "p99"
    latency_target_misses: float  # interactive requests served but slower than the tier target
    profit_by_hour_usd: np.ndarray
    mining_mw: np.ndarray  # [S, T] float32
    ai_mw: np.ndarray  # [S, T] float32, busy + idle GPU draw
    wall_s: float
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def ai_revenue_usd(self) -> float:
        return float(sum(self.ai_revenue_usd_by_tier.values()))

    @property
    def requests_served(self) -> float:
        return float(sum(self.requests_served_by_tier.values()))

    @property
    def deadline_misses(self) -> float:
        return float(sum(self.deadline_misses_by_tier.values()))

    @property
    def interactive_misses(self) -> float:
        return float(self.deadline_misses_by_tier.get("interactive", 0.0))

    def summary(self, optimum_profit_usd: float | None) -> dict[str, Any]:
        """The JSON object for this policy (no hourly arrays)."""
        fraction = (
            self.profit_usd / optimum_profit_usd
            if optimum_profit_usd is not None and optimum_profit_usd > 0
            else None
        )
        return {
            "profit_usd": round(self.profit_usd, 2),
            "revenue_usd": {
                "mining": round(self.mining_revenue_usd, 2),
                "ai": round(self.ai_revenue_usd, 2),
                "ai_by_tier": {k: round(v, 2) for k, v in self.ai_revenue_usd_by_tier.items()},
            },
            "power_cost_usd": round(self.power_cost_usd, 2),
            "mwh": {
                "mining": round(self.mining_mwh, 3),
                "ai_busy": round(self.ai_busy_mwh, 3),
                "ai_idle": round(self.ai_idle_mwh, 3),
                "curtailed": round(self.curtailed_mwh, 3),
            },
            "jobs_served": round(self.requests_served, 1),
            "jobs_served_by_tier": {
                k: round(v, 1) for k, v in self.requests_served_by_tier.items()
            },
            "deadline_misses": round(self.deadline_misses, 1),
            "deadline_misses_by_tier": {
                k: round(v, 1) for k, v in self.deadline_misses_by_tier.items()
            },
            "carried_past_end": round(self.carried_past_end_requests, 1),
            "interactive_latency_s": {
                k: round(v, 4) for k, v in self.interactive_latency_s.items()
            },
            "interactive_latency_target_misses": round(self.latency_target_misses, 1),
            "fraction_of_optimum": None if fraction is None else round(fraction, 5),
            "wall_s": round(self.wall_s, 2),
            **{k: round(v, 4) for k, v in self.extra.items()},
        }


def weighted_percentiles(
    values: np.ndarray, weights: np.ndarray, percentiles: tuple[float, ...]
) -> list[float]:
    """Percentiles of a weighted sample (the value below which p% of the weight lies)."""
    mask = weights > 0
    if not mask.any():
        return [float("nan")] * len(percentiles)
    v = values[mask]
    w = weights[mask]
    order = np.argsort(v, kind="stable")
    v = v[order]
    cumulative = np.cumsum(w[order])
    cumulative /= cumulative[-1]
    out = []
    for p in percentiles:
        index = int(np.searchsorted(cumulative, p / 100.0, side="left"))
        out.append(float(v[min(index, v.size - 1)]))
    return out
