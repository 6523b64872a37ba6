"""Score plugins: what would running this job on this node cost, in USD?

Every term is money so that the terms add without arbitrary normalisation, and an operator can
read a breakdown as "energy $0.00002 + waiting $0.0001 + cold start $0.0005".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.core.models import Tier
from scheduler.core.placement.types import JobRequest, NodeView, ScoreBreakdown, SiteView
from scheduler.core.prefix import cached_tokens

KW_PER_MW = 1000.0
S_PER_H = 3600.0
MIN_RATE_TOKENS_PER_S = 1e-6  # a learned rate is never taken below this (no division by zero)


@dataclass(frozen=True)
class ScoringProfile:
    """Weights and prices of the score terms. One profile for live and backtest alike."""

    energy_weight: float = 1.0
    delay_weight: float = 1.0
    warmth_weight: float = 1.0
    # What a second of waiting costs the customer relationship, by tier (USD/s). Interactive work
    # is dear to delay; flex work was sold on the understanding that it waits.
    wait_usd_per_s: dict[Tier, float] = field(
        default_factory=lambda: {
            Tier.INTERACTIVE: 1e-3,
            Tier.STANDARD: 1e-5,
            Tier.FLEX: 1e-8,
        }
    )
    # Finishing past the tier's latency target costs this much more per second late.
    late_usd_per_s: float = 1e-2
    # Loading a model that is not warm on the node: seconds lost, priced as waiting (where the
    # node has not measured its own load of the model).
    cold_start_s: float = 2.0
    # Rate assumed for a model the node has not yet run (tokens/s).
    default_tokens_per_s: float = 100.0
    # Where a node's engine holds the start of a job's prompt (scheduler/core/prefix.py), the
    # prefill it need not do is waiting saved: the held tokens at the node's prefill rate (its
    # agent measures it; else `prefill_tokens_per_s`), priced as the tier's waiting, and so
    # weighed against the node's backlog. Weight 0: the engines' caches are ignored (least
    # loaded, as before prefix routing). Not the node's learned rate: that one mixes prefill
    # with decoding, and cache hits inflate it.
    prefix_cache_weight: float = 1.0
    prefill_tokens_per_s: float = 2_000.0
    # Flex deferral: wait only when the saving is at least this share of the cost now, and the
    # window still leaves this margin before the deadline.
    defer_min_saving_ratio: float = 0.10
    defer_deadline_margin_s: float = 1800.0


DEFAULT_PROFILE = ScoringProfile()


def estimated_run_s(job: JobRequest, node: NodeView, profile: ScoringProfile) -> float:
    rate = node.tokens_per_s.get(job.model, profile.default_tokens_per_s)
    return (job.input_tokens + job.output_tokens_est) / max(rate, MIN_RATE_TOKENS_PER_S)


def marginal_energy_mwh(job: JobRequest, node: NodeView, profile: ScoringProfile) -> float:
    # A node that is on draws idle power whether or not it runs the job; the job costs the rest.
    marginal_kw = max(node.busy_power_kw - node.idle_power_kw, 0.0)
    return marginal_kw * estimated_run_s(job, node, profile) / S_PER_H / KW_PER_MW


def energy_usd(
    job: JobRequest, node: NodeView, site: SiteView, profile: ScoringProfile,
    opportunity_price_usd_per_mwh: float | None = None,
) -> float:
    price = (
        site.opportunity_price_usd_per_mwh
        if opportunity_price_usd_per_mwh is None
        else opportunity_price_usd_per_mwh
    )
    return marginal_energy_mwh(job, node, profile) * price


def delay_usd(
    job: JobRequest, node: NodeView, latency_target_s: float, now_s: float,
    profile: ScoringProfile,
) -> float:
    waited_s = now_s - job.submitted_s
    finish_after_s = waited_s + node.backlog_s + estimated_run_s(job, node, profile)
    late_s = max(finish_after_s - latency_target_s, 0.0)
    return profile.wait_usd_per_s[job.tier] * finish_after_s + profile.late_usd_per_s * late_s


def warmth_usd(job: JobRequest, node: NodeView, profile: ScoringProfile) -> float:
    if job.model in node.warm_models:
        return 0.0
    # The node's own measured load time where it has one: a 40 GB model is not a 40 MB one.
    cold_s = node.cold_start_s.get(job.model, profile.cold_start_s)
    return cold_s * profile.wait_usd_per_s[job.tier]


def prefix_saved_s(job: JobRequest, node: NodeView, profile: ScoringProfile) -> float:
    """Seconds of prefill the node's held prefix of the job's prompt saves (0: none held)."""
    if not (job.prefix_blocks and node.prefix_blocks and profile.prefix_cache_weight):
        return 0.0
    held = min(cached_tokens(job.prefix_blocks, node.prefix_blocks), float(job.input_tokens))
    rate = node.prefill_tokens_per_s or profile.prefill_tokens_per_s
    return held / max(rate, MIN_RATE_TOKENS_PER_S)


def prefix_usd(job: JobRequest, node: NodeView, profile: ScoringProfile) -> float:
    """The waiting a held prefix saves, as a negative cost (0 where the node holds none)."""
    saved_s = prefix_saved_s(job, node, profile)
    if not saved_s:
        return 0.0
    return -profile.prefix_cache_weight * saved_s * profile.wait_usd_per_s[job.tier]


def score(
    job: JobRequest, node: NodeView, site: SiteView, latency_target_s: float, now_s: float,
    profile: ScoringProfile,
) -> ScoreBreakdown:
    return ScoreBreakdown(
        energy_usd=profile.energy_weight * energy_usd(job, node, site, profile),
        delay_usd=profile.delay_weight * delay_usd(job, node, latency_target_s, now_s, profile),
        warmth_usd=profile.warmth_weight * warmth_usd(job, node, profile),
        prefix_usd=prefix_usd(job, node, profile),
    )
