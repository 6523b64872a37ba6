"""The official `openai` SDK against hashserve's OpenAI-compatible front, end to end.

A local cluster (the scheduler on Ray, with its HTTP front on its own port, and a real agent
running MiniLM and SmolLM2) answers the SDK as it would answer OpenAI: models, embeddings, chat
completions with and without streaming, usage on every response, and OpenAI's errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from hashserve.local import AgentPlan, LocalCluster, free_port
from hashserve.v1 import jobs_pb2
from tests.integration.cluster import EMBED, GEN, client, local_cluster, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, int]]:
    port = free_port()
    agents = [AgentPlan("na-1", "tx-odessa", "north_america")]
    with local_cluster(Path(tmp_path_factory.mktemp("openai")), agents, http_port=port) as c:
        yield c, port


@pytest.fixture(scope="module")
def sdk(cluster: tuple[LocalCluster, int]) -> openai.OpenAI:
    c, port = cluster
    assert c.credentials is not None
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1",
                         api_key=c.credentials.api_key, max_retries=0, timeout=120)


async def answer_of(c: LocalCluster, job_id: str) -> jobs_pb2.Job:
    async with client(c) as cl:
        return await cl.get(job_id)


def test_models_are_listed(sdk: openai.OpenAI) -> None:
    ids = {m.id for m in sdk.models.list()}
    assert {EMBED, GEN} <= ids


def test_embeddings(sdk: openai.OpenAI) -> None:
    got = sdk.embeddings.create(model=EMBED, input=["a GPU at a mining site", "hashprice"])
    assert [d.index for d in got.data] == [0, 1]
    for item in got.data:
        assert len(item.embedding) == 384
        assert math.sqrt(sum(v * v for v in item.embedding)) == pytest.approx(1.0, abs=1e-3)
    assert got.usage.prompt_tokens > 0 and got.usage.total_tokens == got.usage.prompt_tokens


def test_a_chat_completion_and_its_stream(
    sdk: openai.OpenAI, cluster: tuple[LocalCluster, int]
) -> None:
    c, _ = cluster
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name a colour."}]
    whole = sdk.chat.completions.create(model=GEN, messages=messages,
                                        max_tokens=8, temperature=0)
    text = whole.choices[0].message.content
    assert text
    assert whole.usage is not None
    assert 1 <= whole.usage.completion_tokens <= 8 and whole.usage.prompt_tokens > 0
    assert whole.choices[0].finish_reason in ("stop", "length")
    chunks = list(sdk.chat.completions.create(
        model=GEN, messages=messages, max_tokens=8, temperature=0,
        stream=True, stream_options={"include_usage": True},
    ))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # Every token reached the stream: it is the job's whole answer. (It need not be the first
    # request's: the engine reuses the cached prompt, and its sums can flip a near tie.)
    job = run(answer_of(c, chunks[0].id.removeprefix("chatcmpl-")))
    assert streamed == job.result.text and streamed
    usage = [u.usage for u in chunks if u.usage is not None]
    assert usage and usage[-1].completion_tokens == job.result.completion_tokens
    assert chunks[-1].usage is not None and not chunks[-1].choices


def test_hashserve_knobs_and_idempotency(
    sdk: openai.OpenAI, cluster: tuple[LocalCluster, int]
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say yes."},
    ]
    first = sdk.chat.completions.create(
        model=GEN, messages=messages, max_tokens=4, temperature=0,
        extra_body={"tier": "standard", "regions": ["north_america"]},
        extra_headers={"Idempotency-Key": "openai-idem-1"},
    )
    again = sdk.chat.completions.create(
        model=GEN, messages=messages, max_tokens=4, temperature=0,
        extra_body={"tier": "standard", "regions": ["north_america"]},
        extra_headers={"Idempotency-Key": "openai-idem-1"},
    )
    assert again.id == first.id  # the same job, answered again


def test_errors_follow_openais_schema(sdk: openai.OpenAI, cluster: tuple[LocalCluster, int]
                                      ) -> None:
    _, port = cluster
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="hs_wrong",
                      max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert "unknown model" in str(missing.value)
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=GEN, messages=[], max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        sdk.embeddings.create(model=EMBED, input="x", extra_body={"tier": "urgent"})
    raw = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", content=b"{not json",
                     headers={"Authorization": f"Bearer {sdk.api_key}"})
    assert raw.status_code == 400
    assert raw.json()["error"]["type"] == "invalid_request_error"
