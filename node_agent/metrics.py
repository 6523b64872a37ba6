"""A node agent's Prometheus metrics, on a registry of its own, and the HTTP endpoint to serve them.

The agent's runtime calls `AgentMetrics` with what it just did (a job started or ended, a power
reading, the stream to the scheduler up or down); this module decides nothing. The agent's series
carry no site or node labels: Prometheus adds them as target labels in the scrape config (see
deploy/prometheus/prometheus.yml), and `hashserve_agent_info` carries them for joins, so one agent's
series stay few whatever the fleet's size.

Units follow the Prometheus conventions (seconds, watts, ratio, `_total` on counters); the methods
take the domain's kW and MW and convert.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scheduler.metrics.http_server import MetricsHttpServer, start_metrics_http_server

__all__ = [
    "AGENT_JOB_OUTCOMES",
    "MODEL_LOAD_OUTCOMES",
    "AgentMetrics",
    "MetricsHttpServer",
    "start_metrics_http_server",
]

# How a job ends on the agent; "expired" is the scheduler's verdict, not the agent's.
AGENT_JOB_OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
# How a model load ends: "refused" before it began (its memory is not free), "failed" after.
MODEL_LOAD_OUTCOMES: tuple[str, ...] = ("loaded", "refused", "failed")
_TOKEN_KINDS: tuple[str, ...] = ("prompt", "completion", "prompt_cached")
_POWER_USES: tuple[str, ...] = ("mining", "ai", "curtailed")
_OTHER_MODEL = "other"
_WATTS_PER_KW = 1_000.0
_WATTS_PER_MW = 1_000_000.0

# ~5 ms a sentence (MiniLM int8 on a CPU) to minutes (long generations).
INFERENCE_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
)  # fmt: skip

# An ONNX MiniLM in a fraction of a second to a large GGUF from a slow disk in minutes.
MODEL_LOAD_BUCKETS_S: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
)  # fmt: skip


class AgentMetrics:
    """All series of one agent process on `self.registry`."""

    def __init__(
        self,
        *,
        agent_id: str,
        site: str,
        region: str,
        gpu_kind: str,
        models: Iterable[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        # The agent serves a fixed set of models (its backends, loaded or loadable); anything
        # else is "other".
        self._models = frozenset(models)
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Gauge(
            "hashserve_agent_info",
            "Always 1; labels say which agent this is (for joins).",
            ["agent_id", "site", "region", "gpu_kind"],
            registry=r,
        )
        self.info.labels(agent_id, site, region, gpu_kind).set(1)
        self.connected = Gauge(
            "hashserve_agent_connected", "1 while the stream to the scheduler is up.", registry=r
        )
        self.reconnects = Counter(
            "hashserve_agent_reconnects_total",
            "Times the agent dialled the scheduler again after losing it.",
            registry=r,
        )
        self.fallback = Gauge(
            "hashserve_agent_fallback_active",
            "1 while the agent, cut off from the scheduler, runs its safe local power policy.",
            registry=r,
        )
        self.jobs_running = Gauge(
            "hashserve_agent_jobs_running", "Jobs running on this agent now.", registry=r
        )
        self.jobs_completed = Counter(
            "hashserve_agent_jobs_completed_total",
            "Jobs this agent ended, by model and outcome.",
            ["model", "outcome"],
            registry=r,
        )
        self.inference = Histogram(
            "hashserve_agent_inference_seconds",
            "Time the backend took for one job.",
            ["model"],
            buckets=INFERENCE_BUCKETS_S,
            registry=r,
        )
        self.tokens = Counter(
            "hashserve_agent_tokens_total",
            "Tokens processed, by model and kind (prompt, completion; prompt_cached: of the "
            "prompt tokens, those the engine started from a kept prompt and did not evaluate).",
            ["model", "kind"],
            registry=r,
        )
        self.power_draw = Gauge(
            "hashserve_agent_power_draw_watts", "Power the node draws now.", registry=r
        )
        self.gpu_utilization = Gauge(
            "hashserve_agent_gpu_utilization_ratio", "GPU utilisation now, 0..1.", registry=r
        )
        self.power_mode = Gauge(
            "hashserve_agent_power_mode_watts",
            "The site power plan last received from the scheduler, by use.",
            ["use"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "hashserve_agent_model_loaded",
            "1 while the model is loaded and ready on this agent, 0 while it is not.",
            ["model"],
            registry=r,
        )
        self.model_load = Histogram(
            "hashserve_agent_model_load_seconds",
            "Time a model took to load on this agent (its cold start).",
            ["model"],
            buckets=MODEL_LOAD_BUCKETS_S,
            registry=r,
        )
        self.model_loads = Counter(
            "hashserve_agent_model_loads_total",
            "Model loads this agent tried, by model and outcome (loaded, refused, failed).",
            ["model", "outcome"],
            registry=r,
        )
        for model in sorted(self._models):
            self.model_loaded.labels(model).set(0)
            self.model_load.labels(model)
            for load_outcome in MODEL_LOAD_OUTCOMES:
                self.model_loads.labels(model, load_outcome)
            for outcome in AGENT_JOB_OUTCOMES:
                self.jobs_completed.labels(model, outcome)
            self.inference.labels(model)
            for kind in _TOKEN_KINDS:
                self.tokens.labels(model, kind)

    def _model(self, model: str) -> str:
        return model if model in self._models else _OTHER_MODEL

    def set_connected(self, connected: bool) -> None:
        self.connected.set(1 if connected else 0)

    def reconnected(self) -> None:
        self.reconnects.inc()

    def set_fallback(self, active: bool) -> None:
        self.fallback.set(1 if active else 0)

    def job_started(self) -> None:
        self.jobs_running.inc()

    def job_ended(
        self,
        model: str,
        outcome: str | Enum,
        *,
        inference_s: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached_prompt_tokens: int = 0,
    ) -> None:
        """A job started with `job_started` ended; `inference_s` is None if it never ran."""
        text = outcome.value if isinstance(outcome, Enum) else outcome
        if text not in AGENT_JOB_OUTCOMES:
            raise ValueError(f"outcome {text!r} is not one of {', '.join(AGENT_JOB_OUTCOMES)}")
        label = self._model(model)
        self.jobs_running.dec()
        self.jobs_completed.labels(label, text).inc()
        if inference_s is not None:
            self.inference.labels(label).observe(inference_s)
        if prompt_tokens:
            self.tokens.labels(label, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(label, "completion").inc(completion_tokens)
        if cached_prompt_tokens:
            self.tokens.labels(label, "prompt_cached").inc(cached_prompt_tokens)

    def set_jobs_running(self, n: int) -> None:
        """Reset the running count (after a reconnect, from the runtime's own table)."""
        self.jobs_running.set(n)

    def set_power(self, power_draw_kw: float, gpu_utilization: float) -> None:
        self.power_draw.set(power_draw_kw * _WATTS_PER_KW)
        self.gpu_utilization.set(gpu_utilization)

    def set_power_mode(self, mining_mw: float, ai_mw: float, curtailed_mw: float) -> None:
        values_mw = {"mining": mining_mw, "ai": ai_mw, "curtailed": curtailed_mw}
        for use in _POWER_USES:
            self.power_mode.labels(use).set(values_mw[use] * _WATTS_PER_MW)

    def set_model_loaded(self, model: str, loaded: bool) -> None:
        self.model_loaded.labels(self._model(model)).set(1 if loaded else 0)

    def model_load_ended(self, model: str, outcome: str, *, load_s: float | None = None) -> None:
        """A load of `model` ended; `load_s` is how long it took (None: it never ran)."""
        if outcome not in MODEL_LOAD_OUTCOMES:
            raise ValueError(
                f"load outcome {outcome!r} is not one of {', '.join(MODEL_LOAD_OUTCOMES)}"
            )
        label = self._model(model)
        self.model_loads.labels(label, outcome).inc()
        if load_s is not None:
            self.model_load.labels(label).observe(load_s)
