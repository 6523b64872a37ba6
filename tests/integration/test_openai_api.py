"""The official `openai` SDK against hashserve's OpenAI-compatible front, end to end.

A local cluster (the scheduler on Ray, with its HTTP front on its own port, and a real agent
running MiniLM and SmolLM2) answers the SDK as it would answer OpenAI: models, embeddings, chat
completions and raw completions with and without streaming, `stop`, `seed`, usage on every
response, OpenAI's errors, a batch end to end, another tenant's files and batches refused, and
the metered usage equal to the accounting's AI revenue.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from hashserve.local import AgentPlan, LocalCluster, free_port
from hashserve.v1 import jobs_pb2
from tests.integration.cluster import (
    EMBED,
    GEN,
    client,
    journal_rows,
    local_cluster,
    new_tenant_key,
    run,
    until,
)

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
    # The second ask started from the prompt the engine kept from the first, and says so.
    details = usage[-1].prompt_tokens_details
    assert details is not None and details.cached_tokens == job.result.cached_prompt_tokens > 0
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


def test_a_raw_completion_streamed_and_not(sdk: openai.OpenAI) -> None:
    whole = sdk.completions.create(model=GEN, prompt="The capital of France is", max_tokens=6,
                                   temperature=0)
    assert whole.object == "text_completion" and whole.choices[0].text
    assert whole.usage is not None and 1 <= whole.usage.completion_tokens <= 6
    # No chat template: the prompt is the text continued, a few tokens long.
    assert whole.usage.prompt_tokens <= 8
    chunks = list(sdk.completions.create(model=GEN, prompt="The capital of France is",
                                         max_tokens=6, temperature=0, stream=True,
                                         stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert streamed == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_stop_max_tokens_and_seed(sdk: openai.OpenAI) -> None:
    counted = sdk.completions.create(model=GEN, prompt="1, 2, 3, 4, 5,", max_tokens=24,
                                     temperature=0)
    text = counted.choices[0].text
    assert "," in text
    stopped = sdk.completions.create(model=GEN, prompt="1, 2, 3, 4, 5,", max_tokens=24,
                                     temperature=0, stop=[","])
    # The text ends before the first stop string, which is not part of it.
    assert stopped.choices[0].text == text[:text.index(",")]
    assert stopped.choices[0].finish_reason == "stop"
    short = sdk.completions.create(model=GEN, prompt="Once upon a time", max_tokens=2,
                                   temperature=0)
    assert short.usage is not None and short.usage.completion_tokens == 2
    assert short.choices[0].finish_reason == "length"
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Write a word."}]
    sampled = [sdk.chat.completions.create(model=GEN, messages=messages, max_tokens=12,
                                           temperature=1.0, seed=seed).choices[0].message.content
               for seed in (11, 11, 12, 13, 14)]
    assert sampled[0] == sampled[1]  # one seed, one answer
    assert len(set(sampled)) > 1  # other seeds sample otherwise


def test_what_is_not_supported_is_a_clear_400(sdk: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError, match="n"):
        sdk.chat.completions.create(model=GEN, messages=messages, n=2)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        sdk.chat.completions.create(model=GEN, messages=messages, logprobs=True)
    with pytest.raises(openai.BadRequestError, match="echo"):
        sdk.completions.create(model=GEN, prompt="x", echo=True)
    with pytest.raises(openai.BadRequestError, match="stop"):
        sdk.completions.create(model=GEN, prompt="x", stop=["a", "b", "c", "d", "e"])


def batch_lines(n: int) -> bytes:
    rows = []
    for i in range(n):
        if i % 4 == 3:
            body: dict[str, object] = {"model": GEN, "max_tokens": 4, "temperature": 0,
                                       "messages": [{"role": "user", "content": f"Say {i}."}]}
        else:
            body = {"model": GEN, "max_tokens": 3, "temperature": 0,
                    "messages": [{"role": "user", "content": f"Count to {i}."}]}
        rows.append({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                     "body": body})
    return "\n".join(json.dumps(r) for r in rows).encode()


def wait_batch(sdk: openai.OpenAI, batch_id: str, timeout_s: float = 300.0) -> openai.types.Batch:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(0.5)
    raise TimeoutError(f"batch {batch_id} did not end within {timeout_s} s")


def test_a_batch_end_to_end(sdk: openai.OpenAI, cluster: tuple[LocalCluster, int]) -> None:
    c, _ = cluster
    uploaded = sdk.files.create(file=("in.jsonl", batch_lines(20)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes > 0
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                               completion_window="24h", metadata={"order": "17"})
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"order": "17"}
    done = wait_batch(sdk, batch.id)
    assert done.status == "completed", done.errors
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (20, 20, 0)
    assert done.output_file_id and done.error_file_id is None
    out = [json.loads(x) for x in sdk.files.content(done.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"req-{i}" for i in range(20))
    jobs = {}
    for o in out:
        assert o["error"] is None and o["response"]["status_code"] == 200
        body = o["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
        assert body["usage"]["completion_tokens"] >= 1
        jobs[o["custom_id"]] = run(answer_of(c, o["response"]["request_id"]))
    # Each line ran as flex work, due at the window's end, and answered with its job's text.
    for o in out:
        job = jobs[o["custom_id"]]
        assert job.spec.tier == jobs_pb2.TIER_FLEX
        assert job.result.text == o["response"]["body"]["choices"][0]["message"]["content"]
        assert job.spec.deadline.seconds == done.expires_at
    assert done.id in {b.id for b in sdk.batches.list()}


def test_a_bad_batch_fails_naming_its_lines_and_a_cancel_ends_one(sdk: openai.OpenAI) -> None:
    bad = (batch_lines(2).decode() + "\n{oops\n"
           + json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "gpt-9", "messages": [
                             {"role": "user", "content": "x"}]}})).encode()
    failed = wait_batch(sdk, sdk.batches.create(
        input_file_id=sdk.files.create(file=("bad.jsonl", bad), purpose="batch").id,
        endpoint="/v1/chat/completions", completion_window="24h").id)
    assert failed.status == "failed" and failed.errors is not None
    assert {(e.line, e.code) for e in failed.errors.data or []} == {
        (3, "invalid_json_line"), (4, "invalid_request")}
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        sdk.batches.create(input_file_id=failed.input_file_id, endpoint="/v1/chat/completions",
                           completion_window="1h")  # type: ignore[arg-type]
    big = sdk.files.create(file=("big.jsonl", batch_lines(200)), purpose="batch")
    batch = sdk.batches.create(input_file_id=big.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    ended = wait_batch(sdk, batch.id)
    assert ended.status == "cancelled" and ended.request_counts is not None
    assert ended.request_counts.completed < 200
    if ended.error_file_id:
        errors = sdk.files.content(ended.error_file_id).text.splitlines()
        assert any(json.loads(e)["error"] and json.loads(e)["error"]["code"] == "batch_cancelled"
                   for e in errors)


def test_another_tenants_files_and_batches_are_not_found(
    sdk: openai.OpenAI, cluster: tuple[LocalCluster, int]
) -> None:
    c, port = cluster
    mine = sdk.files.create(file=("mine.jsonl", batch_lines(1)), purpose="batch")
    batch = sdk.batches.create(input_file_id=mine.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    other = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1",
                          api_key=new_tenant_key(c, "globex"), max_retries=0)
    for call in (lambda: other.files.retrieve(mine.id), lambda: other.files.content(mine.id),
                 lambda: other.files.delete(mine.id), lambda: other.batches.retrieve(batch.id),
                 lambda: other.batches.cancel(batch.id),
                 lambda: other.batches.create(input_file_id=mine.id,
                                              endpoint="/v1/chat/completions",
                                              completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert mine.id not in {f.id for f in other.files.list()}
    assert batch.id not in {b.id for b in other.batches.list()}
    assert sdk.files.retrieve(mine.id).id == mine.id  # still there for its owner
    with pytest.raises(openai.BadRequestError, match="purpose"):
        sdk.files.create(file=("x.jsonl", b"{}"), purpose="fine-tune")
    wait_batch(sdk, batch.id)


def test_metered_usage_is_the_accountings_ai_revenue(
    sdk: openai.OpenAI, cluster: tuple[LocalCluster, int]
) -> None:
    c, port = cluster
    sdk.embeddings.create(model=EMBED, input=["metered text"])

    def usage_usd() -> float:
        rows = httpx.get(f"http://127.0.0.1:{port}/v1/usage",
                         headers={"Authorization": f"Bearer {sdk.api_key}"}).json()["data"]
        assert {r["model"] for r in rows} >= {EMBED}
        assert all(r["prompt_tokens"] > 0 for r in rows)
        return float(sum(r["charged_usd"] for r in rows))

    async def ai_revenue_usd() -> float:
        import grpc

        from hashserve.v1 import admin_pb2, admin_pb2_grpc
        async with grpc.aio.insecure_channel(c.address) as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            assert c.credentials is not None
            reply = await stub.GetAccounting(
                admin_pb2.GetAccountingRequest(),
                metadata=(("authorization", f"Bearer {c.credentials.admin_key}"),))
        return float(sum(r.ai_revenue_usd for r in reply.rows))

    # The other tenant's jobs are metered as theirs; this cluster's accounting holds all
    # tenants, so compare the whole: this tenant's usage plus globex's (no jobs of its own).
    until(lambda: abs(run(ai_revenue_usd()) - usage_usd()) < 1e-12, 60.0,
          "the accounting to book the metered charges")
    # The admin CLI reads the same usage, as CSV, for one tenant and a date range.
    assert c.credentials is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSERVE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "hashserve", "admin", "usage", "--tenant", c.credentials.tenant,
         "--from", "2020-01-01", "--csv", "--scheduler", c.address,
         "--admin-key", c.credentials.admin_key],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert {r["tenant"] for r in rows} == {c.credentials.tenant}
    assert sum(float(r["charged_usd"]) for r in rows) == pytest.approx(usage_usd(), rel=1e-9)
    assert any(r["model"] == EMBED and int(r["prompt_tokens"]) > 0 for r in rows)


def test_fifty_thousand_lines_are_validated_before_any_runs(
    sdk: openai.OpenAI, cluster: tuple[LocalCluster, int]
) -> None:
    c, _ = cluster
    rows = [json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                        "body": {"model": EMBED, "input": f"text {i}"}}) for i in range(49_999)]
    # The last line asks for more texts than one job takes: only the scheduler's own check
    # (the catalogue's max_batch) can tell, so every line went through it.
    rows.append(json.dumps({"custom_id": "last", "method": "POST", "url": "/v1/embeddings",
                            "body": {"model": EMBED, "input": ["x"] * 65}}))
    uploaded = sdk.files.create(file=("big.jsonl", "\n".join(rows).encode()), purpose="batch")
    jobs_before = len(journal_rows(c, "SELECT job_id FROM jobs"))
    failed = wait_batch(sdk, sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h").id)
    assert failed.status == "failed" and failed.errors is not None
    assert [(e.line, e.code) for e in failed.errors.data or []] == [(50_000, "invalid_request")]
    assert "at most 64" in str((failed.errors.data or [])[0].message)
    assert failed.request_counts is not None and failed.request_counts.total == 50_000
    assert len(journal_rows(c, "SELECT job_id FROM jobs")) == jobs_before  # nothing ran


@pytest.fixture(scope="module")
def front(cluster: tuple[LocalCluster, int], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[int]:
    """Two front processes (`hashserve front --http-port`) sharing one HTTP port before the
    cluster's scheduler: the HTTP port they serve."""
    c, port = cluster
    grpc_port, http_port = free_port(), free_port()
    log = open(tmp_path_factory.mktemp("front") / "front.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "hashserve", "front", "--scheduler", c.address,
         "--port", str(grpc_port), "--http-port", str(http_port), "--processes", "2",
         "--scheduler-http", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                reply = httpx.get(f"http://127.0.0.1:{http_port}/v1/models", timeout=5)
                return reply.status_code == 401
            except httpx.HTTPError:
                return False

        until(up, 60, "the fronts' HTTP port")
        yield http_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_the_sdk_through_front_processes(
    sdk: openai.OpenAI, cluster: tuple[LocalCluster, int], front: int
) -> None:
    """The same SDK calls against the fronts: submits batched into the leader, answers watched
    from it, the Batch API passed on to its HTTP port; its errors unchanged."""
    c, _ = cluster
    base = f"http://127.0.0.1:{front}/v1"
    via = openai.OpenAI(base_url=base, api_key=sdk.api_key, max_retries=0, timeout=120)
    assert {EMBED, GEN} <= {m.id for m in via.models.list()}
    got = via.embeddings.create(model=EMBED, input=["a front before the leader"])
    assert len(got.data[0].embedding) == 384 and got.usage.prompt_tokens > 0
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name a fruit."}]
    chunks = list(via.chat.completions.create(
        model=GEN, messages=messages, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    streamed = "".join(x.choices[0].delta.content or "" for x in chunks if x.choices)
    job = run(answer_of(c, chunks[0].id.removeprefix("chatcmpl-")))
    assert streamed == job.result.text and streamed
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == job.result.completion_tokens
    # Idempotency holds through the front: the same key is the same job.
    first = via.embeddings.create(model=EMBED, input=["once"],
                                  extra_headers={"Idempotency-Key": "front-http-1"})
    again = via.embeddings.create(model=EMBED, input=["once"],
                                  extra_headers={"Idempotency-Key": "front-http-1"})
    assert first.data[0].embedding == again.data[0].embedding
    keys = journal_rows(c, "SELECT job_id FROM jobs WHERE idempotency_key = ?",
                        ("front-http-1",))
    assert len(keys) == 1
    # The errors: a bad key (the leader's refusal, passed back), an unknown model (the front's
    # own validation), a body that is not JSON.
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="hs_wrong", max_retries=0).models.list()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="hs_wrong", max_retries=0).embeddings.create(
            model=EMBED, input="x")
    with pytest.raises(openai.NotFoundError) as missing:
        via.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert "unknown model" in str(missing.value)
    raw = httpx.post(f"{base}/embeddings", content=b"{not json",
                     headers={"Authorization": f"Bearer {sdk.api_key}"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    # The Batch API and usage, passed on to the leader's own HTTP port.
    uploaded = via.files.create(file=("via-front.jsonl", batch_lines(3)), purpose="batch")
    assert sdk.files.retrieve(uploaded.id).bytes == uploaded.bytes
    batch = via.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    done = wait_batch(via, batch.id)
    assert done.status == "completed" and done.output_file_id
    lines = via.files.content(done.output_file_id).text.splitlines()
    assert sorted(json.loads(x)["custom_id"] for x in lines) == ["req-0", "req-1", "req-2"]
    usage = httpx.get(f"{base}/usage", headers={"Authorization": f"Bearer {sdk.api_key}"})
    assert usage.status_code == 200 and usage.json()["data"]
    with pytest.raises(openai.NotFoundError):
        via.batches.retrieve("batch_" + "0" * 24)


def test_a_batch_resumes_after_the_scheduler_dies(
    sdk: openai.OpenAI, cluster: tuple[LocalCluster, int], front: int
) -> None:
    """Last in the module: it kills the scheduler. Ray restarts it; the batch goes on from the
    journal, and each line still has exactly one job. The fronts find the new scheduler."""
    from tests.chaos.harness import wait_serving

    c, port = cluster
    uploaded = sdk.files.create(file=("resume.jsonl", batch_lines(40)), purpose="batch")
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                               completion_window="24h")

    def some_done() -> bool:
        counts = sdk.batches.retrieve(batch.id).request_counts
        return counts is not None and 0 < counts.completed < 40

    until(some_done, 120.0, "the batch to be part done")
    supervisor = c.supervisor
    assert supervisor is not None
    pid = int(supervisor.info["pid"])  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGKILL)
    until(lambda: int(supervisor.info["pid"]) != pid, 90, "Ray to restart the scheduler")  # type: ignore[attr-defined]
    run(wait_serving(c.address))
    until(lambda: httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={
        "Authorization": f"Bearer {sdk.api_key}"}).status_code == 200, 60, "the HTTP front")
    via = openai.OpenAI(base_url=f"http://127.0.0.1:{front}/v1", api_key=sdk.api_key,
                        max_retries=0, timeout=120)

    def front_serves() -> bool:
        try:
            return len(via.embeddings.create(model=EMBED, input=["after"]).data) == 1
        except openai.APIError:
            return False

    until(front_serves, 60, "the fronts to find the restarted scheduler")
    done = wait_batch(sdk, batch.id)
    assert done.status == "completed" and done.output_file_id
    assert done.request_counts is not None and done.request_counts.completed == 40
    out = [json.loads(x) for x in sdk.files.content(done.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"req-{i}" for i in range(40))
    keys = journal_rows(c, "SELECT idempotency_key FROM jobs WHERE idempotency_key LIKE ?",
                        (f"{batch.id}:%",))
    assert len(keys) == 40 == len({k for (k,) in keys})  # one job per line, none twice
