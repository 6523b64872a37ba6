"""A whole hashserve on one machine: Ray, the scheduler actor and agent processes.

Used by `hashserve demo`, `hashserve up`, the integration tests and the benchmarks, so all of them
exercise the same real processes. Agents are separate OS processes (sites are not Ray nodes); each
is told to die with its parent, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.api.auth import Authenticator, new_agent_token, new_api_key
from scheduler.journal.sqlite import SqliteJournal
from scheduler.settings import SchedulerSettings

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PARENT_PID_ENV = "HASHSERVE_PARENT_PID"


def die_with_parent_from_env() -> None:
    """In a child started by `spawn_agent`: ask the kernel for SIGTERM when the parent dies.

    Done by the child itself after exec, not by a `preexec_fn` between fork and exec: running
    Python in a forked copy of a process with gRPC and Ray threads can abort the child.
    """
    parent = os.environ.pop(PARENT_PID_ENV, "")
    if not parent:
        return
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the parent died before the request took effect
        raise SystemExit(0)


@dataclass(frozen=True)
class AgentPlan:
    agent_id: str
    site: str
    region: str
    gpu_kind: str = "cpu"
    max_concurrent_jobs: int = 2
    backends: tuple[str, ...] = ()
    idle_power_kw: float = 0.3
    busy_power_kw: float = 0.7
    # The site's (simulated) ASIC fleet, when this agent drives it: PH/s, J/TH, block MW, ramp s.
    asic: tuple[float, float, float, float] | None = None
    metrics_port: int = -1  # Prometheus endpoint of the agent; -1: none


@dataclass
class Credentials:
    api_key: str
    admin_key: str
    agent_token: str
    tenant: str


def bootstrap_credentials(journal_path: Path, tenant: str = "demo") -> Credentials:
    """Create a tenant, a customer key, an admin key and an agent token in a fresh journal."""
    journal = SqliteJournal(journal_path)
    try:
        auth = Authenticator(journal)
        auth.create_tenant(tenant)
        auth.create_tenant("admin")
        _, api_key = auth.issue_api_key(tenant)
        _, admin_key = auth.issue_api_key("admin", admin=True)
        agent_token = auth.issue_agent_token("*")
    finally:
        journal.close()
    return Credentials(api_key, admin_key, agent_token, tenant)


def spawn_agent(
    plan: AgentPlan,
    scheduler_address: str,
    token: str,
    log_path: Path,
    metrics_port: int = -1,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "hashserve", "agent",
        "--scheduler", scheduler_address,
        "--agent-id", plan.agent_id,
        "--site", plan.site,
        "--region", plan.region,
        "--gpu-kind", plan.gpu_kind,
        "--max-concurrent-jobs", str(plan.max_concurrent_jobs),
        "--idle-power-kw", str(plan.idle_power_kw),
        "--busy-power-kw", str(plan.busy_power_kw),
        "--metrics-port", str(metrics_port),
    ]
    for spec in plan.backends:
        args += ["--backend", spec]
    if plan.asic is not None:
        phs, j_per_th, block_mw, ramp_s = plan.asic
        args += [
            "--asic-hashrate-phs", str(phs), "--asic-efficiency-j-per-th", str(j_per_th),
            "--asic-block-mw", str(block_mw), "--asic-ramp-s", str(ramp_s),
        ]
    env = dict(os.environ)
    env["HASHSERVE_AGENT_TOKEN"] = token
    env[PARENT_PID_ENV] = str(os.getpid())
    # One inference thread per job: the agents share this machine's few cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra_env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed on exit
    return subprocess.Popen(
        args, stdout=log_file, stderr=subprocess.STDOUT, env=env,
        close_fds=True,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode or 0)


@dataclass
class LocalCluster:
    workdir: Path
    agents: list[AgentPlan]
    settings_overrides: dict[str, object] = field(default_factory=dict)
    port: int = 0
    credentials: Credentials | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    supervisor: object | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def journal_path(self) -> Path:
        return self.workdir / "journal.db"

    def settings(self) -> SchedulerSettings:
        assert self.credentials is not None
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "journal_url": f"sqlite:///{self.journal_path}",
            "metrics_port": -1,
            "agent_token": self.credentials.agent_token,
        }
        values.update(self.settings_overrides)
        return SchedulerSettings(**values)  # type: ignore[arg-type]

    def start_scheduler(self) -> dict[str, object]:
        from scheduler.runtime.ray_host import SupervisedScheduler

        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.credentials is None:
            self.credentials = bootstrap_credentials(self.journal_path)
        if not self.port:
            self.port = free_port()
        supervisor = SupervisedScheduler(self.settings())
        info = supervisor.start()
        self.supervisor = supervisor
        return info

    def start_agents(self) -> None:
        assert self.credentials is not None
        for plan in self.agents:
            self.start_agent(plan)

    def start_agent(self, plan: AgentPlan) -> subprocess.Popen[bytes]:
        assert self.credentials is not None
        proc = spawn_agent(
            plan, self.address, self.credentials.agent_token,
            self.workdir / "logs" / f"{plan.agent_id}.log",
            metrics_port=plan.metrics_port,
        )
        self.procs[plan.agent_id] = proc
        return proc

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.wait(max(deadline - time.monotonic(), 0.1))
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        if self.supervisor is not None:
            self.supervisor.stop()  # type: ignore[attr-defined]
            self.supervisor = None


def write_credentials_file(path: Path, address: str, creds: Credentials) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# written by `hashserve up`; the CLI reads it when no key is given\n"
        f"HASHSERVE_SCHEDULER={address}\n"
        f"HASHSERVE_API_KEY={creds.api_key}\n"
        f"HASHSERVE_ADMIN_KEY={creds.admin_key}\n"
        f"HASHSERVE_AGENT_TOKEN={creds.agent_token}\n"
    )
    path.chmod(0o600)


__all__ = [
    "AgentPlan",
    "Credentials",
    "LocalCluster",
    "bootstrap_credentials",
    "free_port",
    "new_agent_token",
    "new_api_key",
    "spawn_agent",
    "stop_process",
    "write_credentials_file",
]
