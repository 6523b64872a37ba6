"""Graceful drain and shutdown: SIGTERM finishes or hands back running work, and leaves no
half-written state.

One real deployment for the module, started as an operator would: `hashserve scheduler` (its own
local Ray, the scheduler actor) and `hashserve agent` processes. An agent given SIGTERM takes no new
work, finishes what it runs, sees its outcomes acknowledged and exits 0. The scheduler given
SIGTERM stops its actor and exits 0; its journal is intact, and a scheduler started again on the
same journal and port carries every acknowledged job to one answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hashserve.local import (
    AgentPlan,
    Credentials,
    bootstrap_credentials,
    free_port,
    spawn_agent,
    stop_process,
)
from hashserve.v1 import customer_pb2, jobs_pb2
from scheduler.journal.codec import JOB_COLUMNS, from_row
from tests.chaos.harness import (
    EMBED,
    InProcessScheduler,
    SteadyLoad,
    bearer,
    customer_stub,
    run,
    wait_serving,
)
from tests.chaos.ledger import account, job_states, wait_until_final

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

LONG_TEXTS = ["grid operator demand response event notice " * 25] * 14  # ~1.5 s of MiniLM
SCHEDULER_ENV = {
    "HASHSERVE_LEASE_S": "6",
    "HASHSERVE_DISCONNECT_GRACE_S": "2",
    "HASHSERVE_RECOVERY_GRACE_S": "10",
    "HASHSERVE_TICK_S": "0.2",
}


@dataclass
class Deployment:
    workdir: Path
    port: int
    credentials: Credentials
    scheduler: subprocess.Popen[bytes]
    agents: dict[str, subprocess.Popen[bytes]]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def journal_path(self) -> Path:
        return self.workdir / "journal.db"

    def start_agent(self, plan: AgentPlan) -> subprocess.Popen[bytes]:
        proc = spawn_agent(
            plan, self.address, self.credentials.agent_token,
            self.workdir / "logs" / f"{plan.agent_id}.log",
        )
        self.agents[plan.agent_id] = proc
        return proc


def start_scheduler_cli(workdir: Path, port: int, creds: Credentials) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **SCHEDULER_ENV, HASHSERVE_AGENT_TOKEN=creds.agent_token)
    log = open(workdir / "scheduler.log", "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "hashserve", "scheduler", "--port", str(port),
         "--journal", f"sqlite:///{workdir / 'journal.db'}", "--metrics-port", "-1"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,  # its own group: a signal to it reaches nothing of ours
    )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = Path(tmp_path_factory.mktemp("drain"))
    creds = bootstrap_credentials(workdir / "journal.db")
    port = free_port()
    sched = start_scheduler_cli(workdir, port, creds)
    dep = Deployment(workdir, port, creds, sched, {})
    try:
        run(wait_serving(dep.address, 120))
        yield dep
    finally:
        for proc in dep.agents.values():
            stop_process(proc)
        if dep.scheduler.poll() is None:
            dep.scheduler.send_signal(signal.SIGTERM)
            try:
                dep.scheduler.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(dep.scheduler.pid, signal.SIGKILL)


def long_job(region: str) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(
        model=EMBED, embed=jobs_pb2.EmbedInput(texts=LONG_TEXTS), allowed_regions=[region]
    )


def journal_rows(path: Path, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


async def wait_connected(dep: Deployment, agent_id: str, times: int = 1) -> None:
    """Until the agent's log says it connected `times` times (it logs each welcome)."""
    log = dep.workdir / "logs" / f"{agent_id}.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(f"connected to scheduler as {agent_id}") >= times:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"agent {agent_id} did not connect")


def test_sigterm_to_an_agent_finishes_its_running_work_and_takes_no_more(
    deployment: Deployment,
) -> None:
    dep = deployment
    region = "south_america"
    first = dep.start_agent(AgentPlan("so-drain-1", "br-minas", region, max_concurrent_jobs=2))
    md = bearer(dep.credentials.api_key)

    async def go() -> dict[str, str]:
        await wait_connected(dep, "so-drain-1")
        channel, stub = customer_stub(dep.address)
        try:
            running = [
                (await stub.SubmitJob(
                    customer_pb2.SubmitJobRequest(spec=long_job(region)), metadata=md
                )).job.id
                for _ in range(2)
            ]
            deadline = time.monotonic() + 30
            # The live state, from the scheduler: a job's start is not journalled (recovery
            # treats assigned and running alike), so the journal may still say "assigned".
            while {
                (await stub.GetJob(customer_pb2.GetJobRequest(job_id=j), metadata=md)).state
                for j in running
            } != {jobs_pb2.JOB_STATE_RUNNING}:
                assert time.monotonic() < deadline, "the two jobs never ran"
                await asyncio.sleep(0.05)
            first.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)  # its draining heartbeat reaches the scheduler
            later = (await stub.SubmitJob(
                customer_pb2.SubmitJobRequest(spec=long_job(region)), metadata=md
            )).job.id
            rc = await asyncio.to_thread(first.wait, 60)
            assert rc == 0, f"the draining agent exited with {rc}"
            # Nothing ran the later job: the only agent of the region was draining.
            assert job_states(dep.journal_path, [later])[later] == "queued"
            dep.start_agent(AgentPlan("so-drain-2", "br-minas", region))
            return {"r0": running[0], "r1": running[1], "later": later}
        finally:
            await channel.close()

    jobs = run(go())
    wait_until_final(dep.journal_path, list(jobs.values()), 90)
    rows = journal_rows(
        dep.journal_path,
        "SELECT job_id, node_id, attempt FROM jobs WHERE job_id IN (?, ?, ?)",
        (jobs["r0"], jobs["r1"], jobs["later"]),
    )
    where = {j: (n, a) for j, n, a in rows}
    # The running jobs were finished by the agent that was told to stop, on their first try.
    assert where[jobs["r0"]] == ("so-drain-1", 1) and where[jobs["r1"]] == ("so-drain-1", 1)
    assert where[jobs["later"]][0] == "so-drain-2"
    counts = account("agent SIGTERM drain", dep.journal_path, jobs)
    assert (counts.lost, counts.duplicated) == (0, 0)


