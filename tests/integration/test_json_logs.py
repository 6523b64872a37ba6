"""JSON log lines from every process of a real local cluster: the scheduler inside its Ray actor
and an agent. Each line is one object with the process's fields, and job lines carry the job's
ids, so that the logs of 40+ sites can be shipped to one place and searched."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashserve.client import embed_spec
from hashserve.local import AgentPlan, LocalCluster
from hashserve.logs import LogFormat
from hashserve.v1 import jobs_pb2
from tests.integration.cluster import EMBED, client, run, wait_for_agents

pytestmark = pytest.mark.integration

AGENT = AgentPlan("json-1", "tx-odessa", "north_america")
LONG = ["a long settlement statement for the wind farm at the hub " * 40] * 48


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(
        workdir=Path(tmp_path_factory.mktemp("json-logs")), agents=[AGENT],
        log_format=LogFormat.JSON,
    )
    try:
        c.start_scheduler()
        c.start_agents()
        wait_for_agents(c, 1)
        yield c
    finally:
        c.stop()


def records(path: Path) -> list[dict[str, object]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines, f"{path} is empty"
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line in {path.name}: {line!r}") from None
    return out


def test_a_job_leaves_json_lines_with_its_ids(cluster: LocalCluster) -> None:
    async def go() -> str:
        async with client(cluster) as c:
            resp = await c.submit(embed_spec(EMBED, LONG, "standard"))
            for _ in range(300):
                job = await c.get(resp.job.id)
                if job.state == jobs_pb2.JOB_STATE_RUNNING:
                    break
                await asyncio.sleep(0.02)
            await c.cancel(resp.job.id)
            return str(resp.job.id)

    job_id = run(go())

    def agent_lines() -> list[dict[str, object]]:
        return records(cluster.agent_log(AGENT.agent_id))

    for _ in range(100):
        if any(r.get("job_id") == job_id for r in agent_lines()):
            break
        run(asyncio.sleep(0.1))
    agent = agent_lines()
    assert all(r["process"] == "agent" and r["agent_id"] == "json-1" for r in agent)
    assert all(r["site"] == "tx-odessa" and r["region"] == "north_america" for r in agent)
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in agent)
    (cancel,) = [r for r in agent if r.get("job_id") == job_id]
    assert cancel["attempt"] == 1 and "cancel" in str(cancel["msg"])

    sched = records(cluster.logs_dir / "scheduler.log")
    assert all(r["process"] == "scheduler" for r in sched)
    connected = [r for r in sched if r.get("agent_id") == "json-1"]
    assert connected and connected[0]["site"] == "tx-odessa"
