"""Stateless fronts (`hashserve front`) before a real scheduler: submits batched into the leader's
Intake, every other call forwarded, bad input refused with the leader's answer, a killed front
process started again while its sibling on the same port serves, and keyed submits held across
a leader change; each for both engines, the Python front and the native one (C++).

The scheduler runs in this process (`InProcessScheduler`); the fronts are real processes, two
of them sharing one port (SO_REUSEPORT), under `hashserve front --processes 2`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hashserve.local import free_port
from hashserve.v1 import customer_pb2, customer_pb2_grpc, jobs_pb2
from scheduler.front.native import HOW_TO_BUILD, native_front_binary
from scheduler.journal.sqlite import SqliteJournal
from tests.chaos.harness import (
    InProcessScheduler,
    WireAgent,
    bearer,
    embed_spec,
    run,
    wait_serving,
)

pytestmark = pytest.mark.integration

ENGINES = ("python", "native")


def need_engine(engine: str) -> None:
    """The native front is built by scripts/install.sh where gRPC's C++ library is installed,
    as CI installs it: there its absence is a failure, elsewhere a skip."""
    if engine == "native" and native_front_binary() is None:
        if os.environ.get("CI"):
            pytest.fail(HOW_TO_BUILD)
        pytest.skip(HOW_TO_BUILD)


def free_ports_in_a_row(n: int) -> list[int]:
    for _ in range(50):
        first = free_port()
        ports = list(range(first, first + n))
        try:
            for port in ports[1:]:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return ports
    raise RuntimeError(f"no {n} free ports in a row")


def scraped(ports: list[int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of every front process's /metrics, summed over the processes."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                out[key] = out.get(key, 0.0) + sample.value
    return out


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


class Fronts:
    def __init__(self, scheduler: str, log_path: Path, processes: int = 2,
                 engine: str = "python") -> None:
        need_engine(engine)
        self.engine = engine
        self.port = free_port()
        # Process i serves its metrics on metrics_port + i.
        self.metrics_ports = free_ports_in_a_row(processes)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (the child writes it while we read)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hashserve", "front", "--scheduler", scheduler,
             "--port", str(self.port), "--processes", str(processes), "--engine", engine,
             "--metrics-port", str(self.metrics_ports[0])],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.address = f"127.0.0.1:{self.port}"
        run(wait_serving(self.address))

    def child_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"front \d+ started \(pid (\d+)\)",
                                           self.log_path.read_text())]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessScheduler]:
    with InProcessScheduler(Path(tmp_path_factory.mktemp("fronts")), tick_s=0.2) as s:
        yield s


@pytest.fixture(scope="module", params=ENGINES)
def fronts(sched: InProcessScheduler, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Fronts]:
    f = Fronts(sched.address, Path(tmp_path_factory.mktemp("front-logs")) / "fronts.log",
               engine=request.param)
    yield f
    f.stop()


def stub(address: str) -> tuple[grpc.aio.Channel, customer_pb2_grpc.CustomerServiceStub]:
    channel = grpc.aio.insecure_channel(address, options=[
        ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)])
    return channel, customer_pb2_grpc.CustomerServiceStub(channel)


def keys_in_journal(sched: InProcessScheduler, prefix: str) -> list[str]:
    journal = SqliteJournal(sched.journal_path)
    try:
        rows = journal._read.execute(  # the test reads the rows themselves
            "SELECT idempotency_key FROM jobs WHERE idempotency_key LIKE ?", (prefix + "%",)
        ).fetchall()
    finally:
        journal.close()
    return sorted(str(r[0]) for r in rows)


def test_concurrent_submits_through_two_fronts_are_journalled_once(
    sched: InProcessScheduler, fronts: Fronts
) -> None:
    md = bearer(sched.credentials.api_key)

    async def go() -> tuple[list[str], list[bool]]:
        pairs = [stub(fronts.address) for _ in range(8)]

        async def one(i: int, again: bool = False) -> tuple[str, bool]:
            _, s = pairs[i % len(pairs)]
            reply = await s.SubmitJob(customer_pb2.SubmitJobRequest(
                spec=embed_spec(f"text {i}", regions=("europe",)),
                idempotency_key=f"fr-{fronts.engine}-{i}"),
                metadata=md, timeout=30)
            return reply.job.id, reply.deduplicated

        try:
            first = await asyncio.gather(*(one(i) for i in range(300)))
            again = await asyncio.gather(*(one(i, True) for i in range(0, 300, 10)))
        finally:
            for channel, _ in pairs:
                await channel.close()
        assert [job_id for job_id, _ in again] == [first[i][0] for i in range(0, 300, 10)]
        return [job_id for job_id, _ in first], [dedup for _, dedup in again]

    ids, dedups = run(go())
    assert len(set(ids)) == 300
    assert all(dedups)  # a retry through any front gets the first job
    assert keys_in_journal(sched, f"fr-{fronts.engine}-") == sorted(
        f"fr-{fronts.engine}-{i}" for i in range(300))


def test_bad_input_is_refused_at_the_front_and_the_leaders_answer_is_passed_on(
    sched: InProcessScheduler, fronts: Fronts
) -> None:
    async def go() -> None:
        channel, s = stub(fronts.address)
        md = bearer(sched.credentials.api_key)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.SubmitJob(customer_pb2.SubmitJobRequest(
                    spec=jobs_pb2.JobSpec(model="no-such-model",
                                          embed=jobs_pb2.EmbedInput(texts=["x"]))),
                    metadata=md, timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert "no-such-model" in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.SubmitJob(customer_pb2.SubmitJobRequest(spec=embed_spec("x")),
                                  timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED  # no key at all
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.SubmitJob(customer_pb2.SubmitJobRequest(spec=embed_spec("x")),
                                  metadata=bearer("hsk_nope_" + "x" * 30), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the leader said so
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.SubmitJobs(customer_pb2.SubmitJobsRequest(), metadata=md, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await channel.close()

    submitted = sched.on_loop(lambda app: len(app.loop.core.jobs))
    run(go())
    assert sched.on_loop(lambda app: len(app.loop.core.jobs)) == submitted


def test_get_watch_cancel_and_models_are_forwarded(
    sched: InProcessScheduler, fronts: Fronts
) -> None:
    async def go() -> None:
        agent = WireAgent(sched.address, sched.credentials.agent_token, "front-agent",
                          region="south_america")
        channel, s = stub(fronts.address)
        md = bearer(sched.credentials.api_key)
        try:
            await agent.connect()
            await agent.recv_kind("welcome")
            agent.beat()
            job = (await s.SubmitJob(customer_pb2.SubmitJobRequest(
                spec=embed_spec("watched", regions=("south_america",))), metadata=md,
                timeout=10)).job
            watch = s.WatchJob(customer_pb2.WatchJobRequest(job_id=job.id), metadata=md)
            assign = await agent.recv_kind("assign")
            agent.started(job.id, assign.assign.ref.attempt)
            agent.outcome(job.id, assign.assign.ref.attempt, text="done here")
            states = [ev.job.state async for ev in watch if ev.HasField("job")]
            assert states[-1] == jobs_pb2.JOB_STATE_SUCCEEDED
            got = await s.GetJob(customer_pb2.GetJobRequest(job_id=job.id), metadata=md,
                                 timeout=10)
            assert got.state == jobs_pb2.JOB_STATE_SUCCEEDED
            models = await s.ListModels(customer_pb2.ListModelsRequest(), metadata=md,
                                        timeout=10)
            assert any(m.name == embed_spec("x").model for m in models.models)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.CancelJob(customer_pb2.CancelJobRequest(job_id="nope"), metadata=md,
                                  timeout=10)
            assert err.value.code() in (grpc.StatusCode.NOT_FOUND,
                                        grpc.StatusCode.INVALID_ARGUMENT)
            listed = await s.ListJobs(customer_pb2.ListJobsRequest(
                state=jobs_pb2.JOB_STATE_SUCCEEDED), metadata=md, timeout=10)
            assert any(j.id == job.id for j in listed.jobs)
        finally:
            await agent.close()
            await channel.close()

    run(go())


def test_the_fronts_count_and_time_every_call_and_their_batches_for_prometheus(
    sched: InProcessScheduler, fronts: Fronts
) -> None:
    """The same series from either engine: the gRPC server's (as the scheduler's own port
    exports them) and the intake's batches to the leader."""
    before = scraped(fronts.metrics_ports)

    async def go() -> None:
        channel, s = stub(fronts.address)
        md = bearer(sched.credentials.api_key)
        try:
            # For a region no agent of this module serves: queued, never assigned, they take
            # no other test's agent.
            await asyncio.gather(*(s.SubmitJob(customer_pb2.SubmitJobRequest(
                spec=embed_spec(f"counted {i}", regions=("europe",)),
                idempotency_key=f"metrics-{fronts.engine}-{i}"), metadata=md, timeout=10)
                for i in range(6)))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.SubmitJob(customer_pb2.SubmitJobRequest(spec=embed_spec("no key")),
                                  timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await s.ListModels(customer_pb2.ListModelsRequest(), metadata=md, timeout=10)
        finally:
            await channel.close()

    run(go())
    after = scraped(fronts.metrics_ports)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    submit = {"grpc_service": "hashserve.v1.CustomerService", "grpc_method": "SubmitJob",
              "grpc_type": "unary"}
    assert grew("hashserve_grpc_server_started_total", **submit) == 7
    assert grew("hashserve_grpc_server_handled_total", grpc_code="OK", **submit) == 6
    assert grew("hashserve_grpc_server_handled_total", grpc_code="UNAUTHENTICATED",
                **submit) == 1
    assert grew("hashserve_grpc_server_handling_seconds_count", **submit) == 7
    assert grew("hashserve_grpc_server_handled_total", grpc_method="ListModels",
                grpc_code="OK") == 1
    # The six went to the leader in one or more batches, each answered.
    assert grew("hashserve_front_intake_batch_submits_sum") == 6
    batches = grew("hashserve_front_intake_batch_submits_count")
    assert 1 <= batches <= 6
    assert grew("hashserve_front_intake_batches_total", grpc_code="OK") == batches


def test_a_killed_front_process_is_started_again_while_its_sibling_serves(
    sched: InProcessScheduler, fronts: Fronts
) -> None:
    before = fronts.child_pids()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)

    async def go() -> int:
        channel, s = stub(fronts.address)
        ok = 0
        try:
            deadline = time.monotonic() + 5
            i = 0
            while time.monotonic() < deadline:
                i += 1
                try:
                    await s.SubmitJob(customer_pb2.SubmitJobRequest(
                        spec=embed_spec("k", regions=("europe",)),
                        idempotency_key=f"kill-{fronts.engine}-{i}"),
                        metadata=bearer(sched.credentials.api_key), timeout=5)
                    ok += 1
                    await asyncio.sleep(0.02)  # under the tenant's rate limit
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE  # the dead one's stream
                    await asyncio.sleep(0.05)
        finally:
            await channel.close()
        return ok

    assert run(go()) > 10
    deadline = time.monotonic() + 20
    while len(fronts.child_pids()) < 3:
        assert time.monotonic() < deadline, fronts.log_path.read_text()[-2000:]
        time.sleep(0.2)
    assert "exited with code -9" in fronts.log_path.read_text()


