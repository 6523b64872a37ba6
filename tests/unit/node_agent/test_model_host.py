"""ModelHost: loads shared by concurrent callers, memory checks that refuse with the reason,
unloads refused while jobs use the model; and the agent's hello, heartbeats and jobs over it.

The backends here are small fakes from an injected builder: what is tested is the host's
bookkeeping, not an engine."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from hashserve.v1 import agent_pb2, jobs_pb2
from node_agent.backends.base import EmbedOutput
from node_agent.backends.host import (
    MIB,
    ModelHost,
    ModelLoadFailed,
    ModelLoadRefused,
    ModelNotServable,
    estimate_model_bytes,
    memory_refusal,
    parse_meminfo_available_bytes,
    resolve_preload,
)
from node_agent.backends.registry import Backend, BackendKind, BackendSpec, parse_backend_specs
from node_agent.metrics import AgentMetrics
from node_agent.runtime import NodeAgent
from node_agent.settings import AgentSettings

GEN = "smollm2-135m-instruct"
EMB = "all-minilm-l6-v2"
REMOTE = "remote-7b"
SPECS = parse_backend_specs([
    f"{EMB}=onnx", f"{GEN}=llama-cpp", f"{REMOTE}=openai:http://127.0.0.1:9/v1",
])


class FakeBackend:
    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.closed = False
        self.can_resume = model_name == GEN

    def embed(self, texts: list[str]) -> EmbedOutput:
        return EmbedOutput(vectors=[[1.0, 0.0] for _ in texts], prompt_tokens=len(texts))

    def prefix_blocks(self) -> list[int]:
        return [len(self.model_name)]

    def close(self) -> None:
        self.closed = True


class Builder:
    """Builds fakes, counting builds; `gate` (when given) holds each build until it is set."""

    def __init__(self, gate: threading.Event | None = None, fail: str | None = None) -> None:
        self.gate = gate
        self.fail = fail
        self.built: list[str] = []
        self.backends: dict[str, FakeBackend] = {}

    def __call__(self, spec: BackendSpec) -> Backend:
        if self.gate is not None:
            assert self.gate.wait(10), "the test never let the build go"
        self.built.append(spec.model_name)
        if spec.model_name == self.fail:
            raise FileNotFoundError(f"no file for {spec.model_name}")
        backend = FakeBackend(spec.model_name)
        self.backends[spec.model_name] = backend
        return backend


def sizes_mib(**by_model: float) -> Callable[[BackendSpec], int | None]:
    """A file-size function: each model's file, in MiB (keys with '_' for '-')."""
    sizes = {k.replace("_", "-"): int(v * MIB) for k, v in by_model.items()}
    return lambda spec: sizes.get(spec.model_name)


def make_host(
    build: Builder,
    free_mib: float | None = 100_000,
    model_memory_mib: float = 0.0,
    files: Callable[[BackendSpec], int | None] | None = None,
    metrics: AgentMetrics | None = None,
) -> ModelHost:
    free = None if free_mib is None else int(free_mib * MIB)
    return ModelHost(
        SPECS, build, model_memory_mib=model_memory_mib, prefix_cache_bytes=0,
        free_memory=lambda: free, file_bytes=files or sizes_mib(), metrics=metrics,
    )


def make_metrics() -> AgentMetrics:
    return AgentMetrics(agent_id="n1", site="s", region="r", gpu_kind="cpu",
                        models=sorted(SPECS))


def settings(**values: object) -> AgentSettings:
    return AgentSettings.model_validate({"token": "t", **values})


def sample(m: AgentMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


# ----- the memory estimate and check (pure) ----------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "file_mib", "prefix_mib", "expected_mib"),
    [
        (BackendKind.LLAMA_CPP, 100, 64, 100 * 1.2 + 64),
        (BackendKind.LLAMA_CPP, 100, 0, 120),
        (BackendKind.ONNX, 22, 64, 44),  # no prompt states in an ONNX model
        (BackendKind.OPENAI, 0, 64, 0),  # the model is in another server
    ],
)
def test_estimate_model_bytes(
    kind: BackendKind, file_mib: float, prefix_mib: float, expected_mib: float
) -> None:
    got = estimate_model_bytes(kind, int(file_mib * MIB), int(prefix_mib * MIB))
    assert got == pytest.approx(expected_mib * MIB, abs=1)


