"""Faults on the job path: an agent killed mid-job, the scheduler killed with SIGKILL.

One cluster for the module (short leases and grace so recovery is quick). Every acknowledged job
must end exactly once: the journal's "outcome" decisions count the answers each job got.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hashserve.client import embed_spec, generate_spec
from hashserve.local import AgentPlan, LocalCluster, RestartPolicy
from hashserve.v1 import jobs_pb2
from tests.integration.cluster import (
    EMBED,
    GEN,
    client,
    journal_rows,
    local_cluster,
    run,
    until,
    wait_for_agents,
)

pytestmark = pytest.mark.integration

AGENTS = [
    AgentPlan("na-1", "tx-odessa", "north_america"),
    AgentPlan("na-2", "ny-massena", "north_america"),
    AgentPlan("eu-1", "de-leipzig", "europe"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(
        Path(tmp_path_factory.mktemp("faults")),
        AGENTS,
        # Killed agents come back after a few seconds, by which time their job is elsewhere.
        restart=RestartPolicy(first_delay_s=3.0),
        lease_s=6.0,
        disconnect_grace_s=2.0,
        recovery_grace_s=8.0,
        tick_s=0.2,
    ) as c:
        yield c


def answers(cluster: LocalCluster, job_id: str) -> int:
    rows = journal_rows(
        cluster, "SELECT count(*) FROM decisions WHERE subject=? AND kind='outcome'", (job_id,)
    )
    return int(rows[0][0])


def test_agent_killed_mid_job_its_job_is_finished_by_another(cluster: LocalCluster) -> None:
    pytest.importorskip("llama_cpp")

    async def go() -> tuple[jobs_pb2.Job, str]:
        async with client(cluster) as c:
            resp = await c.submit(
                generate_spec(GEN, "Tell a long story about a wind farm.", 200, "interactive")
            )
            node = ""
            async for event in c.watch(resp.job.id):
                if event.HasField("job") and event.job.node:
                    node = event.job.node
                if event.HasField("tokens"):
                    break  # running on `node`, mid-generation
            victim = cluster.procs[node]
            victim.send_signal(signal.SIGKILL)
            victims.append(victim.pid)
            return await c.wait(resp.job.id, timeout_s=120), node

    victims: list[int] = []
    job, killed = run(go())
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.node != killed
    assert job.attempt >= 2
    assert job.result.completion_tokens > 0
    assert answers(cluster, job.id) == 1
    # The supervisor saw the kill, said so, and brought the agent back.
    cluster.wait_restarted(killed, victims[0])
    wait_for_agents(cluster, len(AGENTS))
    exits = [e for e in cluster.unplanned_exits() if e.pid == victims[0]]
    assert [e.how for e in exits] == ["killed by SIGKILL"]


def test_scheduler_sigkill_loses_no_accepted_job_and_answers_none_twice(
    cluster: LocalCluster,
) -> None:
    supervisor = cluster.supervisor
    assert supervisor is not None
    pid = int(supervisor.info["pid"])  # type: ignore[attr-defined]
    acked: dict[str, str] = {}  # idempotency key -> job id

    async def submit_with_retry(c: object, i: int, spec: jobs_pb2.JobSpec) -> None:
        key = f"load-{i}"
        for _ in range(200):
            try:
                resp = await c.submit(spec, idempotency_key=key, timeout_s=5)  # type: ignore[attr-defined]
                acked[key] = resp.job.id
                return
            except grpc.aio.AioRpcError as err:
                # Not acknowledged: the customer retries with the same key (never a duplicate).
                assert err.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.CANCELLED,
                ), err
                await asyncio.sleep(0.2)
        raise AssertionError(f"{key} never acknowledged")

    async def load() -> None:
        async with client(cluster) as c:
            # Jobs nobody can run yet (no agent in south_america): queued across the restart.
            parked = [
                await c.submit(
                    embed_spec(EMBED, [f"parked {i}"], "standard", ["south_america"]),
                    idempotency_key=f"parked-{i}",
                )
                for i in range(3)
            ]
            for p in parked:
                acked[f"parked-{p.job.id}"] = p.job.id
            tasks = []
            for i in range(60):
                spec = embed_spec(EMBED, [f"load text number {i}"], "standard")
                tasks.append(asyncio.create_task(submit_with_retry(c, i, spec)))
                if i == 20:
                    os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(0.05)
            await asyncio.gather(*tasks)

    run(load())
    until(lambda: int(supervisor.info["pid"]) != pid, 60, "Ray to restart the scheduler")  # type: ignore[attr-defined]
    wait_for_agents(cluster, len(AGENTS))

    async def parked_still_queued() -> None:
        async with client(cluster) as c:
            for key, job_id in acked.items():
                if key.startswith("parked-"):
                    job = await c.get(job_id)
                    assert job.state == jobs_pb2.JOB_STATE_QUEUED

    run(parked_still_queued())
    cluster.start_agent(AgentPlan("sa-1", "br-minas", "south_america"))

    async def finals() -> list[jobs_pb2.Job]:
        async with client(cluster) as c:
            return list(await asyncio.gather(*(c.wait(j, 120) for j in acked.values())))

    jobs = run(finals())
    lost = [j.id for j in jobs if j.state != jobs_pb2.JOB_STATE_SUCCEEDED]
    twice = [j.id for j in jobs if answers(cluster, j.id) != 1]
    print(
        f"acknowledged={len(acked)} completed={len(jobs) - len(lost)} lost={len(lost)} "
        f"duplicated={len(twice)}"
    )
    assert not lost
    assert not twice
    assert {j.region for j in jobs if j.id in {v for k, v in acked.items() if "parked" in k}} == {
        "south_america"
    }


def test_an_agent_dead_of_an_illegal_instruction_leaves_its_stack_and_comes_back(
    cluster: LocalCluster,
) -> None:
    """What an engine built for another CPU does to its agent: the log must say so, with the
    Python stack, and the supervisor must say which agent died and how, and restart it."""
    victim = cluster.procs["eu-1"]
    os.kill(victim.pid, signal.SIGILL)
    cluster.wait_restarted("eu-1", victim.pid)
    (event,) = [e for e in cluster.unplanned_exits() if e.pid == victim.pid]
    assert event.how == "killed by SIGILL (illegal instruction)"
    assert event.restarting
    text = event.log_path.read_text()
    trace = text[text.index("Fatal Python error: Illegal instruction") :]
    assert 'File "' in trace  # the Python stack of its threads
    assert 'File "' in event.log_tail
    assert f"agent eu-1 (pid {victim.pid}) killed by SIGILL" in event.describe()
    wait_for_agents(cluster, len(AGENTS))
