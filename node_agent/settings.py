"""Node agent configuration: flags, HASHSERVE_AGENT_* env vars, or an env file (systemd)."""

from __future__ import annotations

import os
import socket

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hashserve.logs import LogFormat


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HASHSERVE_AGENT_", extra="ignore")

    scheduler: str = "127.0.0.1:50051"
    agent_id: str = Field(default_factory=lambda: socket.gethostname().split(".")[0])
    site: str = "local"
    region: str = "north_america"
    gpu_kind: str = "cpu"
    gpu_count: int = Field(1, ge=0)
    gpu_memory_mb: int = Field(16_384, ge=0)
    max_concurrent_jobs: int = Field(2, ge=1, le=1024)
    idle_power_kw: float = Field(0.3, ge=0)
    busy_power_kw: float = Field(0.7, ge=0)
    # A fixed token (`hashserve admin agent-token`, or the local cluster's): or enroll instead,
    # with a bootstrap token, into `state_dir` (systemd's StateDirectory by default).
    token: str | None = None
    token_file: str | None = None
    bootstrap_token: str | None = None
    bootstrap_token_file: str | None = None
    state_dir: str | None = Field(default_factory=lambda: os.environ.get("STATE_DIRECTORY"))
    # Where to enroll when the agents' own port needs the certificate first: the customers'
    # port. Default: the first scheduler address.
    enroll_address: str | None = None
    backends: list[str] = Field(default_factory=list, description="empty: the embedded models")
    # Models of `backends` to load at start. None: all of them; []: none, each then loads on the
    # scheduler's command or when its first job comes (scale to zero and back).
    preload: list[str] | None = None
    # Memory the loaded models may take together (estimated from their files); 0: only what the
    # host has free limits loads.
    model_memory_mib: float = Field(0.0, ge=0)
    threads_per_job: int = Field(1, ge=1)
    # KV states of prompts a llama.cpp engine keeps beside its context (prefix caching).
    prefix_cache_mib: float = Field(64.0, ge=0, le=65_536)
    heartbeat_s: float = Field(1.0, gt=0)
    backoff_initial_s: float = Field(0.2, gt=0)
    backoff_max_s: float = Field(5.0, gt=0)
    metrics_port: int = Field(-1, ge=-1, le=65535, description="-1: no metrics endpoint")
    metrics_host: str = "127.0.0.1"
    # The site's ASIC fleet, when this agent drives it (one agent per site does); 0: none. The
    # embedded adapter is a simulation; a real site plugs its controller in behind PowerAdapter.
    asic_hashrate_phs: float = Field(0.0, ge=0)
    asic_efficiency_j_per_th: float = Field(17.5, gt=0)
    asic_block_mw: float = Field(1.25, gt=0)
    asic_ramp_s: float = Field(300.0, ge=0)
    # Cut off from the scheduler, hold the last power mode this long, then stop mining (without
    # prices the agent cannot know that mining still pays); running AI work always finishes.
    fallback_hold_s: float = Field(900.0, ge=0)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    log_format: LogFormat = LogFormat.TEXT

    @field_validator("preload", mode="before")
    @classmethod
    def _split_preload(cls, value: object) -> object:
        """Names may come comma-separated, as one flag or env var holds them; empty ones go, so
        `--preload ''` asks for none."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            return [n.strip() for item in value for n in str(item).split(",") if n.strip()]
        return value

    def resolved_token(self) -> str | None:
        """The fixed token, if one is given (else the agent enrolls)."""
        if self.token:
            return self.token
        if self.token_file:
            with open(self.token_file, encoding="utf-8") as f:
                return f.read().strip()
        if not self.state_dir:
            raise ValueError(
                "no agent credential: give --state-dir and --bootstrap-token(-file) to enroll "
                "(`hashserve admin bootstrap-token --site S`), or a fixed --token(-file)")
        return None

    def resolved_bootstrap_token(self) -> str | None:
        if self.bootstrap_token:
            return self.bootstrap_token
        if self.bootstrap_token_file:
            with open(self.bootstrap_token_file, encoding="utf-8") as f:
                return f.read().strip()
        return None