def test_memory_refusal() -> None:
    needs = 612 * MIB
    assert memory_refusal("m", needs, 380 * MIB) == (
        "not enough memory for m: needs 612 MiB, 380 MiB free")
    assert memory_refusal("m", needs, 700 * MIB) is None
    assert memory_refusal("m", needs, None) is None  # the host's memory is not known: no check
    assert memory_refusal("m", 0, 0) is None  # a remote model needs nothing here
    # The budget, less what loaded models hold, limits too.
    assert memory_refusal("m", needs, None, budget_bytes=1024 * MIB, held_bytes=500 * MIB) == (
        "not enough memory for m: needs 612 MiB, 524 MiB free of the 1024 MiB model memory "
        "budget")
    assert memory_refusal("m", needs, 10_000 * MIB, 1024 * MIB, 100 * MIB) is None
    assert "0 MiB free" in (memory_refusal("m", needs, None, 100 * MIB, 300 * MIB) or "")


def test_parse_meminfo() -> None:
    text = "MemTotal:       16318412 kB\nMemFree:  1000 kB\nMemAvailable:    8000000 kB\n"
    assert parse_meminfo_available_bytes(text) == 8_000_000 * 1024
    assert parse_meminfo_available_bytes("MemTotal: 1 kB\n") is None


def test_resolve_preload() -> None:
    servable = [EMB, GEN]
    assert resolve_preload(None, servable) == servable  # today's behaviour: all of them
    assert resolve_preload([], servable) == []
    assert resolve_preload([GEN, GEN], servable) == [GEN]
    with pytest.raises(ValueError, match="without a backend here: qwen, llama-70b"):
        resolve_preload([GEN, "qwen", "llama-70b"], servable)


def test_settings_preload_and_budget() -> None:
    assert settings().preload is None
    assert settings().model_memory_mib == 0
    assert settings(preload=[f"{EMB}, {GEN}", "x"]).preload == [EMB, GEN, "x"]
    assert settings(preload=[""]).preload == []  # `--preload ''`: none
    with pytest.raises(ValueError):
        settings(model_memory_mib=-1)


# ----- loading ---------------------------------------------------------------------------------


def test_concurrent_callers_share_one_load() -> None:
    gate = threading.Event()
    build = Builder(gate)
    host = make_host(build)

    async def go() -> None:
        callers = [asyncio.create_task(host.ensure_loaded(GEN)) for _ in range(3)]
        await asyncio.sleep(0.05)
        # The build holds a thread, not the loop: this coroutine runs, and sees the load.
        assert host.loading_models() == [GEN]
        assert host.loaded_models() == [] and GEN in host.loadable_models()
        gate.set()
        waited = await asyncio.gather(*callers)
        assert all(w >= 0.05 for w in waited)
        assert await host.ensure_loaded(GEN) == 0.0  # loaded now: no wait

    asyncio.run(go())
    assert build.built == [GEN]
    assert host.loaded_models() == [GEN] and host.loading_models() == []
    assert GEN not in host.loadable_models()
    assert set(host.load_seconds()) == {GEN}


def test_refused_when_memory_is_short_and_recorded() -> None:
    build = Builder()
    metrics = make_metrics()
    # 510 MiB of GGUF needs 612 MiB (no prompt-state budget here).
    host = make_host(build, free_mib=380, files=sizes_mib(smollm2_135m_instruct=510),
                     metrics=metrics)
    message = f"not enough memory for {GEN}: needs 612 MiB, 380 MiB free"
    with pytest.raises(ModelLoadRefused, match=message):
        asyncio.run(host.ensure_loaded(GEN))
    assert build.built == []  # refused before anything was built
    assert host.failures() == {GEN: message}
    assert host.loaded_models() == [] and host.loading_models() == []
    assert sample(metrics, "hashserve_agent_model_loads_total", model=GEN,
                  outcome="refused") == 1
    # A remote model takes no memory here: it loads.
    asyncio.run(host.ensure_loaded(REMOTE))
    assert host.loaded_models() == [REMOTE]


def test_successful_load_clears_the_failure_and_counts() -> None:
    build = Builder()
    metrics = make_metrics()
    free = {"mib": 380.0}
    host = ModelHost(SPECS, build, prefix_cache_bytes=0,
                     free_memory=lambda: int(free["mib"] * MIB),
                     file_bytes=sizes_mib(smollm2_135m_instruct=510), metrics=metrics)
    with pytest.raises(ModelLoadRefused):
        host.load_blocking(GEN)
    free["mib"] = 4096
    assert host.load_blocking(GEN) >= 0.0
    assert host.failures() == {}
    assert sample(metrics, "hashserve_agent_model_loaded", model=GEN) == 1
    assert sample(metrics, "hashserve_agent_model_loads_total", model=GEN, outcome="loaded") == 1
    assert sample(metrics, "hashserve_agent_model_load_seconds_count", model=GEN) == 1
    assert host.unload(GEN) is None
    assert sample(metrics, "hashserve_agent_model_loaded", model=GEN) == 0


