"""The README's `--backend llama-70b=openai:URL:smollm2-135m-instruct`, end to end: a model offered
by a catalogue file, with no code change.

Real processes, started once for the module: llama-cpp-python's OpenAI-compatible server serving
SmolLM2 under its catalogue name (`tests/integration/llama_server.py`, as the backend tests start
it), then a local cluster (Ray, the scheduler actor with its OpenAI-compatible front, one agent)
whose scheduler reads a catalogue file declaring two generation models, and whose agent, an
`l40s` node, serves both through that server:
- `llama-70b`, with its own memory, prices and accelerator kinds (`l40s` among them): it is
  listed with those prices and answers over gRPC and through the official `openai` SDK;
- `llama-405b`, limited to `h100` nodes: the agent serves it, but its jobs are never placed there.
  The scheduler keeps such a job queued (a node of its kind may join) until its deadline, and the
  job then expires saying which filter refused every node.
Stand-ins for the real thing: a vLLM or SGLang endpoint would take the llama server's place.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from hashserve.client import generate_spec
from hashserve.local import AgentPlan, LocalCluster, free_port
from hashserve.v1 import customer_pb2, jobs_pb2
from tests.integration.cluster import client, journal_rows, local_cluster, run
from tests.integration.llama_server import SERVED_MODEL, llama_server

pytestmark = [pytest.mark.integration, pytest.mark.llm]

BIG = "llama-70b"
H100_ONLY = "llama-405b"
AGENT_KIND = "l40s"
# Prices and a latency target of its own on two tiers; flex left to the generation defaults.
BIG_TIERS = {
    "interactive": {"usd_per_million_tokens": 0.9, "latency_target_s": 20},
    "standard": {"usd_per_million_tokens": 0.6},
}
CATALOGUE = {
    "version": 1,
    "models": [
        {"name": BIG, "kind": "generation", "max_input_tokens": 2048, "max_output_tokens": 256,
         "memory_mb": 8192,  # the agent offers 16384 (hashserve agent's --gpu-memory-mb)
         "accelerators": ["h100", AGENT_KIND], "tiers": BIG_TIERS},
        {"name": H100_ONLY, "kind": "generation", "max_input_tokens": 2048,
         "max_output_tokens": 256, "memory_mb": 8192, "accelerators": ["h100"]},
    ],
}


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, server_url: str
) -> Iterator[tuple[LocalCluster, int]]:
    workdir = Path(tmp_path_factory.mktemp("catalogue"))
    catalogue_path = workdir / "catalogue.yaml"
    catalogue_path.write_text(yaml.safe_dump(CATALOGUE, sort_keys=False))
    agent = AgentPlan(
        "l40s-1", "tx-odessa", "north_america", gpu_kind=AGENT_KIND,
        backends=tuple(f"{m}=openai:{server_url}:{SERVED_MODEL}" for m in (BIG, H100_ONLY)),
    )
    http_port = free_port()
    with local_cluster(workdir, [agent], http_port=http_port,
                       catalogue_path=str(catalogue_path)) as c:
        yield c, http_port


@pytest.fixture(scope="module")
def sdk(cluster: tuple[LocalCluster, int]) -> openai.OpenAI:
    c, port = cluster
    assert c.credentials is not None
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1",
                         api_key=c.credentials.api_key, max_retries=0, timeout=120)


def test_list_models_is_the_catalogue_file_with_its_prices(
    cluster: tuple[LocalCluster, int],
) -> None:
    c, _ = cluster

    async def go() -> list[customer_pb2.Model]:
        async with client(c) as cl:
            return list((await cl.models()).models)

    models = {m.name: m for m in run(go())}
    # The file is the whole catalogue: the embedded models are not offered by this one.
    assert list(models) == [BIG, H100_ONLY]
    big = models[BIG]
    assert big.kind == jobs_pb2.MODEL_KIND_GENERATION
    assert (big.max_input_tokens, big.max_output_tokens) == (2048, 256)
    assert big.nodes_serving == 1 and models[H100_ONLY].nodes_serving == 1
    assert list(models[H100_ONLY].accelerators) == ["h100"]
    prices = {p.tier: (p.usd_per_million_tokens, p.latency_target_s) for p in big.prices}
    assert prices == {
        # The example fleet file prices only the embedded models, so the catalogue's stand.
        jobs_pb2.TIER_INTERACTIVE: (0.9, 20.0),
        jobs_pb2.TIER_STANDARD: (0.6, 120.0),  # latency target: the generation default
        jobs_pb2.TIER_FLEX: (0.08, 3600.0),  # the whole tier: the generation defaults
    }


def test_a_generation_for_llama_70b_over_grpc(cluster: tuple[LocalCluster, int]) -> None:
    c, _ = cluster

    async def go() -> jobs_pb2.Job:
        async with client(c) as cl:
            resp = await cl.submit(generate_spec(BIG, "Name a colour.", 12, "interactive"))
            return await cl.wait(resp.job.id, timeout_s=120)

    job = run(go())
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.node == "l40s-1" and job.spec.model == BIG
    assert job.result.text.strip()
    assert job.result.prompt_tokens > 0 and 1 <= job.result.completion_tokens <= 12
    # Usage is counted where charges are made from: the journal's tokens for the job.
    [(tokens_used,)] = journal_rows(c, "SELECT tokens_used FROM jobs WHERE job_id = ?", (job.id,))
    assert tokens_used == job.result.prompt_tokens + job.result.completion_tokens


def test_the_openai_sdk_lists_and_asks_for_llama_70b(sdk: openai.OpenAI) -> None:
    assert {BIG, H100_ONLY} <= {m.id for m in sdk.models.list()}
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
    whole = sdk.chat.completions.create(model=BIG, messages=messages, max_tokens=8,
                                        temperature=0)
    assert whole.model == BIG
    assert whole.choices[0].message.content
    assert whole.usage is not None
    assert whole.usage.prompt_tokens > 0 and 1 <= whole.usage.completion_tokens <= 8
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_a_model_for_other_accelerators_is_never_placed_on_this_node(
    cluster: tuple[LocalCluster, int],
) -> None:
    c, _ = cluster
    deadline_s = time.time() + 8.0
    limited = generate_spec(H100_ONLY, "Name a colour.", 8, "interactive")
    limited.deadline.FromNanoseconds(int(deadline_s * 1e9))

    async def go() -> tuple[jobs_pb2.Job, jobs_pb2.Job, jobs_pb2.Job]:
        async with client(c) as cl:
            refused = (await cl.submit(limited)).job.id
            # Submitted after it, to the same node, and done while it waits: the node had room.
            done = await cl.wait(
                (await cl.submit(generate_spec(BIG, "Say hi.", 4, "interactive"))).job.id,
                timeout_s=120,
            )
            waiting = await cl.get(refused)
            return done, waiting, await cl.wait(refused, timeout_s=60)

    done, waiting, ended = run(go())
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error
    if time.time() < deadline_s:  # (the assertion means something only before the deadline)
        assert waiting.state == jobs_pb2.JOB_STATE_QUEUED
    assert waiting.attempt == 0 and waiting.node == ""
    # Queued until its deadline, never assigned, then expired with the placer's reason.
    assert ended.state == jobs_pb2.JOB_STATE_EXPIRED
    assert ended.attempt == 0 and ended.node == ""
    assert ended.error == (
        "deadline passed before it finished; no node would take it: "
        f"accelerator_allowed: {H100_ONLY} runs only on accelerator kinds h100"
    )
