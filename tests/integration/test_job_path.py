"""The job path on real parts: gRPC in, the Ray-hosted scheduler, agent processes, real inference.

One cluster for the module: Ray, the scheduler actor and three agents in two regions.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hashserve.client import Client, embed_spec, generate_spec
from hashserve.local import AgentPlan, LocalCluster
from hashserve.v1 import customer_pb2, jobs_pb2
from tests.integration.cluster import EMBED, GEN, client, local_cluster, new_tenant_key, run

pytestmark = pytest.mark.integration

AGENTS = [
    AgentPlan("na-1", "tx-odessa", "north_america"),
    AgentPlan("na-2", "ny-massena", "north_america"),
    AgentPlan("eu-1", "de-leipzig", "europe"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(Path(tmp_path_factory.mktemp("job-path")), AGENTS) as c:
        yield c


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embedding_through_the_whole_path_equals_the_model_run_directly(
    cluster: LocalCluster,
) -> None:
    from node_agent.backends.onnx_embedding import OnnxEmbeddingBackend

    texts = ["Grid operators pay miners to curtail at price spikes.", "A cat sat on the mat."]

    async def go() -> jobs_pb2.Job:
        async with client(cluster) as c:
            resp = await c.submit(embed_spec(EMBED, texts, "interactive"))
            assert resp.job.state == jobs_pb2.JOB_STATE_QUEUED
            return await c.wait(resp.job.id, timeout_s=60)

    job = run(go())
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.site in {a.site for a in AGENTS}
    assert job.node in {a.agent_id for a in AGENTS}
    direct = OnnxEmbeddingBackend().embed(texts).vectors
    assert len(job.result.embeddings) == 2
    for got, want in zip(job.result.embeddings, direct, strict=True):
        assert len(got.values) == 384
        assert _cosine(list(got.values), want) >= 0.999
    assert job.timings.total_ms > 0 and job.timings.run_ms > 0


def test_generation_at_temperature_zero_equals_direct_llama_cpp(cluster: LocalCluster) -> None:
    pytest.importorskip("llama_cpp")
    from node_agent.backends.base import GenerateParams
    from node_agent.backends.llama_cpp_generation import LlamaCppGenerationBackend

    prompt = "Name two uses of waste heat from a data center."

    async def go() -> tuple[jobs_pb2.Job, str]:
        async with client(cluster) as c:
            resp = await c.submit(generate_spec(GEN, prompt, 24, "interactive"))
            streamed: list[str] = []
            final = None
            async for event in c.watch(resp.job.id):
                if event.HasField("tokens"):
                    streamed.append(event.tokens.text)
                else:
                    final = event.job
            assert final is not None
            return final, "".join(streamed)

    job, streamed = run(go())
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
    direct = LlamaCppGenerationBackend().generate(
        GenerateParams(prompt=prompt, max_tokens=24, temperature=0.0),
        lambda _: None,
        lambda: False,
    )
    assert job.result.text == direct.text
    assert job.result.completion_tokens == direct.completion_tokens
    # The watcher saw the tokens as they came, and together they are the answer.
    assert streamed == job.result.text


def test_cancel_stops_a_running_generation(cluster: LocalCluster) -> None:
    pytest.importorskip("llama_cpp")

    async def go() -> jobs_pb2.Job:
        async with client(cluster) as c:
            resp = await c.submit(
                generate_spec(GEN, "Write a long story about a miner.", 500, "interactive")
            )
            async for event in c.watch(resp.job.id):
                if event.HasField("tokens"):
                    break  # it is running and producing tokens
            cancelled = await c.cancel(resp.job.id)
            assert cancelled.state == jobs_pb2.JOB_STATE_CANCELLED
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await c.cancel(resp.job.id)
            assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            await asyncio.sleep(1.0)
            return await c.get(resp.job.id)

    job = run(go())
    assert job.state == jobs_pb2.JOB_STATE_CANCELLED
    assert not job.result.text  # no late result overwrote the cancel


def test_idempotency_key_returns_the_first_job_and_refuses_another_body(
    cluster: LocalCluster,
) -> None:
    async def go() -> None:
        async with client(cluster) as c:
            spec = embed_spec(EMBED, ["same request"], "standard")
            first = await c.submit(spec, idempotency_key="order-17")
            again = await c.submit(spec, idempotency_key="order-17")
            assert again.deduplicated and again.job.id == first.job.id
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.submit(embed_spec(EMBED, ["other"], "standard"), "order-17")
            assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert "order-17" in (err.value.details() or "")

    run(go())


def test_batch_submit_answers_each_job(cluster: LocalCluster) -> None:
    async def go() -> None:
        async with client(cluster) as c:
            resp = await c.submit_many(
                [(embed_spec(EMBED, [f"text {i}"], "standard"), "") for i in range(5)]
            )
            assert len({r.job.id for r in resp.jobs}) == 5
            finals = await asyncio.gather(*(c.wait(r.job.id, 60) for r in resp.jobs))
            assert all(f.state == jobs_pb2.JOB_STATE_SUCCEEDED for f in finals)

    run(go())


def test_region_restricted_job_stays_in_its_region(cluster: LocalCluster) -> None:
    async def go() -> list[jobs_pb2.Job]:
        async with client(cluster) as c:
            resps = [
                await c.submit(embed_spec(EMBED, [f"eu only {i}"], "standard", ["europe"]))
                for i in range(4)
            ]
            return list(await asyncio.gather(*(c.wait(r.job.id, 60) for r in resps)))

    for job in run(go()):
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED
        assert job.region == "europe" and job.site == "de-leipzig"


BAD_INPUTS = [
    ("unknown model", embed_spec("gpt-17", ["x"]), grpc.StatusCode.NOT_FOUND, "unknown model"),
    ("empty texts", embed_spec(EMBED, []), grpc.StatusCode.INVALID_ARGUMENT, "texts is empty"),
    ("blank text", embed_spec(EMBED, ["  "]), grpc.StatusCode.INVALID_ARGUMENT, "texts[0]"),
    (
        "oversized text",
        embed_spec(EMBED, ["x" * 9000]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "characters",
    ),
    (
        "too many texts",
        embed_spec(EMBED, ["x"] * 65),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most 64",
    ),
    (
        "wrong input kind",
        generate_spec(EMBED, "hi"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "embedding model",
    ),
    (
        "too many tokens",
        generate_spec(GEN, "hi", 5000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_tokens",
    ),
    ("empty prompt", generate_spec(GEN, ""), grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty"),
    (
        "unknown region",
        embed_spec(EMBED, ["x"], regions=["mars"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown region",
    ),
    (
        "bad tier",
        jobs_pb2.JobSpec(model=EMBED, embed=jobs_pb2.EmbedInput(texts=["x"]), tier=9),  # type: ignore[arg-type]  # an out-of-range tier on purpose
        grpc.StatusCode.INVALID_ARGUMENT,
        "tier 9",
    ),
    (
        "deadline in the past",
        jobs_pb2.JobSpec(
            model=EMBED,
            embed=jobs_pb2.EmbedInput(texts=["x"]),
            deadline={"seconds": int(time.time()) - 60},
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "deadline",
    ),
]


@pytest.mark.parametrize(
    ("spec", "code", "words"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gets_a_clear_status_and_changes_nothing(
    cluster: LocalCluster, spec: jobs_pb2.JobSpec, code: grpc.StatusCode, words: str
) -> None:
    async def go() -> None:
        async with client(cluster) as c:
            before = await c.list_jobs(page_size=1000)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.submit(spec)
            assert err.value.code() == code
            assert words in (err.value.details() or "")
            after = await c.list_jobs(page_size=1000)
            assert len(after.jobs) == len(before.jobs)

    run(go())


def test_malformed_ids_and_missing_credentials(cluster: LocalCluster) -> None:
    async def go() -> None:
        async with client(cluster) as c:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.get("../etc/passwd")
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.get("job_" + "0" * 32)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        async with Client(cluster.address, "hsk_nope_" + "x" * 30) as stranger:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stranger.models()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with Client(cluster.address, "") as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await anonymous.list_jobs()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    run(go())


def test_a_tenant_cannot_read_watch_or_cancel_another_tenants_job(
    cluster: LocalCluster,
) -> None:
    other_key = new_tenant_key(cluster, "acme")

    async def go() -> None:
        async with client(cluster) as owner, client(cluster, other_key) as other:
            job = (await owner.submit(embed_spec(EMBED, ["private text"], "flex"))).job
            for call in (other.get(job.id), other.cancel(job.id)):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in other.watch(job.id):
                    pass
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await other.list_jobs(page_size=1000)
            assert job.id not in {j.id for j in listed.jobs}
            assert (await owner.get(job.id)).id == job.id

    run(go())


def test_list_jobs_pages_through_everything(cluster: LocalCluster) -> None:
    async def go() -> None:
        async with client(cluster) as c:
            for i in range(3):
                await c.submit(embed_spec(EMBED, [f"page {i}"], "flex"))
            seen: list[str] = []
            token = ""
            while True:
                page = await c.list_jobs(page_size=2, page_token=token)
                seen += [j.id for j in page.jobs]
                token = page.next_page_token
                if not token:
                    break
            everything = await c.list_jobs(page_size=1000)
            assert seen == [j.id for j in everything.jobs]
            assert len(seen) == len(set(seen)) >= 3

    run(go())


def test_health_and_reflection_are_served(cluster: LocalCluster) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def go() -> None:
        async with grpc.aio.insecure_channel(cluster.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            resp = await health.Check(
                health_pb2.HealthCheckRequest(service="hashserve.v1.CustomerService")
            )
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(channel)

            async def one() -> reflection_pb2.ServerReflectionRequest:
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            names: set[str] = set()
            async for r in refl.ServerReflectionInfo(one()):
                names |= {s.name for s in r.list_services_response.service}
            assert {"hashserve.v1.CustomerService", "hashserve.v1.AgentService"} <= names

    run(go())


def test_list_models_shows_prices_and_serving_nodes(cluster: LocalCluster) -> None:
    async def go() -> customer_pb2.ListModelsResponse:
        async with client(cluster) as c:
            return await c.models()

    models = {m.name: m for m in run(go()).models}
    assert models[EMBED].nodes_serving == 3
    assert models[EMBED].embedding_dimensions == 384
    assert {p.tier for p in models[EMBED].prices} == {1, 2, 3}