def test_budget_counts_the_loaded_models() -> None:
    build = Builder()
    files = sizes_mib(all_minilm_l6_v2=30, smollm2_135m_instruct=50)  # 60 and 60 MiB
    host = make_host(build, model_memory_mib=100, files=files)
    host.load_blocking(EMB)
    with pytest.raises(ModelLoadRefused,
                       match="needs 60 MiB, 40 MiB free of the 100 MiB model memory budget"):
        host.load_blocking(GEN)
    assert host.unload(EMB) is None
    host.load_blocking(GEN)
    assert host.loaded_models() == [GEN]


def test_failed_build_raises_and_is_recorded() -> None:
    build = Builder(fail=GEN)
    metrics = make_metrics()
    host = make_host(build, metrics=metrics)
    with pytest.raises(ModelLoadFailed, match=f"loading {GEN} \\(llama-cpp\\) failed: "
                       f"FileNotFoundError: no file for {GEN}"):
        asyncio.run(host.ensure_loaded(GEN))
    assert "FileNotFoundError" in host.failures()[GEN]
    assert sample(metrics, "hashserve_agent_model_loads_total", model=GEN, outcome="failed") == 1
    assert host.loading_models() == [] and GEN in host.loadable_models()


def test_unknown_model_is_named() -> None:
    host = make_host(Builder())
    with pytest.raises(ModelNotServable, match="this agent does not serve qwen-72b"):
        asyncio.run(host.ensure_loaded("qwen-72b"))
    with pytest.raises(ModelNotServable, match="qwen-72b"):
        host.unload("qwen-72b")
    with pytest.raises(ModelNotServable, match="qwen-72b"), host.in_use("qwen-72b"):
        pass


def test_preload_loads_the_named_and_drops_optional_failures() -> None:
    build = Builder(fail=GEN)
    host = make_host(build)
    host.preload([EMB, GEN], optional_errors=(FileNotFoundError,))
    assert host.loaded_models() == [EMB]
    assert not host.is_servable(GEN) and host.failures() == {}  # left out, as today
    with pytest.raises(ModelLoadFailed):
        make_host(Builder(fail=GEN)).preload([GEN])  # asked for by name: the start fails


# ----- unloading -------------------------------------------------------------------------------


def test_unload_refused_while_in_use_then_allowed() -> None:
    build = Builder()
    host = make_host(build)
    host.load_blocking(EMB)
    with host.in_use(EMB):
        with host.in_use(EMB):
            assert host.unload(EMB) == f"{EMB} is in use by 2 jobs"
        assert host.unload(EMB) == f"{EMB} is in use by 1 job"
        assert host.loaded_models() == [EMB]
    assert host.unload(EMB) is None
    assert build.backends[EMB].closed
    assert host.loaded_models() == [] and EMB in host.loadable_models()
    assert host.unload(EMB) is None  # not loaded: nothing to do
    host.load_blocking(EMB)  # and it loads again
    assert build.built == [EMB, EMB]


def test_unload_refused_while_loading() -> None:
    gate = threading.Event()
    host = make_host(Builder(gate))

    async def go() -> None:
        load = asyncio.create_task(host.ensure_loaded(EMB))
        await asyncio.sleep(0.02)
        assert host.unload(EMB) == f"{EMB} is loading now"
        gate.set()
        await load

    asyncio.run(go())
    assert host.loaded_models() == [EMB]


def test_backends_built_elsewhere_serve_until_unloaded() -> None:
    fake = FakeBackend(EMB)
    host = ModelHost.of_built({EMB: fake})
    assert host.loaded_models() == [EMB] and host.loadable_models() == []
    assert asyncio.run(host.ensure_loaded(EMB)) == 0.0
    assert host.unload(EMB) is None and fake.closed
    assert not host.is_servable(EMB)


# ----- the agent over a host ---------------------------------------------------------------------


def make_agent(host: ModelHost | dict[str, Backend]) -> NodeAgent:
    return NodeAgent(settings(state_dir=None), host)


