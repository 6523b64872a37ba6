"""Scale to zero and back, with real agents: models load on demand, idle ones unload, and no
request fails on the way.

Two agents at one site start with nothing loaded (`--preload ''`): both models are loadable only.
A job for a model no engine holds is placed on a node that can load it; the agent loads it before
the job starts, and the job's timings carry that cold start (`load_ms`). With the model idle past
`scale_to_zero_after_s`, capacity planning unloads it, and the next requests load it again.

One cluster for the module: local Ray, the scheduler actor, two agent processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashserve.admin_client import AdminClient
from hashserve.client import embed_spec
from hashserve.local import AgentPlan, LocalCluster
from hashserve.v1 import admin_pb2, jobs_pb2
from tests.integration.cluster import EMBED, GEN, client, local_cluster, run

pytestmark = pytest.mark.integration

AGENTS = [
    AgentPlan("stz-a", "tx-west-1", "north_america", preload=()),
    AgentPlan("stz-b", "tx-west-1", "north_america", preload=()),
]
IDLE_S = 4.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(
        Path(tmp_path_factory.mktemp("stz")), AGENTS, tick_s=0.2, scale_to_zero_after_s=IDLE_S,
    ) as c:
        yield c


def admin(cluster: LocalCluster) -> AdminClient:
    assert cluster.credentials is not None
    return AdminClient(cluster.address, cluster.credentials.admin_key)


async def _nodes(cluster: LocalCluster) -> list[admin_pb2.Node]:
    async with admin(cluster) as a:
        return list((await a.nodes()).nodes)


async def _until_loaded(cluster: LocalCluster, want: bool, timeout_s: float) -> list[str]:
    """Wait until some node holds MiniLM (want) or none does; the nodes holding it."""
    deadline = time.monotonic() + timeout_s
    holders: list[str] = []
    while time.monotonic() < deadline:
        holders = [n.id for n in await _nodes(cluster) if EMBED in n.loaded_models]
        if bool(holders) == want:
            return holders
        await asyncio.sleep(0.25)
    raise AssertionError(f"MiniLM {'never loaded' if want else 'still loaded at'} {holders}")


async def _embed_all(cluster: LocalCluster, n: int, tag: str) -> list[jobs_pb2.Job]:
    async with client(cluster) as c:
        submitted = [await c.submit(embed_spec(EMBED, [f"{tag} {i}"], "interactive"))
                     for i in range(n)]
        return [await c.wait(s.job.id, timeout_s=120) for s in submitted]


def test_nodes_start_with_nothing_loaded_and_offer_both_models(cluster: LocalCluster) -> None:
    nodes = run(_nodes(cluster))
    assert sorted(n.id for n in nodes) == ["stz-a", "stz-b"]
    for node in nodes:
        assert list(node.loaded_models) == []
        assert EMBED in node.models  # servable: loadable on demand


def test_a_cold_model_loads_for_its_job_then_scales_to_zero_and_back(
    cluster: LocalCluster,
) -> None:
    async def go() -> tuple[list[jobs_pb2.Job], list[str], list[jobs_pb2.Job],
                            list[admin_pb2.Node]]:
        first = await _embed_all(cluster, 1, "cold")
        holders = await _until_loaded(cluster, True, 10.0)
        # Idle past scale_to_zero_after_s: capacity planning unloads it everywhere.
        await _until_loaded(cluster, False, IDLE_S + 15.0)
        again = await _embed_all(cluster, 4, "back")
        await _until_loaded(cluster, True, 5.0)  # as the next heartbeats say
        return first, holders, again, await _nodes(cluster)

    first, holders, again, nodes = run(go())
    assert [j.state for j in first + again] == [jobs_pb2.JOB_STATE_SUCCEEDED] * 5
    cold = first[0]
    assert len(cold.result.embeddings[0].values) == 384
    # The cold start shows in the job's timings: loading before the start, not in the run.
    assert cold.timings.load_ms > 0
    started_after_s = (cold.timings.started_at.ToMicroseconds()
                       - cold.timings.assigned_at.ToMicroseconds()) / 1e6
    assert started_after_s * 1000.0 >= cold.timings.load_ms * 0.9
    assert holders == [cold.node]  # one copy, where its job went: not a second one elsewhere
    # Back from zero: the first of the next jobs paid a load again; all of them answered.
    assert max(j.timings.load_ms for j in again) > 0
    measured = [n.load_s[EMBED] for n in nodes if EMBED in n.load_s]
    assert measured and all(s > 0 for s in measured)


def test_ops_load_and_unload_a_model_on_a_node(cluster: LocalCluster) -> None:
    import grpc

    async def holds(node_id: str, model: str, want: bool, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            node = next(n for n in await _nodes(cluster) if n.id == node_id)
            if (model in node.loaded_models) == want:
                return
            await asyncio.sleep(0.25)
        raise AssertionError(f"{model} on {node_id}: never {'loaded' if want else 'unloaded'}")

    async def go() -> list[grpc.StatusCode]:
        codes = []
        async with admin(cluster) as a:
            node = await a.set_model("stz-b", GEN, True)
            assert GEN in node.loading_models or GEN in node.loaded_models
            await holds("stz-b", GEN, True, 60.0)
            await a.set_model("stz-b", GEN, False)
            await holds("stz-b", GEN, False, 10.0)
            for node_id, model in (("stz-b", "gpt-17"), ("no-such-node", GEN), ("stz-b", "")):
                try:
                    await a.set_model(node_id, model, True)
                except grpc.aio.AioRpcError as err:
                    codes.append(err.code())
        return codes

    assert run(go()) == [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
                         grpc.StatusCode.INVALID_ARGUMENT]
