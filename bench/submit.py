"""Submit path: acknowledged submits per second through hashserve's gRPC front, journal on, next to
a bare gRPC server answering the same request with a canned response, on this machine, in one run.

    python bench/submit.py [--seconds 4] [--rounds 3] [--concurrency 64] [--channels 4]
                           [--batch 50] [--load-processes 2] [--fronts 2] [--smoke]

Servers (each fresh, in this process, on a free port):
  bare:       grpc.aio with CustomerService.SubmitJob/SubmitJobs returning a canned response of
              the same size as hashserve's (same server options; nothing else)
  hashserve:  scheduler.runtime.app.SchedulerApp with a temporary SQLite journal (no agents: the
              jobs just queue), once with synchronous=FULL (the default: every acknowledged job is
              on disk) and once with NORMAL (survives a killed process, not a power cut); the
              journal starts with `--prefill` finished jobs of the tenant, as one in use would
Load: `--load-processes` separate client processes (so client and server do not share one Python
interpreter, and one client's interpreter is not the limit) run `--concurrency` coroutines between
them over `--channels` real TCP connections, each sending the next request
as soon as its last is answered: a one-sentence interactive embedding with its own idempotency
key (what a careful client sends), or a SubmitJobs batch of `--batch` of them. Counted: answers
with status OK in the measured window, after a warm-up. Every configuration runs once per round,
`--rounds` times, and medians are reported (this machine is shared; rates drift between runs).
Server CPU time per job is reported too: unlike a rate, it hardly moves when other work competes
for the cores.
The service as users start it (`service_full`): `hashserve up`'s LocalCluster, the scheduler
actor on a local Ray with an agent connected, FULL journal, called at its customers' port: the
native front's where it is built (`scripts/build_front.sh`; `hashserve up` then starts it), else
the scheduler's own. Its processes' threads (the actor's and the front's) are pinned to half the
cores and the load to the other half, beside a bare server pinned the same way (`bare_pinned`),
and their CPU is counted together. The same service called at the scheduler's own port
(`service_direct`), and behind `--fronts` Python front processes sharing one port
(`service_fronts`, `hashserve front --engine python`), pinned with the scheduler.
Targets: `ratios.full_vs_bare` (service_full / bare_pinned) >= 0.8, which replaced the in-process
app's 70 % of the bare server (`inprocess_full_vs_bare` and `normal_vs_bare` are still reported:
they show the app's own cost, without Ray, agents or a front); a batch beats the bare single rate
per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# bench/http.py's name would hide the standard library's `http` from every import after this
# if this folder stayed first on the path (as it is for a script): it goes, the repository comes.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from bench.common import finish, parser, percentile, table
from hashserve.client import embed_spec
from hashserve.local import free_port
from hashserve.v1 import customer_pb2, customer_pb2_grpc
from scheduler.api.auth import Authenticator
from scheduler.api.convert import canonical_spec_blob, job_to_proto, spec_hash
from scheduler.api.validation import validate_spec
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.models import DEFAULT_CATALOGUE
from scheduler.journal.sqlite import SqliteJournal
from scheduler.settings import DEFAULT_REGIONS

SENTENCE = "Grid operators pay large consumers to cut load during price spikes."
MODEL = "all-minilm-l6-v2"
TIER = "interactive"
SERVER_OPTIONS = [  # as scheduler/api/server.py build_server, so both servers run alike
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


# ----- the load (runs in a child process) ------------------------------------------------------


@dataclass(frozen=True)
class Load:
    address: str
    api_key: str
    seconds: float
    warmup_s: float
    concurrency: int
    channels: int
    batch: int  # 0: SubmitJob; n: SubmitJobs of n jobs
    tag: str  # makes idempotency keys unique across runs
    client_cpus: tuple[int, ...] = ()  # pin the load's process to these cores (taskset)
    regions: tuple[str, ...] = ()  # where the jobs may run (none of the agents: they queue)


def _client_main(load: Load, out: Any) -> None:
    if load.client_cpus:
        os.sched_setaffinity(0, set(load.client_cpus))
    result = asyncio.run(_drive(load))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["client_cpu_s"] = usage.ru_utime + usage.ru_stime
    out.send(result)
    out.close()


async def _drive(load: Load) -> dict[str, Any]:
    channels = [
        grpc.aio.insecure_channel(load.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(load.channels)
    ]
    stubs = [customer_pb2_grpc.CustomerServiceStub(ch) for ch in channels]
    metadata = (("authorization", f"Bearer {load.api_key}"),)
    spec = embed_spec(MODEL, [SENTENCE], TIER, load.regions)
    t_start = time.perf_counter()
    t_measure = t_start + load.warmup_s
    t_end = t_measure + load.seconds
    latencies: list[float] = []
    counts = {"ok": 0, "jobs": 0, "errors": 0, "jobs_total": 0}
    errors: dict[str, int] = {}

    async def worker(w: int) -> None:
        stub = stubs[w % len(stubs)]
        n = 0
        while True:
            now = time.perf_counter()
            if now >= t_end:
                return
            n += 1
            key = f"{load.tag}-{w}-{n}"
            try:
                t0 = time.perf_counter()
                if load.batch:
                    reqs = [
                        customer_pb2.SubmitJobRequest(spec=spec, idempotency_key=f"{key}-{k}")
                        for k in range(load.batch)
                    ]
                    await stub.SubmitJobs(
                        customer_pb2.SubmitJobsRequest(jobs=reqs), metadata=metadata, timeout=30
                    )
                else:
                    await stub.SubmitJob(
                        customer_pb2.SubmitJobRequest(spec=spec, idempotency_key=key),
                        metadata=metadata, timeout=30,
                    )
                t1 = time.perf_counter()
                counts["jobs_total"] += load.batch or 1
            except grpc.aio.AioRpcError as err:
                if t0 >= t_measure:
                    counts["errors"] += 1
                    name = err.code().name
                    errors[name] = errors.get(name, 0) + 1
                continue
            if t0 >= t_measure and t1 <= t_end:
                counts["ok"] += 1
                counts["jobs"] += load.batch or 1
                latencies.append(t1 - t0)

    # Every connection is open before the clock starts.
    for ch in channels:
        await ch.channel_ready()
    await asyncio.gather(*(worker(w) for w in range(load.concurrency)))
    for ch in channels:
        await ch.close()
    return {**counts, "errors_by_code": errors, "seconds": load.seconds,
            "latencies_s": latencies}


def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process to `cpus` (what `taskset -a -p` does)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            os.sched_setaffinity(int(task.name), cpus)


def core_split() -> tuple[set[int], tuple[int, ...]]:
    """(the server's cores, the load's): half each, or the one core shared."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), tuple(cpus)
    half = len(cpus) // 2
    return set(cpus[:half]), tuple(cpus[half:])