def embed_assignment(job_id: str, model: str) -> agent_pb2.Assignment:
    return agent_pb2.Assignment(
        ref=agent_pb2.AttemptRef(job_id=job_id, attempt=1),
        spec=jobs_pb2.JobSpec(model=model, embed=jobs_pb2.EmbedInput(texts=["a", "b"])),
    )


def test_agent_constructor_takes_built_backends_as_before() -> None:
    agent = make_agent({EMB: FakeBackend(EMB)})
    hello = agent._hello()
    assert list(hello.models) == [EMB] and list(hello.loadable_models) == []
    assert agent.backends.keys() == {EMB}


def test_hello_and_heartbeat_report_what_is_loaded() -> None:
    host = make_host(Builder(fail=REMOTE))
    host.load_blocking(GEN)
    with pytest.raises(ModelLoadFailed):
        host.load_blocking(REMOTE)
    agent = make_agent(host)
    hello = agent._hello()
    assert list(hello.models) == [GEN]
    assert list(hello.loadable_models) == [EMB, REMOTE]
    assert list(hello.resumable_models) == [GEN]
    beat = agent._heartbeat(1.0)
    assert list(beat.loaded_models) == [GEN] and list(beat.loading_models) == []
    assert [f.model for f in beat.load_failures] == [REMOTE]
    assert "FileNotFoundError" in beat.load_failures[0].reason
    assert set(beat.load_s) == {GEN}
    assert list(beat.prefix_blocks) == [len(GEN)]  # from loaded backends only


def test_job_waits_for_its_model_and_reports_the_load_apart() -> None:
    gate = threading.Event()
    host = make_host(Builder(gate))
    agent = make_agent(host)

    async def go() -> list[agent_pb2.AgentMessage]:
        up: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        agent._up = up
        agent._start(embed_assignment("j1", EMB))
        await asyncio.sleep(0.15)
        assert up.empty()  # not started before its model is loaded
        assert agent._heartbeat(1.0).running[0].job_id == "j1"  # its lease is kept meanwhile
        assert list(agent._heartbeat(1.0).loading_models) == [EMB]
        assert host.unload(EMB) == f"{EMB} is loading now"
        assert host.users(EMB) == 1  # and the job holds it, from before the load
        gate.set()
        job = agent._running[("j1", 1)]
        assert job.task is not None
        await job.task
        return [up.get_nowait() for _ in range(up.qsize())]

    sent = asyncio.run(go())
    assert [m.WhichOneof("msg") for m in sent] == ["started", "outcome"]
    outcome = sent[1].outcome
    assert outcome.WhichOneof("outcome") == "result" and len(outcome.result.embeddings) == 2
    assert outcome.load_ms >= 150
    assert outcome.run_ms < outcome.load_ms  # the run's timer starts after the load
    assert host.unload(EMB) is None  # the job let go


def test_job_fails_with_the_refusal() -> None:
    host = make_host(Builder(), free_mib=10, files=sizes_mib(all_minilm_l6_v2=30))
    agent = make_agent(host)

    async def go() -> agent_pb2.JobOutcome:
        up: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        agent._up = up
        agent._start(embed_assignment("j2", EMB))
        task = agent._running[("j2", 1)].task
        assert task is not None
        await task
        (msg,) = [up.get_nowait() for _ in range(up.qsize())]
        return msg.outcome

    outcome = asyncio.run(go())
    assert outcome.error == (
        f"ModelLoadRefused: not enough memory for {EMB}: needs 60 MiB, 10 MiB free")
    assert outcome.run_ms == 0


def test_load_and_unload_on_command() -> None:
    host = make_host(Builder())
    agent = make_agent(host)

    async def go() -> None:
        agent._on_message(agent_pb2.SchedulerMessage(
            load_model=agent_pb2.LoadModel(model=EMB, reason="slo")))
        deadline = time.monotonic() + 5
        while host.get(EMB) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert host.loaded_models() == [EMB]
        agent._on_message(agent_pb2.SchedulerMessage(
            unload_model=agent_pb2.UnloadModel(model=EMB, reason="idle")))
        assert host.loaded_models() == []
        # Unknown models are refused in the log, not raised into the stream.
        agent._on_message(agent_pb2.SchedulerMessage(
            unload_model=agent_pb2.UnloadModel(model="nope")))
        agent._on_message(agent_pb2.SchedulerMessage(load_model=agent_pb2.LoadModel(model="nope")))
        await asyncio.sleep(0.01)

    asyncio.run(go())
