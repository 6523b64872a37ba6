"""A whole hashserve on one machine: Ray, the scheduler actor and agent processes.

Used by `hashserve demo`, `hashserve up`, the integration tests and the benchmarks, so all of them
exercise the same real processes. Agents are separate OS processes (sites are not Ray nodes); each
is told to die with its parent, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hashserve.logs import LogFormat, parse_log_format
from scheduler.api.agent_identity import ensure_any_agent_token
from scheduler.api.auth import Authenticator, new_agent_token, new_api_key
from scheduler.front.native import NativeFront, NativeFrontOptions, require_binary
from scheduler.journal.sqlite import SqliteJournal
from scheduler.runtime.processes import end_process
from scheduler.settings import SchedulerSettings

log = logging.getLogger("hashserve.local")


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for ports bound to 0 (Linux; elsewhere the IANA range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def free_port() -> int:
    """A free port below the kernel's ephemeral range (and above Ray's worker ports, 10002 to
    19999 by default). A port from the ephemeral range is handed to whoever binds port 0 next:
    a scheduler restarting on its old port could find it taken by any process that had just
    asked for a port, its own Ray worker's gRPC server among them."""
    low_ephemeral, _ = _ephemeral_ports()
    candidates = range(20_000, low_ephemeral) if low_ephemeral > 21_000 else range(0)
    for _ in range(64):
        if not candidates:
            break
        port = random.choice(candidates)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LIFELINE_FD_ENV = "HASHSERVE_LIFELINE_FD"
# Write ends of the lifelines, by child pid: closed when the parent process ends, however it ends.
_lifelines: dict[int, int] = {}
_lifelines_lock = threading.Lock()


def watch_lifeline_from_env() -> None:
    """In a child started by `spawn_agent`: stop (SIGTERM to itself) when the parent is gone.

    The parent holds the write end of a pipe whose read end the child inherited; the kernel closes
    it when the parent process dies, however it dies, and the read here sees the end of file. Not
    the kernel's parent-death signal: that fires when the *thread* that spawned the child exits,
    and agents restarted by the supervisor's thread would die with it.
    """
    text = os.environ.pop(LIFELINE_FD_ENV, "")
    if not text:
        return
    fd = int(text)

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        log.warning("the process that started this agent is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _close_lifeline(pid: int) -> None:
    with _lifelines_lock:
        fd = _lifelines.pop(pid, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


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
    # Models it loads at start; None: all its backends; (): none (loaded on command or demand).
    preload: tuple[str, ...] | None = None


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
        # The local cluster's agents share one '*' token: it listens on loopback only.
        agent_token = new_agent_token()
        ensure_any_agent_token(journal, agent_token, time.time())
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
    log_format: LogFormat | str | None = None,
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
    if plan.preload is not None:
        args += ["--preload", ",".join(plan.preload)]
    if plan.asic is not None:
        phs, j_per_th, block_mw, ramp_s = plan.asic
        args += [
            "--asic-hashrate-phs", str(phs), "--asic-efficiency-j-per-th", str(j_per_th),
            "--asic-block-mw", str(block_mw), "--asic-ramp-s", str(ramp_s),
        ]
    if log_format is not None:
        args += ["--log-format", parse_log_format(log_format).value]
    env = dict(os.environ)
    env["HASHSERVE_AGENT_TOKEN"] = token
    lifeline_read, lifeline_write = os.pipe()
    env[LIFELINE_FD_ENV] = str(lifeline_read)
    # One inference thread per job: the agents share this machine's few cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra_env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:  # the child has its own copy
        try:
            proc = subprocess.Popen(
                args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, close_fds=True, pass_fds=(lifeline_read,),
            )
        except BaseException:
            os.close(lifeline_write)
            raise
        finally:
            os.close(lifeline_read)
    with _lifelines_lock:
        _lifelines[proc.pid] = lifeline_write
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    code = end_process(proc, timeout_s)
    _close_lifeline(proc.pid)
    return code


_SIGNAL_MEANINGS = {
    signal.SIGILL: "illegal instruction",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "arithmetic error",
    signal.SIGABRT: "aborted",
}


def describe_exit(returncode: int) -> str:
    """`killed by SIGILL (illegal instruction)`, `exited with status 2`, ..."""
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
        except ValueError:
            return f"killed by signal {-returncode}"
        meaning = _SIGNAL_MEANINGS.get(sig)
        return f"killed by {sig.name}" + (f" ({meaning})" if meaning else "")
    return f"exited with status {returncode}"


def log_tail(path: Path, n_lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 16_384, 0))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n_lines:])


