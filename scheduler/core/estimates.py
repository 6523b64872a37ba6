"""What each node has shown it can do: tokens per second and energy per job, per model.

Learned from outcomes with an exponentially weighted mean, so a node that slows down (thermal
throttling, a noisy neighbour) is priced as it is now, not as it was at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EWMA_WEIGHT = 0.2  # about the last ten jobs carry the estimate


@dataclass
class NodeEstimates:
    tokens_per_s: dict[str, float] = field(default_factory=dict)
    kwh_per_token: dict[str, float] = field(default_factory=dict)
    jobs_seen: int = 0
    run_s_mean: float = 1.0  # before any job: a guess of one second, replaced by the first job

    def learn(self, model: str, tokens: int, run_s: float, energy_kwh: float) -> None:
        if tokens <= 0 or run_s <= 0:
            return
        self.run_s_mean = (
            run_s
            if self.jobs_seen == 0
            else self.run_s_mean + EWMA_WEIGHT * (run_s - self.run_s_mean)
        )
        self.jobs_seen += 1
        rate = tokens / run_s
        old = self.tokens_per_s.get(model)
        self.tokens_per_s[model] = rate if old is None else old + EWMA_WEIGHT * (rate - old)
        if energy_kwh > 0:
            per_token = energy_kwh / tokens
            old_e = self.kwh_per_token.get(model)
            self.kwh_per_token[model] = (
                per_token if old_e is None else old_e + EWMA_WEIGHT * (per_token - old_e)
            )
