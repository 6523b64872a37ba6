"""Metering: what each tenant used and was charged, per model and tier, from the jobs that ran.

A job is metered once, when it succeeds, for the tokens its agent reported: `prompt_tokens` read
and `completion_tokens` generated, charged at its tier's price per token (`jobs.charge_usd`, the
same figure the power tick books as the site's AI revenue, so the accounting's AI revenue and
the metered charges are one number). Failed, cancelled and expired jobs are not charged.

Pure aggregation: the journal supplies the `MeteredJob`s of a time range, this sums them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord, charge_usd

HOUR_S = 3600.0


@dataclass(frozen=True)
class MeteredJob:
    """The parts of a succeeded job that metering reads."""

    tenant: str
    model: str
    tier: str
    finished_s: float
    prompt_tokens: int
    completion_tokens: int
    charged_usd: float

    @classmethod
    def of(cls, rec: JobRecord) -> MeteredJob | None:
        if rec.state is not JobState.SUCCEEDED:
            return None
        return cls(
            tenant=rec.tenant, model=rec.spec.model, tier=rec.spec.tier.value,
            finished_s=rec.finished_s,
            prompt_tokens=max(rec.tokens_used - rec.completion_tokens, 0),
            completion_tokens=rec.completion_tokens,
            charged_usd=rec.charged_usd(rec.tokens_used),
        )

    @classmethod
    def from_columns(
        cls, tenant: str, model: str, tier: str, finished_s: float, value_usd: float,
        estimated_tokens: int, tokens_used: int, completion_tokens: int,
    ) -> MeteredJob:
        return cls(
            tenant=tenant, model=model, tier=tier, finished_s=finished_s,
            prompt_tokens=max(tokens_used - completion_tokens, 0),
            completion_tokens=completion_tokens,
            charged_usd=charge_usd(value_usd, estimated_tokens, tokens_used),
        )


@dataclass(frozen=True)
class UsageRow:
    """Sums for one tenant, model and tier; over one UTC hour (`hour_start_s`) or a whole range
    (`hour_start_s` None)."""

    tenant: str
    model: str
    tier: str
    hour_start_s: float | None
    jobs: int
    prompt_tokens: int
    completion_tokens: int
    charged_usd: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def aggregate(jobs: Iterable[MeteredJob], hourly: bool = False) -> list[UsageRow]:
    """Sum per (tenant, model, tier), and per UTC hour when `hourly`; rows sorted by hour, then
    tenant, model and tier."""
    sums: dict[tuple[float | None, str, str, str], list[float]] = {}
    for job in jobs:
        hour = (job.finished_s // HOUR_S) * HOUR_S if hourly else None
        row = sums.setdefault((hour, job.tenant, job.model, job.tier), [0, 0, 0, 0.0])
        row[0] += 1
        row[1] += job.prompt_tokens
        row[2] += job.completion_tokens
        row[3] += job.charged_usd
    return [
        UsageRow(tenant, model, tier, hour, int(n), int(prompt), int(completion), usd)
        for (hour, tenant, model, tier), (n, prompt, completion, usd) in sorted(
            sums.items(), key=lambda kv: (kv[0][0] or 0.0, kv[0][1], kv[0][2], kv[0][3])
        )
    ]