@dataclass(frozen=True)
class AgentExit:
    """An agent process that ended while its cluster was not stopping it."""

    agent_id: str
    pid: int
    returncode: int
    at: float  # time.time()
    log_path: Path
    log_tail: str
    restarting: bool  # False: the supervisor gave up on it (or restarts are off)

    @property
    def how(self) -> str:
        return describe_exit(self.returncode)

    def describe(self) -> str:
        then = "restarting it" if self.restarting else "not restarting it"
        return f"agent {self.agent_id} (pid {self.pid}) {self.how}; {then}; log: {self.log_path}"


@dataclass
class RestartPolicy:
    """As systemd's Restart=always with a start limit: back off, and stop trying a crash loop."""

    enabled: bool = True
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    burst: int = 5  # at most this many restarts ...
    window_s: float = 120.0  # ... within this long, then the agent is given up on


@dataclass
class LocalCluster:
    workdir: Path
    agents: list[AgentPlan]
    settings_overrides: dict[str, object] = field(default_factory=dict)
    # The customers' port: the native front's when `native_front`, else the scheduler's own.
    port: int = 0
    # Customers reach the scheduler through a native front (scheduler/front/native/), which
    # batches their submits; agents and the scheduler's own port stay as they are.
    native_front: bool = False
    scheduler_port: int = 0
    front: NativeFront | None = None
    front_exits: list[int] = field(default_factory=list)  # exit statuses of fronts that died
    front_metrics_port: int = 0  # the native front's /metrics (0: a free one, kept on restarts)
    credentials: Credentials | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    supervisor: object | None = None  # the scheduler's (ray_host.SupervisedScheduler)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    log_format: LogFormat = LogFormat.TEXT
    # Called from the agent supervisor's thread for every unplanned exit.
    on_agent_exit: Callable[[AgentExit], None] | None = None
    exits: list[AgentExit] = field(default_factory=list)
    given_up: set[str] = field(default_factory=set)
    _plans: dict[str, AgentPlan] = field(default_factory=dict)
    _restarts: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None
    _planned: set[int] = field(default_factory=set)  # pids stopped on purpose

    @property
    def address(self) -> str:
        """Where customers and operators call."""
        return f"127.0.0.1:{self.port}"

    @property
    def scheduler_address(self) -> str:
        """The scheduler's own port, where agents connect."""
        return f"127.0.0.1:{self.scheduler_port if self.native_front else self.port}"

    @property
    def journal_path(self) -> Path:
        return self.workdir / "journal.db"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    def agent_log(self, agent_id: str) -> Path:
        return self.logs_dir / f"{agent_id}.log"

    def settings(self) -> SchedulerSettings:
        assert self.credentials is not None
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.scheduler_port if self.native_front else self.port,
            "journal_url": f"sqlite:///{self.journal_path}",
            "metrics_port": -1,
            "agent_token": self.credentials.agent_token,
            "log_format": self.log_format,
            # Beside the agents' logs, so that a failed run keeps all of them in one folder.
            "log_file": str(self.logs_dir / "scheduler.log"),
        }
        values.update(self.settings_overrides)
        return SchedulerSettings(**values)  # type: ignore[arg-type]

    def start_scheduler(self) -> dict[str, object]:
        from scheduler.runtime.ray_host import SupervisedScheduler

        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.credentials is None:
            self.credentials = bootstrap_credentials(self.journal_path)
        if self.native_front:
            require_binary()  # before anything starts: say so at once where it is not built
            self.scheduler_port = self.scheduler_port or free_port()
        elif not self.port:
            self.port = free_port()
        supervisor = SupervisedScheduler(self.settings())
        info = supervisor.start()
        self.supervisor = supervisor
        if self.native_front:
            self._start_front()
            threading.Thread(target=self._watch_front, name="front-supervisor",
                             daemon=True).start()
        return info

    @property
    def front_log(self) -> Path:
        return self.logs_dir / "front.log"

    def _start_front(self) -> None:
        self.front = NativeFront.start(
            NativeFrontOptions(listen=f"127.0.0.1:{self.port}",
                               scheduler_target=self.scheduler_address,
                               metrics_listen=f"127.0.0.1:{self.front_metrics_port}"),
            log_path=self.front_log)
        self.port = self.front.port
        self.front_metrics_port = self.front.metrics_port

    def _watch_front(self, poll_s: float = 0.2) -> None:
        """Start the front again if it dies (on its port: customers reconnect to it)."""
        delay_s = self.restart.first_delay_s
        while not self._stopping.wait(poll_s):
            front = self.front
            if front is None or front.poll() is None:
                continue
            code = int(front.proc.returncode or 0)
            self.front_exits.append(code)
            log.error("the native front (pid %d) %s; starting it again in %.1f s; log: %s",
                      front.pid, describe_exit(code), delay_s, self.front_log)
            if self._stopping.wait(delay_s):
                return
            try:
                self._start_front()
            except Exception:
                log.exception("could not start the native front again")
                delay_s = min(delay_s * 2, self.restart.max_delay_s)
                continue
            if self.front is not None:
                log.warning("the native front started again (pid %d)", self.front.pid)
            delay_s = self.restart.first_delay_s

    def start_agents(self) -> None:
        assert self.credentials is not None
        for plan in self.agents:
            self.start_agent(plan)

    def start_agent(self, plan: AgentPlan) -> subprocess.Popen[bytes]:
        assert self.credentials is not None
        with self._lock:
            old = self.procs.get(plan.agent_id)
            if old is not None and old.poll() is None:
                raise RuntimeError(f"agent {plan.agent_id} is running already (pid {old.pid})")
            proc = spawn_agent(
                plan, self.scheduler_address, self.credentials.agent_token,
                self.agent_log(plan.agent_id),
                metrics_port=plan.metrics_port, log_format=self.log_format,
            )
            self._plans[plan.agent_id] = plan
            self.procs[plan.agent_id] = proc
            self.given_up.discard(plan.agent_id)
        self._ensure_watcher()
        return proc

    # ----- the agent supervisor -------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        with self._lock:
            if self._watcher is None or not self._watcher.is_alive():
                self._stopping.clear()
                self._watcher = threading.Thread(
                    target=self._watch_agents, name="agent-supervisor", daemon=True
                )
                self._watcher.start()

    def _watch_agents(self, poll_s: float = 0.2) -> None:
        pending: dict[str, float] = {}  # agent id -> when to start it again
        while not self._stopping.wait(poll_s):
            now = time.monotonic()
            with self._lock:
                for agent_id, proc in list(self.procs.items()):
                    if proc.poll() is None or agent_id in pending or agent_id in self.given_up:
                        continue
                    if proc.pid in self._planned:
                        continue
                    pending_at = self._on_exit(agent_id, proc, now)
                    if pending_at is not None:
                        pending[agent_id] = pending_at
                for agent_id, at in list(pending.items()):
                    if at > now or self._stopping.is_set():
                        continue
                    del pending[agent_id]
                    try:
                        proc = self.start_agent(self._plans[agent_id])
                    except Exception:
                        log.exception("could not restart agent %s", agent_id)
                        self.given_up.add(agent_id)
                        continue
                    log.warning("agent %s restarted (pid %d)", agent_id, proc.pid)

    def _on_exit(
        self, agent_id: str, proc: subprocess.Popen[bytes], now: float
    ) -> float | None:
        """Record an unplanned exit; when to restart the agent, or None."""
        _close_lifeline(proc.pid)
        policy = self.restart
        recent = [t for t in self._restarts.get(agent_id, []) if now - t < policy.window_s]
        restarting = policy.enabled and len(recent) < policy.burst
        log_path = self.agent_log(agent_id)
        event = AgentExit(
            agent_id, proc.pid, int(proc.returncode or 0), time.time(), log_path,
            log_tail(log_path), restarting,
        )
        self.exits.append(event)
        if restarting:
            log.error("%s", event.describe())
        else:
            why = "restarts are off" if not policy.enabled else (
                f"{len(recent)} restarts in {policy.window_s:.0f} s"
            )
            log.error("%s (%s)", event.describe(), why)
            self.given_up.add(agent_id)
        if self.on_agent_exit is not None:
            try:
                self.on_agent_exit(event)
            except Exception:
                log.exception("agent exit callback failed")
        if not restarting:
            return None
        recent.append(now)
        self._restarts[agent_id] = recent
        delay_s = min(policy.first_delay_s * 2 ** (len(recent) - 1), policy.max_delay_s)
        return now + delay_s

    def stop_agent(self, agent_id: str, timeout_s: float = 40.0) -> int:
        """Stop one agent on purpose (SIGTERM: it drains); the supervisor leaves it stopped."""
        with self._lock:
            proc = self.procs[agent_id]
            self._planned.add(proc.pid)
        return stop_process(proc, timeout_s)

    def wait_restarted(
        self, agent_id: str, old_pid: int, timeout_s: float = 60.0
    ) -> subprocess.Popen[bytes]:
        """The agent's new process, once the supervisor has started it after `old_pid` ended."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                proc = self.procs.get(agent_id)
                if proc is not None and proc.pid != old_pid:
                    return proc
                if agent_id in self.given_up:
                    raise RuntimeError(f"the supervisor gave up on agent {agent_id}")
            time.sleep(0.05)
        raise TimeoutError(f"agent {agent_id} was not restarted within {timeout_s} s")

    def unplanned_exits(self, except_pids: set[int] | None = None) -> list[AgentExit]:
        with self._lock:
            return [e for e in self.exits if e.pid not in (except_pids or set())]

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.front is not None:
            self.front.stop()
            self.front = None
        with self._lock:
            procs = list(self.procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.wait(max(deadline - time.monotonic(), 0.1))
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            _close_lifeline(proc.pid)
        if self.supervisor is not None:
            self.supervisor.stop()  # type: ignore[attr-defined]
            self.supervisor = None


def write_credentials_file(
    path: Path, address: str, creds: Credentials, openai_base_url: str | None = None
) -> None:
    """The local cluster's credentials; with the OpenAI-compatible API on, also what the
    `openai` SDK reads (`OPENAI_BASE_URL`, `OPENAI_API_KEY`: the customer key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# written by `hashserve up`; the CLI reads it when no key is given",
        f"HASHSERVE_SCHEDULER={address}",
        f"HASHSERVE_API_KEY={creds.api_key}",
        f"HASHSERVE_ADMIN_KEY={creds.admin_key}",
        f"HASHSERVE_AGENT_TOKEN={creds.agent_token}",
    ]
    if openai_base_url is not None:
        lines += [f"OPENAI_BASE_URL={openai_base_url}", f"OPENAI_API_KEY={creds.api_key}"]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


__all__ = [
    "AgentExit",
    "AgentPlan",
    "Credentials",
    "LocalCluster",
    "RestartPolicy",
    "bootstrap_credentials",
    "describe_exit",
    "free_port",
    "new_agent_token",
    "new_api_key",
    "spawn_agent",
    "stop_process",
    "watch_lifeline_from_env",
    "write_credentials_file",
]