@pytest.mark.parametrize("engine", ENGINES)
def test_keyed_submits_are_held_across_a_leader_change(tmp_path: Path, engine: str) -> None:
    """The leader stops; another scheduler takes over on a second address. A keyed submit sent
    in between is answered by the new leader; an unkeyed one is told UNAVAILABLE."""
    need_engine(engine)
    port_a, port_b = free_port(), free_port()
    first = InProcessScheduler(tmp_path / "sched", tick_s=0.2, port=port_a).start()
    fronts = Fronts(f"127.0.0.1:{port_a},127.0.0.1:{port_b}", tmp_path / "fronts.log",
                    processes=1, engine=engine)
    second: InProcessScheduler | None = None
    md = bearer(first.credentials.api_key)
    try:
        async def submit(s: customer_pb2_grpc.CustomerServiceStub, key: str) -> str:
            reply = await s.SubmitJob(customer_pb2.SubmitJobRequest(
                spec=embed_spec("f", regions=("europe",)), idempotency_key=key),
                metadata=md, timeout=30)
            return reply.job.id

        async def before() -> None:
            channel, s = stub(fronts.address)
            try:
                await submit(s, "lc-0")
            finally:
                await channel.close()

        run(before())
        first.stop()

        async def during() -> tuple[str, grpc.StatusCode]:
            channel, s = stub(fronts.address)
            try:
                held = asyncio.create_task(submit(s, "lc-1"))
                try:
                    await submit(s, "")
                    unkeyed = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as err:
                    unkeyed = err.code()
                await asyncio.sleep(1.0)
                assert not held.done()
                return await held, unkeyed
            finally:
                await channel.close()

        async def take_over() -> None:
            nonlocal second
            await asyncio.sleep(3.0)
            second = await asyncio.to_thread(
                lambda: InProcessScheduler(tmp_path / "sched", first.credentials, tick_s=0.2,
                                           port=port_b).start())

        async def both() -> tuple[str, grpc.StatusCode]:
            result, _ = await asyncio.gather(during(), take_over())
            return result

        job_id, unkeyed = run(both())
        assert unkeyed == grpc.StatusCode.UNAVAILABLE
        assert second is not None
        assert second.on_loop(lambda app: app.loop.get(job_id)) is not None
        assert keys_in_journal(second, "lc-") == ["lc-0", "lc-1"]
    finally:
        fronts.stop()
        if second is not None:
            second.stop()