async def run_load(load: Load, server_pids: Sequence[int] = (),
                   processes: int = 1) -> dict[str, Any]:
    """The load in `processes` child processes, each with its share of the coroutines and
    connections; this process's event loop keeps serving meanwhile. The server's CPU is this
    process's, or that of `server_pids` when the server is other processes."""
    ctx = mp.get_context("spawn")
    shares = [replace(load, concurrency=max(load.concurrency // processes, 1),
                      channels=max(load.channels // processes, 1), tag=f"{load.tag}.{i}")
              for i in range(processes)]
    pipes = [ctx.Pipe(duplex=False) for _ in shares]
    procs = [ctx.Process(target=_client_main, args=(share, child), daemon=True)
             for share, (_, child) in zip(shares, pipes, strict=True)]

    def server_cpu_s() -> float:
        if not server_pids:
            return time.process_time()
        return sum(process_cpu_s(pid) for pid in server_pids)

    cpu0 = server_cpu_s()
    leader0 = process_cpu_s(server_pids[0]) if server_pids else 0.0
    for proc in procs:
        proc.start()
    for _, child in pipes:
        child.close()
    loop = asyncio.get_running_loop()
    parts: list[dict[str, Any]] = list(await asyncio.gather(
        *(loop.run_in_executor(None, parent.recv) for parent, _ in pipes)))
    for proc in procs:
        await loop.run_in_executor(None, proc.join)
    cpu1 = server_cpu_s()
    leader1 = process_cpu_s(server_pids[0]) if server_pids else 0.0
    result: dict[str, Any] = {key: sum(part[key] for part in parts)
                              for key in ("ok", "jobs", "errors", "jobs_total", "client_cpu_s")}
    errors: dict[str, int] = {}
    for part in parts:
        for code, n in part["errors_by_code"].items():
            errors[code] = errors.get(code, 0) + n
    latencies = [x for part in parts for x in part["latencies_s"]]
    result.update({
        "errors_by_code": errors, "seconds": load.seconds, "load_processes": processes,
        "p50_ms": round(percentile(latencies, 0.5) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
        # Each load process's own rate: a load that holds up holds up in every one of them.
        "per_process_jobs_per_s": [round(part["jobs"] / load.seconds, 1) for part in parts],
    })
    result["server_cpu_s"] = round(cpu1 - cpu0, 3)
    result["per_s"] = round(result["ok"] / load.seconds, 1)
    result["jobs_per_s"] = round(result["jobs"] / load.seconds, 1)
    # CPU per job over the whole run (warm-up included, as the CPU clock is): robust to a noisy
    # machine in a way a rate is not, since waiting for a core costs no CPU time.
    result["server_cpu_us_per_job"] = round(
        result["server_cpu_s"] / max(result["jobs_total"], 1) * 1e6, 1
    )
    if server_pids:
        # The scheduler's own share (behind fronts, what the leader still spends per job).
        result["leader_cpu_us_per_job"] = round(
            (leader1 - leader0) / max(result["jobs_total"], 1) * 1e6, 1)
    return result


# ----- the servers -----------------------------------------------------------------------------


def canned_record() -> JobRecord:
    """The job hashserve makes of the bench's request (queued), built the same way."""
    now_s = time.time()
    spec = embed_spec(MODEL, [SENTENCE], TIER)
    data, filled = validate_spec(spec, DEFAULT_CATALOGUE, DEFAULT_REGIONS, now_s)
    blob = canonical_spec_blob(filled)
    return JobRecord(
        job_id="job_" + "0" * 32, tenant="bench", spec=data, spec_blob=blob, submitted_s=now_s,
        idempotency_key="bench-0-1", spec_hash=spec_hash(canonical_spec_blob(spec)),
    )


def canned_response() -> customer_pb2.SubmitJobResponse:
    """What hashserve answers for the same request."""
    return customer_pb2.SubmitJobResponse(job=job_to_proto(canned_record()))


class BareService(customer_pb2_grpc.CustomerServiceServicer):
    def __init__(self) -> None:
        self.one = canned_response()

    async def SubmitJob(
        self, request: customer_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.SubmitJobResponse:
        return self.one

    async def SubmitJobs(
        self, request: customer_pb2.SubmitJobsRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.SubmitJobsResponse:
        return customer_pb2.SubmitJobsResponse(jobs=[self.one] * len(request.jobs))


async def bare(load: Load, pinned: bool = False, load_processes: int = 1) -> dict[str, Any]:
    """`pinned`: this process (the server) on the server's cores, the load on the others, as
    the service is pinned beside it."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    customer_pb2_grpc.add_CustomerServiceServicer_to_server(BareService(), server)
    port = server.add_insecure_port(load.address)
    await server.start()
    before = os.sched_getaffinity(0)
    if pinned:
        server_cpus, client_cpus = core_split()
        pin(os.getpid(), server_cpus)
        load = replace(load, client_cpus=client_cpus)
    try:
        return await run_load(_at(load, port), processes=load_processes)
    finally:
        if pinned:
            pin(os.getpid(), before)
        await server.stop(0)


def _at(load: Load, port: int) -> Load:
    return replace(load, address=f"127.0.0.1:{port}")


class Service:
    """hashserve as users start it: the scheduler actor on a local Ray (`hashserve up`'s
    LocalCluster), an agent connected, the default FULL journal, and the native front on the
    customers' port where it is built, as `hashserve up` starts it. The bench's jobs name a
    region no agent serves, so they queue (as in the in-process runs), and its tenant's limits
    are out of the way."""

    def __init__(self, workdir: Path) -> None:
        from hashserve.local import AgentPlan, LocalCluster
        from scheduler.front.native import native_front_binary

        self.cluster = LocalCluster(
            workdir=workdir / "service",
            agents=[AgentPlan("bench-eu-1", "de-leipzig", "europe")],
            settings_overrides={"metrics_port": -1},
            native_front=native_front_binary() is not None,
        )

    def start(self) -> Service:
        self.cluster.start_scheduler()
        self.cluster.start_agents()
        journal = SqliteJournal(self.cluster.journal_path)
        try:
            auth = Authenticator(journal)
            auth.create_tenant("bench", max_queued_jobs=10**9, rate=1e9)
            self.api_key = auth.issue_api_key("bench")[1]
        finally:
            journal.close()
        asyncio.run(self._wait_agent())
        return self

    async def _wait_agent(self, timeout_s: float = 120.0) -> None:
        from hashserve.client import Client

        deadline = time.monotonic() + timeout_s
        async with Client(self.cluster.address, self.api_key) as c:
            while time.monotonic() < deadline:
                models = await c.models()
                if any(m.nodes_serving for m in models.models):
                    return
                await asyncio.sleep(0.3)
        raise TimeoutError("the bench's agent did not connect")

    @property
    def pid(self) -> int:
        supervisor = self.cluster.supervisor
        assert supervisor is not None
        return int(supervisor.info["pid"])  # type: ignore[attr-defined]

    @property
    def pids(self) -> tuple[int, ...]:
        """The scheduler's, then the native front's (when there is one)."""
        front = self.cluster.front
        return (self.pid,) if front is None else (self.pid, front.pid)

    @property
    def customer_port(self) -> str:
        return "native front" if self.cluster.front is not None else "scheduler"

    async def run(self, load: Load, load_processes: int = 1, direct: bool = False
                  ) -> dict[str, Any]:
        """At the customers' port, or (`direct`) at the scheduler's own."""
        server_cpus, client_cpus = core_split()
        for pid in self.pids:
            pin(pid, server_cpus)
        address = self.cluster.scheduler_address if direct else self.cluster.address
        load = replace(load, address=address, api_key=self.api_key,
                       client_cpus=client_cpus, regions=("south_america",))
        pids = self.pids
        try:
            result = await run_load(load, pids, load_processes)
        except FileNotFoundError as e:
            raise RuntimeError(f"a server process of the run ended during it: {self.front_says()}"
                               ) from e
        if self.pids != pids:
            raise RuntimeError(f"the native front was restarted during the run: "
                               f"{self.front_says()}")
        result["customer_port"] = "scheduler" if direct else self.customer_port
        return result

    def front_says(self) -> str:
        log = self.cluster.front_log
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        return f"front exits {self.cluster.front_exits}; its log ends:\n{tail}"

    async def run_fronts(self, load: Load, fronts: int, load_processes: int) -> dict[str, Any]:
        """The same load through `fronts` Python front processes sharing one port
        (SO_REUSEPORT), pinned with the scheduler; the server's CPU is theirs and the
        scheduler's together."""
        server_cpus, client_cpus = core_split()
        pin(self.pid, server_cpus)
        port = free_port()
        procs = [subprocess.Popen(
            [sys.executable, "-m", "hashserve", "front", "--engine", "python",
             "--scheduler", self.cluster.scheduler_address,
             "--port", str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL) for _ in range(fronts)]
        try:
            await _wait_serving(f"127.0.0.1:{port}")
            await asyncio.sleep(1.0)  # every front is up, not only the first to answer
            for proc in procs:
                pin(proc.pid, server_cpus)
            load = replace(load, address=f"127.0.0.1:{port}", api_key=self.api_key,
                           client_cpus=client_cpus, regions=("south_america",))
            result = await run_load(load, (self.pid, *(p.pid for p in procs)), load_processes)
            result["fronts"] = fronts
            return result
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)

    def stop(self) -> None:
        self.cluster.stop()


async def _wait_serving(address: str, timeout_s: float = 60.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with grpc.aio.insecure_channel(address) as ch:
                reply = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no front serving on {address}")


def bench_credentials(journal_path: Path, prefill: int = 0) -> str:
    """A tenant whose own limits are out of the way (the bench measures the path, not quotas),
    with `prefill` finished jobs of its own already in the journal (a journal in use keeps every
    job it answered; what a submit costs may grow with them)."""
    journal = SqliteJournal(journal_path)
    try:
        auth = Authenticator(journal)
        auth.create_tenant("bench", max_queued_jobs=10**9, rate=1e9)
        key = auth.issue_api_key("bench")[1]
        done = canned_record()
        for start in range(0, prefill, 10_000):
            journal.write_jobs([
                replace(done, job_id=f"job_{i:032x}", idempotency_key=f"old-{i}",
                        state=JobState.SUCCEEDED)
                for i in range(start, min(start + 10_000, prefill))
            ])
        return key
    finally:
        journal.close()


async def hashserve(
    load: Load, synchronous: str, workdir: Path, prefill: int = 0, load_processes: int = 1
) -> dict[str, Any]:
    from scheduler.runtime.app import SchedulerApp
    from scheduler.settings import SchedulerSettings

    journal_path = workdir / f"journal-{load.tag}.db"
    api_key = bench_credentials(journal_path, prefill)
    port = free_port()
    values: dict[str, object] = {
        "host": "127.0.0.1", "port": port, "metrics_port": -1,
        "journal_url": f"sqlite:///{journal_path}", "journal_synchronous": synchronous,
    }
    settings = SchedulerSettings(**values)  # type: ignore[arg-type]
    app = SchedulerApp(settings)
    journal = app.journal
    if isinstance(journal, SqliteJournal):
        journal.set_synchronous(synchronous)  # the setting is not wired to open_journal yet
    await app.start()
    try:
        result = await run_load(Load(
            f"127.0.0.1:{app.port}", api_key, load.seconds, load.warmup_s, load.concurrency,
            load.channels, load.batch, load.tag,
        ), processes=load_processes)
        result["journal_synchronous"] = (
            journal.synchronous() if isinstance(journal, SqliteJournal) else "unknown"
        )
        result["jobs_in_journal"] = journal.count_jobs_by_state().get("queued", 0)
        return result
    finally:
        await app.stop(0.5)


CONFIGS: tuple[tuple[str, str, bool], ...] = (
    # (name, server: bare, the in-process app at the journal's synchronous level, or the
    # service as users start it; batch)
    ("bare_pinned", "bare-pinned", False),
    ("service_full", "service", False),
    ("service_direct", "service-direct", False),
    ("service_fronts", "service-fronts", False),
    ("bare", "bare", False),
    ("hashserve_full", "FULL", False),
    ("hashserve_normal", "NORMAL", False),
    ("bare_batch", "bare", True),
    ("hashserve_batch_full", "FULL", True),
    ("hashserve_batch_normal", "NORMAL", True),
)


async def main_async(args: Any, service: Service, tmp: str) -> list[dict[str, dict[str, Any]]]:
    """Every configuration once per round, rounds one after the other: a machine whose speed
    drifts (other work on it) then affects each configuration alike."""
    seconds, warmup = (1.0, 0.3) if args.smoke else (args.seconds, args.warmup)
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        runs: dict[str, dict[str, Any]] = {}
        for name, server, batched in CONFIGS:
            load = Load("127.0.0.1:0", "unused", seconds, warmup, args.concurrency,
                        args.channels, args.batch if batched else 0, f"{name}-{r}")
            n = args.load_processes
            if server == "bare":
                runs[name] = await bare(load, load_processes=n)
            elif server == "bare-pinned":
                runs[name] = await bare(load, pinned=True, load_processes=n)
            elif server == "service":
                runs[name] = await service.run(load, n)
            elif server == "service-direct":
                runs[name] = await service.run(load, n, direct=True)
            elif server == "service-fronts":
                runs[name] = await service.run_fronts(load, args.fronts, n)
            else:
                runs[name] = await hashserve(load, server, Path(tmp), args.prefill, n)
        rounds.append(runs)
    return rounds


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=4.0, help="measured window per run")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured start of each run")
    p.add_argument("--rounds", type=int, default=3, help="repeat every configuration")
    p.add_argument("--concurrency", type=int, default=64, help="client coroutines")
    p.add_argument("--channels", type=int, default=4, help="client TCP connections")
    p.add_argument("--batch", type=int, default=50, help="jobs per SubmitJobs call")
    p.add_argument("--load-processes", type=int, default=2,
                   help="separate load-generator processes sharing the coroutines")
    p.add_argument("--fronts", type=int, default=2,
                   help="front processes on one port in the service_fronts configuration")
    p.add_argument(
        "--prefill", type=int, default=20_000,
        help="finished jobs of the tenant already in the journal before each hashserve run",
    )
    args = p.parse_args()
    if args.smoke:
        args.concurrency, args.channels, args.batch, args.rounds = 8, 2, 10, 1
        args.load_processes = 2
        args.prefill = min(args.prefill, 1_000)
    with tempfile.TemporaryDirectory(prefix="hashserve-bench-") as tmp:
        # Started here, on the main thread: Ray's driver wants it.
        service = Service(Path(tmp)).start()
        customer_port = service.customer_port
        print(f"the customers' port is the {customer_port}'s", flush=True)
        try:
            rounds = asyncio.run(main_async(args, service, tmp))
            front_exits = list(service.cluster.front_exits)
        finally:
            service.stop()

    def median(values: list[float]) -> float:
        return percentile(values, 0.5)

    names = [name for name, _, _ in CONFIGS]
    summary_runs: dict[str, dict[str, float]] = {}
    for name in names:
        per = [rnd[name] for rnd in rounds]
        summary_runs[name] = {
            "jobs_per_s": round(median([r["jobs_per_s"] for r in per]), 1),
            "calls_per_s": round(median([r["per_s"] for r in per]), 1),
            "p50_ms": round(median([r["p50_ms"] for r in per]), 3),
            "p99_ms": round(median([r["p99_ms"] for r in per]), 3),
            "errors": sum(r["errors"] for r in per),
            "server_cpu_us_per_job": round(median([r["server_cpu_us_per_job"] for r in per]), 1),
            "leader_cpu_us_per_job": round(median([r.get("leader_cpu_us_per_job", 0.0)
                                                   for r in per]), 1),
            # Each round's rate against that round's bare single submits.
            "vs_bare": round(median([rnd[name]["jobs_per_s"] / rnd["bare"]["jobs_per_s"]
                                     for rnd in rounds]), 3),
        }
    rows = [
        [name, r["calls_per_s"], r["jobs_per_s"], r["p50_ms"], r["p99_ms"], r["errors"],
         r["server_cpu_us_per_job"], r["vs_bare"]]
        for name, r in summary_runs.items()
    ]
    print(f"{args.concurrency} client coroutines over {args.channels} connections, "
          f"{args.rounds} round(s) of {1.0 if args.smoke else args.seconds:g} s per run, medians, "
          f"{os.cpu_count()} CPUs")
    print(table(rows, [
        "server", "calls/s", "jobs/s", "p50 ms", "p99 ms", "errors", "server CPU us/job",
        "jobs/s vs bare single",
    ]))
    service_vs_pinned = round(median([
        rnd["service_full"]["jobs_per_s"] / rnd["bare_pinned"]["jobs_per_s"] for rnd in rounds
    ]), 3)
    ratios = {
        # The service as users start it (Ray actor, agent connected, FULL journal) against
        # bare grpc.aio, both servers on the same cores and the load on the others.
        "full_vs_bare": service_vs_pinned,
        # The same service at the scheduler's own port, past the native front.
        "direct_vs_bare": round(median([
            rnd["service_direct"]["jobs_per_s"] / rnd["bare_pinned"]["jobs_per_s"]
            for rnd in rounds]), 3),
        # The same, through Python front processes (`hashserve front --engine python`) pinned
        # with the scheduler.
        "fronts_vs_bare": round(median([
            rnd["service_fronts"]["jobs_per_s"] / rnd["bare_pinned"]["jobs_per_s"]
            for rnd in rounds]), 3),
        "inprocess_full_vs_bare": summary_runs["hashserve_full"]["vs_bare"],
        "normal_vs_bare": summary_runs["hashserve_normal"]["vs_bare"],
        "batch_full_vs_bare_single": summary_runs["hashserve_batch_full"]["vs_bare"],
        "batch_normal_vs_bare_single": summary_runs["hashserve_batch_normal"]["vs_bare"],
        # What the leader spends per job behind fronts, against serving customers itself.
        "leader_cpu_fronts_vs_direct": _ratio(
            summary_runs["service_fronts"]["leader_cpu_us_per_job"],
            summary_runs["service_direct"]["leader_cpu_us_per_job"],
        ),
        # The same behind the customers' port (the native front, where built).
        "leader_cpu_full_vs_direct": _ratio(
            summary_runs["service_full"]["leader_cpu_us_per_job"],
            summary_runs["service_direct"]["leader_cpu_us_per_job"],
        ),
        "cpu_per_job_full_vs_bare": _ratio(
            summary_runs["hashserve_full"]["server_cpu_us_per_job"],
            summary_runs["bare"]["server_cpu_us_per_job"],
        ),
        "cpu_per_job_normal_vs_bare": _ratio(
            summary_runs["hashserve_normal"]["server_cpu_us_per_job"],
            summary_runs["bare"]["server_cpu_us_per_job"],
        ),
    }
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    summary = {
        "service_at_least_80pct_of_bare": ratios["full_vs_bare"] >= 0.8,
        # Several load processes, far below the tenant's limits: every submit answered.
        "service_sustained_without_errors": all(
            summary_runs[name]["errors"] == 0
            for name in ("service_full", "service_direct", "service_fronts")),
        "batch_beats_bare_single": ratios["batch_full_vs_bare_single"] > 1.0,
    }
    finish("submit", args, {
        "concurrency": args.concurrency, "channels": args.channels, "batch": args.batch,
        "load_processes": args.load_processes, "fronts": args.fronts,
        # What `service_full` called: the native front, or the scheduler where it is not built.
        "customer_port": customer_port,
        # Exit statuses of native fronts that died during the bench (restarted by `up`).
        "front_exits": front_exits,
        "prefill": args.prefill,
        "rounds": rounds, "medians": summary_runs, "ratios": ratios, "summary": summary,
    })
    return 0


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


if __name__ == "__main__":
    sys.exit(main())