def test_sigterm_to_the_scheduler_under_load_leaves_a_consistent_journal(
    deployment: Deployment,
) -> None:
    dep = deployment
    for plan in (AgentPlan("no-drain-1", "tx-odessa", "north_america"),
                 AgentPlan("eu-drain-1", "de-leipzig", "europe")):
        dep.start_agent(plan)
    run(wait_connected(dep, "no-drain-1"))
    run(wait_connected(dep, "eu-drain-1"))

    def spec(i: int) -> jobs_pb2.JobSpec:
        if i % 6 == 0:
            return jobs_pb2.JobSpec(
                model=EMBED, embed=jobs_pb2.EmbedInput(texts=[f"{i}", *LONG_TEXTS[:6]])
            )
        return jobs_pb2.JobSpec(model=EMBED, embed=jobs_pb2.EmbedInput(texts=[f"drain {i}"]))

    load = SteadyLoad(dep.address, dep.credentials.api_key, spec, 8.0, key_prefix="term")
    stopped: dict[str, float] = {}
    in_flight: list[tuple[str, str, int]] = []  # (job, node, attempt) held when it stopped
    replacement: list[InProcessScheduler] = []

    async def operator(stop: asyncio.Event) -> None:
        try:
            await asyncio.sleep(4.0)
            t0 = time.monotonic()
            dep.scheduler.send_signal(signal.SIGTERM)
            rc = await asyncio.to_thread(dep.scheduler.wait, 90)
            stopped["exit_code"] = rc
            stopped["stop_s"] = time.monotonic() - t0
            in_flight.extend(check_journal(dep.journal_path, list(load.acked.values())))
            # Back on the same journal and port (here in this process: it is the same app the
            # actor hosts); agents reconnect and re-adopt what they still run.
            replacement.append(
                InProcessScheduler(
                    dep.workdir, port=dep.port, lease_s=6.0, disconnect_grace_s=2.0,
                    recovery_grace_s=10.0, tick_s=0.2, credentials=dep.credentials,
                ).start()
            )
            await asyncio.sleep(5.0)
        finally:
            stop.set()

    async def go() -> None:
        stop = asyncio.Event()
        await asyncio.gather(load.run(600, stop), operator(stop))

    try:
        run(go())
        wait_until_final(dep.journal_path, list(load.acked.values()), 120)
    finally:
        for s in replacement:
            s.stop()
    after = {
        j: (n, a)
        for j, n, a in journal_rows(dep.journal_path, "SELECT job_id, node_id, attempt FROM jobs")
    }
    readopted = sum(1 for j, n, a in in_flight if after[j] == (n, a))
    print(
        f"scheduler SIGTERM: exit code {stopped['exit_code']} after {stopped['stop_s']:.1f} s; "
        f"{len(in_flight)} jobs held by agents then, {readopted} finished by the same attempt "
        f"(re-adopted), {len(in_flight) - readopted} placed again"
    )
    assert stopped["exit_code"] == 0
    counts = account(
        "scheduler SIGTERM under load", dep.journal_path, load.acked, tenant=dep.credentials.tenant
    )
    assert counts.acknowledged >= 40
    assert counts.lost == 0, counts.lost_ids
    assert counts.duplicated == 0, counts.duplicated_ids


def check_journal(path: Path, acked: list[str]) -> list[tuple[str, str, int]]:
    """No half-written state: the file is sound, every row reads back, every acknowledged job is
    there, and each job's state fits its fields. Returns the jobs agents held (job, node,
    attempt)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        records = [from_row(r) for r in db.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs")]
        for (detail,) in db.execute("SELECT detail FROM decisions"):
            json.loads(detail)
    finally:
        db.close()
    present = {r.job_id for r in records}
    assert set(acked) <= present, f"{len(set(acked) - present)} acknowledged jobs missing"
    for rec in records:
        if rec.state.value in ("assigned", "running"):
            assert rec.node_id and rec.attempt >= 1, rec
        if rec.state.value == "queued":
            assert not rec.node_id, rec
        if rec.state.value == "succeeded":
            assert rec.result_blob and rec.finished_s > 0, rec
    return [
        (r.job_id, r.node_id, r.attempt) for r in records
        if r.state.value in ("assigned", "running")
    ]