def test_the_native_front_passes_admin_and_reflection_through_and_refuses_the_rest(
    sched: InProcessScheduler, fronts: Fronts
) -> None:
    """Operators use the customers' address (`hashserve up` gives them one); agents connect to
    the scheduler's own port, so the front refuses their methods rather than relay them."""
    if fronts.engine != "native":
        pytest.skip("the Python front serves the customers' API alone")
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from hashserve.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc

    async def go() -> None:
        channel, _ = stub(fronts.address)
        try:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            sites = await admin.ListSites(admin_pb2.ListSitesRequest(),
                                          metadata=bearer(sched.credentials.admin_key),
                                          timeout=10)
            assert sites.sites
            with pytest.raises(grpc.aio.AioRpcError) as err:  # a customer's key is not enough
                await admin.ListSites(admin_pb2.ListSitesRequest(),
                                      metadata=bearer(sched.credentials.api_key), timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # Reflection is a bidirectional stream: it crosses the front both ways.
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = [a async for a in reflect.ServerReflectionInfo(iter([
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="hashserve.v1.CustomerService"),
            ]), timeout=10)]
            names = {s.name for s in answers[0].list_services_response.service}
            assert "hashserve.v1.CustomerService" in names
            assert answers[1].file_descriptor_response.file_descriptor_proto
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await agent_pb2_grpc.AgentEnrollmentStub(channel).Enroll(
                    agent_pb2.EnrollRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "not served by a front" in (err.value.details() or "")
        finally:
            await channel.close()

    run(go())
