"""The scheduler's Prometheus metrics: every series it exports, made on one private registry.

`SchedulerMetrics` owns a `CollectorRegistry` of its own (not prometheus_client's global one), so
tests, the backtester and several servers in one process never clash over names. The edges call its
typed methods with what they just did (a job submitted, a tick's site figures, a heartbeat); it
decides nothing and reads no clock: timestamps come in as arguments.

Naming follows the Prometheus conventions: a `hashserve_` prefix, base units in the name (seconds,
watts, ratio), `_total` on counters. Money keeps the domain's units in the name (`usd_per_mwh`,
`usd_per_hour`, `usd_per_phs_day`), as there is no base unit for a price. Power is exported in
watts (Grafana scales to MW) although the methods take the domain's MW and kW.
Labels take values from the closed sets in `labels.py`; node and site series go when the node or
site does (`forget_node`, `forget_site`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scheduler.metrics.labels import (
    JOB_OUTCOMES,
    OTHER_MODEL,
    PLACEMENT_OUTCOMES,
    POWER_USES,
    REASSIGN_REASONS,
    REVENUE_SOURCES,
    SHED_CAUSES,
    TIERS,
    label_value,
)

_WATTS_PER_MW = 1_000_000.0
_WATTS_PER_KW = 1_000.0

# Queue waits run from milliseconds (interactive) to hours (flex waits for cheap power up to its
# deadline, 6 h by default in scheduler/core/models.py), so the buckets span both. 2 s and 10 s
# are the interactive latency targets of the catalogue (embeddings, generation).
WAIT_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    900.0, 1800.0, 3600.0, 7200.0, 21600.0,
)  # fmt: skip
# Inference time: ~5 ms a sentence (MiniLM) to minutes (512 tokens of generation on a CPU).
RUN_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
# DESIGN.md asks for placement "well under a millisecond at thousands of nodes".
PLACEMENT_BUCKETS_S: tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1, 1.0,
)  # fmt: skip


class SchedulerMetrics:
    """All scheduler series on `self.registry`; one instance per scheduler process."""

    def __init__(
        self,
        models: Iterable[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        # With a catalogue, unknown model names collapse into "other" so a client cannot mint
        # series; without one the caller must pass only validated names.
        self._models: frozenset[str] | None = frozenset(models) if models is not None else None
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._node_site: dict[str, str] = {}
        self._site_region: dict[str, str] = {}
        self._series_cache: dict[tuple[int, tuple[str, ...]], Any] = {}

        # Jobs
        self.jobs_submitted = Counter(
            "hashserve_jobs_submitted_total",
            "Jobs accepted into the journal.",
            ["tier", "model"],
            registry=r,
        )
        self.jobs_finished = Counter(
            "hashserve_jobs_finished_total",
            "Jobs that reached a terminal state, by outcome.",
            ["tier", "outcome"],
            registry=r,
        )
        self.leader = Gauge(
            "hashserve_scheduler_leader",
            "1 while this scheduler holds the leader lease and serves; 0 as a standby.",
            registry=r,
        )
        self.leader_epoch = Gauge(
            "hashserve_scheduler_epoch",
            "The leader epoch this scheduler serves (or last served) with; 0 before it led.",
            registry=r,
        )
        # Metering (scheduler/core/metering.py): what each tenant used and was charged, from
        # the tokens its succeeded jobs reported; the same sums `hashserve admin usage` reads.
        self.tenant_tokens = Counter(
            "hashserve_tenant_tokens_total",
            "Tokens of succeeded jobs, per tenant, model, tier and direction (prompt read or "
            "completion generated).",
            ["tenant", "model", "tier", "direction"],
            registry=r,
        )
        self.tenant_charged = Counter(
            "hashserve_tenant_charged_usd_total",
            "USD charged for succeeded jobs, per tenant, model and tier (the accounting's AI "
            "revenue).",
            ["tenant", "model", "tier"],
            registry=r,
        )
        self.jobs_late = Counter(
            "hashserve_jobs_late_total",
            "Succeeded jobs whose submit-to-result time exceeded their tier's latency target.",
            ["tier"],
            registry=r,
        )
        self.jobs_queued = Gauge(
            "hashserve_jobs_queued", "Jobs waiting for placement now.", ["tier"], registry=r
        )
        self.jobs_reassigned = Counter(
            "hashserve_jobs_reassigned_total",
            "Assignments taken back and the job queued again, by reason.",
            ["reason"],
            registry=r,
        )
        self.agent_refused = Counter(
            "hashserve_agent_refused_total",
            "Agent calls and messages refused: bad credentials, impersonation, others' jobs.",
            ["what"],
            registry=r,
        )
        self.jobs_preempted = Counter(
            "hashserve_jobs_preempted_total",
            "Running jobs stopped because their site had to shed AI power, by cause.",
            ["cause"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "hashserve_job_queue_wait_seconds",
            "Submit to assignment (last attempt).",
            ["tier"],
            buckets=WAIT_BUCKETS_S,
            registry=r,
        )
        self.run_time = Histogram(
            "hashserve_job_run_seconds",
            "Agent-measured inference time of finished jobs.",
            ["model"],
            buckets=RUN_BUCKETS_S,
            registry=r,
        )
        self.latency = Histogram(
            "hashserve_job_latency_seconds",
            "Submit to result of succeeded jobs.",
            ["tier"],
            buckets=WAIT_BUCKETS_S,
            registry=r,
        )

        # Group commit (scheduler/control/loop.py): how many submits share a journal commit, and
        # how long the commit takes. One submit a commit under load means it does not group.
        self.commit_submits = Histogram(
            "hashserve_journal_commit_submits",
            "Submit calls written by one group commit of the journal.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.commit_time = Histogram(
            "hashserve_journal_commit_seconds",
            "Time of one group commit of submits, from its start to its end (the disk's sync "
            "included).",
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )

        # Placement
        self.placement_time = Histogram(
            "hashserve_placement_decision_seconds",
            "Time of one placement decision (one job).",
            buckets=PLACEMENT_BUCKETS_S,
            registry=r,
        )
        self.placement_outcomes = Counter(
            "hashserve_placement_outcomes_total",
            "Placement decisions, by outcome.",
            ["outcome"],
            registry=r,
        )

        # Market
        self.hashprice = Gauge(
            "hashserve_hashprice_usd_per_phs_day",
            "Bitcoin hashprice the planner uses.",
            registry=r,
        )
        self.btc_price = Gauge(
            "hashserve_bitcoin_price_usd", "BTC/USD the planner uses.", registry=r
        )
        self.feed_age = Gauge(
            "hashserve_feed_age_seconds",
            "Age of the newest value from a market feed.",
            ["feed", "zone"],
            registry=r,
        )
        self.feed_max_age = Gauge(
            "hashserve_feed_max_age_seconds",
            "Age past which the planner treats a feed's value as stale.",
            ["feed", "zone"],
            registry=r,
        )
        self.source_age = Gauge(
            "hashserve_market_source_age_seconds",
            "Seconds since a live market source last answered (absent before its first answer).",
            ["source"],
            registry=r,
        )
        self.source_errors = Gauge(
            "hashserve_market_source_errors",
            "Failed polls of a live market source since the scheduler started.",
            ["source"],
            registry=r,
        )
        self.source_up = Gauge(
            "hashserve_market_source_up",
            "1 when a live market source's last poll succeeded.",
            ["source"],
            registry=r,
        )
        self.hashprice_index = Gauge(
            "hashserve_hashprice_index_usd_per_phs_day",
            "The published hashprice index configured for comparison.",
            registry=r,
        )
        self.hashprice_index_difference = Gauge(
            "hashserve_hashprice_index_difference_usd_per_phs_day",
            "The hashprice the planner uses minus the published index.",
            registry=r,
        )
        self.replay_looping = Gauge(
            "hashserve_market_replay_looping",
            "1 when the market replay loops (no live source: the replayed history repeats).",
            registry=r,
        )
        self.replay_loops = Gauge(
            "hashserve_market_replay_loops",
            "How many times the looping market replay has gone back to its start.",
            registry=r,
        )

        # Sites
        site = ["site", "region"]
        self.site_price = Gauge(
            "hashserve_site_power_price_usd_per_mwh", "Power price at the site.", site, registry=r
        )
        self.site_r_mine = Gauge(
            "hashserve_site_mining_revenue_usd_per_mwh",
            "R_mine: what one MWh earns hashing Bitcoin at the site.",
            site,
            registry=r,
        )
        self.site_opportunity = Gauge(
            "hashserve_site_opportunity_price_usd_per_mwh",
            "What one MWh given to AI costs the site (price, or max(price, R_mine) at the cap).",
            site,
            registry=r,
        )
        self.site_cap = Gauge(
            "hashserve_site_power_cap_watts", "Site grid interconnect limit.", site, registry=r
        )
        self.site_power = Gauge(
            "hashserve_site_power_watts",
            "Site power by use (mining, ai, idle, curtailed).",
            [*site, "use"],
            registry=r,
        )
        self.site_revenue = Gauge(
            "hashserve_site_revenue_usd_per_hour",
            "Site revenue rate by source.",
            [*site, "source"],
            registry=r,
        )
        self.site_power_cost = Gauge(
            "hashserve_site_power_cost_usd_per_hour", "Site power bill rate.", site, registry=r
        )
        self.site_mode_changes = Counter(
            "hashserve_site_mode_changes_total",
            "Power plan changes sent to the site.",
            site,
            registry=r,
        )
        self.site_feed_fallback = Gauge(
            "hashserve_site_feed_fallback",
            "1 while the planner runs the site on its safe fallback for want of market data.",
            site,
            registry=r,
        )
        self.site_last_heartbeat = Gauge(
            "hashserve_site_last_heartbeat_timestamp_seconds",
            "Unix time of the newest heartbeat from any node at the site.",
            site,
            registry=r,
        )

        # Nodes
        node = ["node", "site"]
        self.node_connected = Gauge(
            "hashserve_node_connected", "1 while the node's agent stream is up.", node, registry=r
        )
        self.node_draining = Gauge(
            "hashserve_node_draining", "1 while ops drain the node.", node, registry=r
        )
        self.node_gpu_utilization = Gauge(
            "hashserve_node_gpu_utilization_ratio",
            "GPU utilisation the agent reports, 0..1.",
            node,
            registry=r,
        )
        self.node_power = Gauge(
            "hashserve_node_power_draw_watts", "Power draw the agent reports.", node, registry=r
        )
        self.node_jobs_running = Gauge(
            "hashserve_node_jobs_running", "Jobs running on the node.", node, registry=r
        )

        # Models, per site: capacity by SLO (scheduler/core/capacity.py)
        self.model_replicas = Gauge(
            "hashserve_model_replicas",
            "Nodes at the site holding the model loaded (or loading it).",
            ["site", "model"], registry=r,
        )
        self.model_replicas_wanted = Gauge(
            "hashserve_model_replicas_wanted",
            "Replicas the model's latency targets need at its arrival rate and queue.",
            ["model"], registry=r,
        )
        self.model_arrivals = Gauge(
            "hashserve_model_arrivals_per_second",
            "The model's job arrival rate (exponentially weighted).", ["model"], registry=r,
        )
        self.model_queued = Gauge(
            "hashserve_model_jobs_queued", "The model's jobs waiting for a node.", ["model"],
            registry=r,
        )
        self.model_capacity_actions = Counter(
            "hashserve_model_capacity_actions_total",
            "Loads and unloads capacity planning sent to agents.",
            ["site", "model", "action"], registry=r,
        )
        self.site_model_jobs = Counter(
            "hashserve_site_model_jobs_finished_total",
            "Jobs that ended, by the site that ran them last (none: never placed) and model.",
            ["site", "model", "outcome"], registry=r,
        )
        self.model_cold_start = Histogram(
            "hashserve_model_cold_start_seconds",
            "How long a job waited for its model to load on its node (cold starts only).",
            ["site", "model"], buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120), registry=r,
        )
        self._replica_keys: set[tuple[str, str]] = set()

        self._initialise_bounded_series()

    def _initialise_bounded_series(self) -> None:
        # Series over closed label sets exist at 0 from the start, so rate() and the alert rules
        # see a baseline instead of "no data" before the first event.
        for tier in TIERS:
            self.jobs_queued.labels(tier)
            self.jobs_late.labels(tier)
            self.queue_wait.labels(tier)
            self.latency.labels(tier)
            for outcome in JOB_OUTCOMES:
                self.jobs_finished.labels(tier, outcome)
            for model in sorted(self._models or ()):
                self.jobs_submitted.labels(tier, model)
        for outcome in PLACEMENT_OUTCOMES:
            self.placement_outcomes.labels(outcome)
        for reason in REASSIGN_REASONS:
            self.jobs_reassigned.labels(reason)
        for cause in SHED_CAUSES:
            self.jobs_preempted.labels(cause)

    def _model(self, model: str) -> str:
        if self._models is None or model in self._models:
            return model
        return OTHER_MODEL

    def _series(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, found once: the per-job series are touched at every submit
        and outcome, and a label lookup costs more than the increment. Only for series never
        removed (the nodes' are, and use `labels` itself)."""
        key = (id(metric), labels)
        child = self._series_cache.get(key)
        if child is None:
            child = self._series_cache[key] = metric.labels(*labels)
        return child

    # Jobs ------------------------------------------------------------------------------------

    def set_leader(self, leading: bool, epoch: int) -> None:
        self.leader.set(1.0 if leading else 0.0)
        self.leader_epoch.set(float(epoch))

    def job_metered(self, tenant: str, tier: str | Enum, model: str, prompt_tokens: int,
                    completion_tokens: int, charged_usd: float) -> None:
        labels = (tenant, self._model(model), label_value(tier, TIERS, "tier"))
        self._series(self.tenant_tokens, *labels, "prompt").inc(prompt_tokens)
        self._series(self.tenant_tokens, *labels, "completion").inc(completion_tokens)
        self._series(self.tenant_charged, *labels).inc(charged_usd)

    def job_submitted(self, tier: str | Enum, model: str) -> None:
        self._series(self.jobs_submitted, label_value(tier, TIERS, "tier"),
                     self._model(model)).inc()

    def job_finished(
        self,
        tier: str | Enum,
        model: str,
        outcome: str | Enum,
        *,
        queue_s: float | None = None,
        run_s: float | None = None,
        latency_s: float | None = None,
        latency_target_s: float | None = None,
    ) -> None:
        """One job reached a terminal state.

        `queue_s` and `run_s` are None when the job never got that far (cancelled in the queue).
        `latency_s` is submit to result; it defaults to queue + run. A succeeded job over
        `latency_target_s` (its tier's promise) counts as late.
        """
        tier_label = label_value(tier, TIERS, "tier")
        outcome_label = label_value(outcome, JOB_OUTCOMES, "outcome")
        self._series(self.jobs_finished, tier_label, outcome_label).inc()
        if queue_s is not None:
            self._series(self.queue_wait, tier_label).observe(queue_s)
        if run_s is not None:
            self._series(self.run_time, self._model(model)).observe(run_s)
        if outcome_label != "succeeded":
            return
        if latency_s is None and queue_s is not None and run_s is not None:
            latency_s = queue_s + run_s
        if latency_s is None:
            return
        self._series(self.latency, tier_label).observe(latency_s)
        if latency_target_s is not None and latency_s > latency_target_s:
            self._series(self.jobs_late, tier_label).inc()

    def set_queue_depth(self, tier: str | Enum, n: int) -> None:
        self.jobs_queued.labels(label_value(tier, TIERS, "tier")).set(n)

    def job_reassigned(self, reason: str | Enum) -> None:
        self.jobs_reassigned.labels(label_value(reason, REASSIGN_REASONS, "reason")).inc()

    def agent_refusal(self, what: Enum) -> None:
        self.agent_refused.labels(str(what.value)).inc()

    def job_preempted(self, cause: str | Enum) -> None:
        self.jobs_preempted.labels(label_value(cause, SHED_CAUSES, "cause")).inc()

    # Placement -------------------------------------------------------------------------------

    def observe_commit(self, submits: int, seconds: float) -> None:
        self.commit_submits.observe(submits)
        self.commit_time.observe(seconds)

    def observe_placement_s(self, seconds: float) -> None:
        self.placement_time.observe(seconds)

    def placement_outcome(self, outcome: str, n: int = 1) -> None:
        self._series(self.placement_outcomes,
                     label_value(outcome, PLACEMENT_OUTCOMES, "outcome")).inc(n)

    # Market ----------------------------------------------------------------------------------

    def set_hashprice(self, usd_per_phs_day: float) -> None:
        self.hashprice.set(usd_per_phs_day)

    def set_btc_price(self, usd: float) -> None:
        self.btc_price.set(usd)

    def set_feed_age(self, feed: str, age_s: float, max_age_s: float, zone: str = "") -> None:
        """A feed's newest value is `age_s` old; the planner calls it stale past `max_age_s`.

        Exporting the threshold next to the age lets the alert rule use the planner's own limit
        instead of a second copy of it.
        """
        self.feed_age.labels(feed, zone).set(age_s)
        self.feed_max_age.labels(feed, zone).set(max_age_s)

    # Sites -----------------------------------------------------------------------------------

    def set_site(
        self,
        site: str,
        region: str,
        *,
        price_usd_per_mwh: float,
        r_mine_usd_per_mwh: float,
        mining_mw: float,
        ai_mw: float,
        idle_mw: float,
        curtailed_mw: float,
        mining_revenue_usd_per_hour: float,
        ai_revenue_usd_per_hour: float,
        power_cost_usd_per_hour: float,
        opportunity_price_usd_per_mwh: float | None = None,
        power_cap_mw: float | None = None,
    ) -> None:
        """A site's figures after a control tick (what the plan says it does now)."""
        self._remember_region(site, region)
        labels = (site, region)
        self.site_price.labels(*labels).set(price_usd_per_mwh)
        self.site_r_mine.labels(*labels).set(r_mine_usd_per_mwh)
        if opportunity_price_usd_per_mwh is not None:
            self.site_opportunity.labels(*labels).set(opportunity_price_usd_per_mwh)
        if power_cap_mw is not None:
            self.site_cap.labels(*labels).set(power_cap_mw * _WATTS_PER_MW)
        power_mw = {"mining": mining_mw, "ai": ai_mw, "idle": idle_mw, "curtailed": curtailed_mw}
        for use in POWER_USES:
            self.site_power.labels(*labels, use).set(power_mw[use] * _WATTS_PER_MW)
        revenue = {"mining": mining_revenue_usd_per_hour, "ai": ai_revenue_usd_per_hour}
        for source in REVENUE_SOURCES:
            self.site_revenue.labels(*labels, source).set(revenue[source])
        self.site_power_cost.labels(*labels).set(power_cost_usd_per_hour)
        self.site_feed_fallback.labels(*labels)
        self.site_mode_changes.labels(*labels)

    def mode_changed(self, site: str, region: str) -> None:
        self._remember_region(site, region)
        self.site_mode_changes.labels(site, region).inc()

    def set_feed_fallback(self, site: str, region: str, fallback: bool) -> None:
        self._remember_region(site, region)
        self.site_feed_fallback.labels(site, region).set(1 if fallback else 0)

    def site_heartbeat(self, site: str, region: str, at_s: float) -> None:
        """A node at the site sent a heartbeat at Unix time `at_s` (from the edge's clock)."""
        self._remember_region(site, region)
        self.site_last_heartbeat.labels(site, region).set(at_s)

    def forget_site(self, site: str) -> None:
        """Drop every series of a site taken out of the fleet file."""
        region = self._site_region.pop(site, None)
        if region is None:
            return
        for metric in (
            self.site_price,
            self.site_r_mine,
            self.site_opportunity,
            self.site_cap,
            self.site_power_cost,
            self.site_mode_changes,
            self.site_feed_fallback,
            self.site_last_heartbeat,
        ):
            _remove(metric, site, region)
        for use in POWER_USES:
            _remove(self.site_power, site, region, use)
        for source in REVENUE_SOURCES:
            _remove(self.site_revenue, site, region, source)

    def _remember_region(self, site: str, region: str) -> None:
        old = self._site_region.get(site)
        if old is not None and old != region:
            # A site that moved region in the fleet file: its old series would double count.
            self.forget_site(site)
        self._site_region[site] = region

    # Models --------------------------------------------------------------------------------

    def set_model_capacity(self, model: str, *, wanted: int, arrivals_per_s: float,
                           queued: int) -> None:
        label = self._model(model)
        self.model_replicas_wanted.labels(label).set(wanted)
        self.model_arrivals.labels(label).set(arrivals_per_s)
        self.model_queued.labels(label).set(queued)

    def set_model_replicas(self, replicas: Mapping[tuple[str, str], int]) -> None:
        """Replicas per (site, model); a pair no longer held drops to 0."""
        for site, model in self._replica_keys - set(replicas):
            self.model_replicas.labels(site, self._model(model)).set(0)
        for (site, model), n in replicas.items():
            self.model_replicas.labels(site, self._model(model)).set(n)
        self._replica_keys |= set(replicas)

    def model_capacity_action(self, site: str, model: str, action: str) -> None:
        self.model_capacity_actions.labels(site, self._model(model), action).inc()

    def site_model_job_finished(self, site: str, model: str, outcome: str,
                                cold_start_s: float | None = None) -> None:
        label = self._model(model)
        self.site_model_jobs.labels(site or "none", label, outcome).inc()
        if cold_start_s is not None and site:
            self.model_cold_start.labels(site, label).observe(cold_start_s)

    # Nodes -----------------------------------------------------------------------------------

    def set_node(
        self,
        node: str,
        site: str,
        *,
        connected: bool,
        gpu_utilization: float,
        power_draw_kw: float,
        jobs_running: int,
        draining: bool = False,
    ) -> None:
        """A node's state from its latest heartbeat (or its disconnect)."""
        old_site = self._node_site.get(node)
        if old_site is not None and old_site != site:
            self.forget_node(node)
        self._node_site[node] = site
        self.node_connected.labels(node, site).set(1 if connected else 0)
        self.node_draining.labels(node, site).set(1 if draining else 0)
        self.node_gpu_utilization.labels(node, site).set(gpu_utilization)
        self.node_power.labels(node, site).set(power_draw_kw * _WATTS_PER_KW)
        self.node_jobs_running.labels(node, site).set(jobs_running)

    def forget_node(self, node: str) -> None:
        """Drop a node's series (the node left the fleet, not merely disconnected)."""
        site = self._node_site.pop(node, None)
        if site is None:
            return
        for metric in (
            self.node_connected,
            self.node_draining,
            self.node_gpu_utilization,
            self.node_power,
            self.node_jobs_running,
        ):
            _remove(metric, node, site)


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    # A label set never set (e.g. a cap that was not given) raises KeyError: nothing to drop.
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
