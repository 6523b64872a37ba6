"""A real multi-node Ray cluster on one machine, with PostgreSQL, two schedulers and agents.

What it starts, each as users start it:
- a Ray head (`ray start --head`) and one Ray worker node per scheduler (`ray start --address`,
  on loopback), each worker with a resource (`sched_<name>`) that pins one scheduler actor to
  it, so killing a worker node (its raylet and its workers: `kill_node`) kills that scheduler;
- the schedulers (`hashserve scheduler --name N --ray-address ...`, one driver each), sharing a
  PostgreSQL journal: one leads, the other stands by;
- node agents (`hashserve agent --scheduler A,B`), which know both addresses.

Used by `tests/chaos/test_failover.py` and `bench/failover.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from hashserve.admin_client import AdminClient
from hashserve.client import Client
from hashserve.v1 import customer_pb2, jobs_pb2
from tests.chaos.harness import RETRYABLE

EMBED = "all-minilm-l6-v2"
ADMIN_KEY = "hsk_failoveradmin_" + "a" * 40
AGENT_TOKEN = "failover-agent-token-" + "b" * 24
LEASE_S = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HASHSERVE_", "RAY_"))}
    # Loopback only, and a test: no token to hand around, no usage reports.
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of this one's session (it was started in a new one): a Ray
        node's raylet and the workers it started, and nothing of any other Ray."""
        for pid in session_pids(self.popen.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def session_pids(sid: int) -> list[int]:
    """The processes whose session id is `sid` (Linux /proc), the leader first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid:
            found.append(int(entry.name))
    return sorted(found, key=lambda p: p != sid)


@dataclass
class SchedulerPlan:
    name: str
    port: int = field(default_factory=free_port)


@dataclass
class MultiNodeCluster:
    workdir: Path
    journal_url: str
    schedulers: list[SchedulerPlan] = field(
        default_factory=lambda: [SchedulerPlan("a"), SchedulerPlan("b")])
    agents: tuple[tuple[str, str, str], ...] = (("na-1", "tx-odessa", "north_america"),)
    lease_s: float = LEASE_S
    ray_port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)
    api_key: str = ""

    def __post_init__(self) -> None:
        # Ray's socket paths must stay short: its temp dir sits in the system's temp dir.
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="hsray-"))

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.schedulers)

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     env=env or _env(), cwd=self.workdir,
                                     start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def _ray(self) -> str:
        return str(Path(sys.executable).with_name("ray"))

    def start(self) -> MultiNodeCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        common = ["--block", "--disable-usage-stats", f"--temp-dir={self.ray_tmp}"]
        self._spawn("ray-head", [self._ray(), "start", "--head", f"--port={self.ray_port}",
                                 "--num-cpus=1", "--include-dashboard=false",
                                 '--resources={"head": 1}', *common])
        self._wait_port(self.ray_port, 60, "the Ray head")
        for plan in self.schedulers:
            # One at a time: two raylets starting at once on one machine can pick the same
            # socket name in the session's folder.
            self.start_node(plan)
        for plan in self.schedulers:
            self.start_scheduler(plan)
        self.wait_leader(120)
        for plan in self.schedulers:
            self.wait_scheduler_up(plan, 120)
        self.api_key = self._customer_key()
        for agent_id, site, region in self.agents:
            self.start_agent(agent_id, site, region)
        self.wait_agents(len(self.agents), 180)
        return self

    def start_node(self, plan: SchedulerPlan, timeout_s: float = 60.0) -> Proc:
        """A Ray worker node offering `sched_<name>`; returns once it has joined."""
        log_from = _size(self.workdir / f"ray-node-{plan.name}.log")
        proc = self._spawn(f"ray-node-{plan.name}", [
            self._ray(), "start", f"--address=127.0.0.1:{self.ray_port}", "--num-cpus=1",
            f'--resources={{"sched_{plan.name}": 1}}', "--block", "--disable-usage-stats",
        ])
        self._wait_log(proc.log, "Ray runtime started", timeout_s, f"Ray node {plan.name}",
                       after=log_from, proc=proc)
        return proc

    def _wait_log(self, log: Path, text: str, timeout_s: float, what: str, after: int = 0,
                  proc: Proc | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if log.exists() and text in log.read_text(errors="replace")[after:]:
                return
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{what} exited:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{what}: no {text!r} in {log} within {timeout_s} s")

    def wait_scheduler_up(self, plan: SchedulerPlan, timeout_s: float, after: int = 0) -> None:
        """Until the scheduler's actor runs, as leader or standby (its log says which), in
        what its log gained after byte `after` (a restarted actor appends to the same log)."""
        log = self.actor_log(plan)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")[after:] if log.exists() else ""
            if "leading as" in text or "standby:" in text:
                return
            time.sleep(0.2)
        raise TimeoutError(f"scheduler {plan.name} did not start within {timeout_s} s")

    def actor_log(self, plan: SchedulerPlan) -> Path:
        return self.workdir / f"scheduler-{plan.name}-actor.log"

    def restart_node(self, name: str, timeout_s: float = 120.0) -> None:
        """Bring a killed worker node back and wait until Ray has restarted its scheduler
        there, standing by."""
        plan = next(s for s in self.schedulers if s.name == name)
        offset = _size(self.actor_log(plan))
        self.start_node(plan)
        self.wait_scheduler_up(plan, timeout_s, after=offset)

    def start_scheduler(self, plan: SchedulerPlan) -> Proc:
        env = _env()
        env.update(
            HASHSERVE_ADMIN_KEY=ADMIN_KEY, HASHSERVE_AGENT_TOKEN=AGENT_TOKEN,
            HASHSERVE_RAY_ACTOR_RESOURCES=json.dumps({f"sched_{plan.name}": 0.01}),
            HASHSERVE_LEADER_LEASE_S=str(self.lease_s),
            HASHSERVE_LOG_FILE=str(self.workdir / f"scheduler-{plan.name}-actor.log"),
        )
        return self._spawn(f"scheduler-{plan.name}", [
            sys.executable, "-m", "hashserve", "scheduler", "--name", plan.name,
            "--ray-address", f"127.0.0.1:{self.ray_port}", "--port", str(plan.port),
            "--metrics-port", "-1", "--journal", self.journal_url,
        ], env)

    def start_agent(self, agent_id: str, site: str, region: str) -> Proc:
        return self._spawn(f"agent-{agent_id}", [
            sys.executable, "-m", "hashserve", "agent", "--scheduler", self.addresses,
            "--site", site, "--region", region, "--agent-id", agent_id,
            "--token", AGENT_TOKEN, "--max-concurrent-jobs", "2",
        ])

    @staticmethod
    def _wait_port(port: int, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{what} did not listen on port {port} within {timeout_s} s")

    # ----- who leads ---------------------------------------------------------------------------

    def lease(self) -> tuple[str, int, int]:
        """(instance name, epoch, actor pid) of the lease's holder, from the journal."""
        import psycopg

        with psycopg.connect(self.journal_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT holder, epoch FROM leases WHERE name='scheduler'").fetchone()
        if row is None:
            return "", 0, 0
        instance, _, pid = str(row[0]).split("/")
        return instance, int(row[1]), int(pid)

    def wait_leader(self, timeout_s: float, other_than: int = 0) -> tuple[str, int, int]:
        """The leader once it serves (its port answers), with an epoch above `other_than`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                name, epoch, pid = self.lease()
                if name and epoch > other_than:
                    port = next(s.port for s in self.schedulers if s.name == name)
                    with socket.socket() as s:
                        if s.connect_ex(("127.0.0.1", port)) == 0:
                            return name, epoch, pid
            time.sleep(0.1)
        raise TimeoutError(f"no scheduler led within {timeout_s} s; logs in {self.workdir}")

    def _customer_key(self) -> str:
        async def go() -> str:
            async with AdminClient(self.addresses, ADMIN_KEY) as admin:
                await admin.create_tenant("acme")
                return (await admin.create_key("acme")).api_key

        return asyncio.run(go())

    def wait_agents(self, n: int, timeout_s: float) -> None:
        async def go() -> None:
            deadline = time.monotonic() + timeout_s
            async with Client(self.addresses, self.api_key) as c:
                while time.monotonic() < deadline:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        models = await c.models()
                        if all(m.nodes_serving >= n for m in models.models):
                            return
                    await asyncio.sleep(0.3)
            raise TimeoutError(f"{n} agents did not connect within {timeout_s} s")

        asyncio.run(go())

    def kill_node(self, name: str) -> None:
        """SIGKILL a worker node: its raylet, and with it the scheduler actor it hosts."""
        proc = self.procs[f"ray-node-{name}"]
        proc.kill_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(10)
        # Ray's workers on that node may outlive the raylet by a moment: the actor's process
        # is the one that matters; kill it outright if it is still there.
        holder, _, pid = self.lease()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pid and holder == name:
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        for name in [n for n in self.procs if n.startswith("agent-")]:
            self.procs[name].kill_group(signal.SIGTERM)
        for name in [n for n in self.procs if n.startswith("scheduler-")]:
            self.procs[name].kill_group(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            if proc.name.startswith(("agent-", "scheduler-")):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(max(deadline - time.monotonic(), 0.1))
        # Not `ray stop`: that stops every Ray on the machine, not only this cluster's.
        for proc in self.procs.values():
            proc.kill_group(signal.SIGKILL)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def tail(self, lines: int = 40) -> str:
        out = []
        for log in sorted(self.workdir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)


@contextlib.contextmanager
def multinode_cluster(workdir: Path, journal_url: str, **kw: object) -> Iterator[MultiNodeCluster]:
    cluster = MultiNodeCluster(workdir, journal_url, **kw)  # type: ignore[arg-type]
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def embed_request(i: int, key_prefix: str) -> customer_pb2.SubmitJobRequest:
    return customer_pb2.SubmitJobRequest(
        spec=jobs_pb2.JobSpec(model=EMBED, tier=jobs_pb2.TIER_INTERACTIVE,
                              embed=jobs_pb2.EmbedInput(texts=[f"failover text {i}"])),
        idempotency_key=f"{key_prefix}-{i}",
    )


async def submit_until_acked(c: Client, req: customer_pb2.SubmitJobRequest,
                             timeout_s: float = 120.0) -> str:
    """Submit with the request's idempotency key until a scheduler acknowledges it, as a
    customer retries (`harness.RETRYABLE`: the leader gone, a standby not yet serving, a call
    cut off as its server stepped down, busy); the job id it was given is returned."""
    deadline = time.monotonic() + timeout_s
    delay_s = 0.05
    while True:
        try:
            reply = await c.stub.SubmitJob(req, metadata=c.metadata, timeout=5.0)
            return str(reply.job.id)
        except grpc.aio.AioRpcError as err:
            if err.code() not in RETRYABLE:
                raise
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, 0.5)
