"""What this node can serve, and what it holds now: models load at start, on the scheduler's
command (LoadModel) or when a job for them arrives, and unload on command to free their memory.

A load is checked first against the memory the model would take: an estimate from its file's size
(`estimate_model_bytes`) against what the host has free and, where the agent has a model memory
budget, what of the budget the loaded models leave. A refused load says why in the heartbeats'
load failures, so placement stops counting on this node for it. Loads run one at a time in a
thread of their own, so heartbeats and running jobs go on meanwhile and each check sees the
memory the previous load took; callers that want one model share its one load. A model is held
"in use" by each job that runs on it (or waits for its load), and an unload waits for none of
them: it is refused while any does.

State changes on the event loop's thread only (or before the loop runs, for the start's
preload), so it needs no lock; backends themselves run in the runtime's worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from node_agent.backends.llama_cpp_generation import DEFAULT_PREFIX_CACHE_BYTES
from node_agent.backends.registry import Backend, BackendKind, BackendSpec

log = logging.getLogger("hashserve.agent")

MIB = 2**20
# llama.cpp maps the GGUF's weights and adds its compute buffers and the context's KV cache: for
# the small contexts the agent runs, about a fifth on top of the file.
GGUF_MEMORY_FACTOR = 1.2
# onnxruntime keeps the graph it loaded and its optimised copy, plus its arena for activations.
ONNX_MEMORY_FACTOR = 2.0
MEMINFO = Path("/proc/meminfo")

BuildBackend = Callable[[BackendSpec], Backend]


class ModelNotServable(LookupError):
    """A model this node has no backend for."""


class ModelLoadError(RuntimeError):
    """A load that did not happen; its message is the reason the heartbeats report."""


class ModelLoadRefused(ModelLoadError):
    """A load refused before it began: the model's memory is not free."""


class ModelLoadFailed(ModelLoadError):
    """A load that began and raised (a missing file, an engine that cannot run here, ...)."""


class LoadMetrics(Protocol):
    """What the host reports to (node_agent/metrics.py's AgentMetrics)."""

    def model_load_ended(self, model: str, outcome: str, *, load_s: float | None = None) -> None:
        ...

    def set_model_loaded(self, model: str, loaded: bool) -> None: ...


# ----- memory: pure estimates and checks, then the thin edges that read the machine -----------


def estimate_model_bytes(kind: BackendKind, file_bytes: int, prefix_cache_bytes: int = 0) -> int:
    """The memory a model of this kind takes once loaded, from its file's size. An `openai`
    backend's model lives in another server: it takes nothing here."""
    if kind is BackendKind.LLAMA_CPP:
        # The prompt states the engine keeps beside its context fill up to their budget.
        return int(file_bytes * GGUF_MEMORY_FACTOR) + prefix_cache_bytes
    if kind is BackendKind.ONNX:
        return int(file_bytes * ONNX_MEMORY_FACTOR)
    return 0


def memory_refusal(
    model: str,
    needs_bytes: int,
    host_free_bytes: int | None,
    budget_bytes: int = 0,
    held_bytes: int = 0,
) -> str | None:
    """Why a load of `model` may not start, or None when its memory is free.

    `host_free_bytes`: what the host has available (None: not known, no host check);
    `budget_bytes`: the agent's model memory budget (0: none), of which the loaded models hold
    `held_bytes`."""
    if needs_bytes <= 0:
        return None
    needs_mib = needs_bytes / MIB
    if host_free_bytes is not None and needs_bytes > host_free_bytes:
        return (f"not enough memory for {model}: needs {needs_mib:.0f} MiB, "
                f"{host_free_bytes / MIB:.0f} MiB free")
    if budget_bytes > 0:
        left_bytes = max(budget_bytes - held_bytes, 0)
        if needs_bytes > left_bytes:
            return (f"not enough memory for {model}: needs {needs_mib:.0f} MiB, "
                    f"{left_bytes / MIB:.0f} MiB free of the {budget_bytes / MIB:.0f} MiB "
                    "model memory budget")
    return None


def parse_meminfo_available_bytes(text: str) -> int | None:
    """MemAvailable from /proc/meminfo's text, in bytes (None: not in it)."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "MemAvailable":
            fields = rest.split()
            if fields and fields[0].isdigit():
                unit = fields[1].lower() if len(fields) > 1 else "kb"
                return int(fields[0]) * (1024 if unit == "kb" else 1)
    return None


def host_available_bytes() -> int | None:
    """Memory the host can give a new model without swapping (None: not known here)."""
    try:
        available = parse_meminfo_available_bytes(MEMINFO.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError):
        available = None
    if available is not None:
        return available
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def model_file_bytes(spec: BackendSpec) -> int | None:
    """The size of the file a spec's backend loads (None: no file here, or not found; the load
    then says what is missing)."""
    path: Path | None = None
    try:
        if spec.kind is BackendKind.LLAMA_CPP:
            from node_agent.backends.llama_cpp_generation import find_smollm2_gguf

            path = spec.gguf_path or find_smollm2_gguf()
        elif spec.kind is BackendKind.ONNX:
            from node_agent.backends.onnx_embedding import default_model_path

            path = default_model_path()
        else:
            return None
        return path.stat().st_size
    except (ImportError, OSError, RuntimeError):
        return None


def resolve_preload(preload: Iterable[str] | None, servable: Iterable[str]) -> list[str]:
    """The models to load at start: `preload` (None: every servable one). A name the node has
    no backend for is an error naming it."""
    known = list(servable)
    if preload is None:
        return known
    wanted = list(dict.fromkeys(preload))
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(
            f"preload names models without a backend here: {', '.join(unknown)} "
            f"(backends: {', '.join(known) or 'none'})"
        )
    return wanted


# ----- the host -------------------------------------------------------------------------------


class ModelHost:
    """The node's models: the specs it can serve and the backends it holds now."""

    def __init__(
        self,
        specs: Mapping[str, BackendSpec] | Iterable[BackendSpec],
        build: BuildBackend,
        *,
        model_memory_mib: float = 0.0,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
        free_memory: Callable[[], int | None] = host_available_bytes,
        file_bytes: Callable[[BackendSpec], int | None] = model_file_bytes,
        metrics: LoadMetrics | None = None,
    ) -> None:
        if model_memory_mib < 0:
            raise ValueError(f"model_memory_mib must be >= 0, got {model_memory_mib}")
        items = specs.values() if isinstance(specs, Mapping) else specs
        self._specs: dict[str, BackendSpec] = {s.model_name: s for s in items}
        self._build = build
        self.model_memory_bytes = int(model_memory_mib * MIB)
        self.prefix_cache_bytes = prefix_cache_bytes
        self._free_memory = free_memory
        self._file_bytes = file_bytes
        self.metrics = metrics
        self._loaded: dict[str, Backend] = {}
        self._held_bytes: dict[str, int] = {}  # the estimate each loaded model was admitted with
        self._loading: dict[str, asyncio.Task[Backend]] = {}
        self._failures: dict[str, str] = {}
        self._load_s: dict[str, float] = {}
        self._users: Counter[str] = Counter()
        # One load at a time: each memory check then sees what the previous load took.
        self._load_lock: asyncio.Lock | None = None
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def of_built(cls, backends: Mapping[str, Backend]) -> ModelHost:
        """A host holding backends built elsewhere, with no specs: they serve until unloaded,
        and cannot load again."""
        host = cls({}, _cannot_build)
        host._loaded = dict(backends)
        return host

    # ----- what the node serves and holds -------------------------------------------------------

    def is_servable(self, model: str) -> bool:
        return model in self._specs or model in self._loaded

    def servable_models(self) -> list[str]:
        return sorted(set(self._specs) | set(self._loaded))

    def loaded(self) -> dict[str, Backend]:
        """Model -> backend, of those loaded and ready."""
        return dict(self._loaded)

    def get(self, model: str) -> Backend | None:
        return self._loaded.get(model)

    def loaded_models(self) -> list[str]:
        return sorted(self._loaded)

    def loadable_models(self) -> list[str]:
        """Servable but not loaded (loading ones included: they are not ready)."""
        return sorted(set(self._specs) - set(self._loaded))

    def loading_models(self) -> list[str]:
        return sorted(self._loading)

    def failures(self) -> dict[str, str]:
        """Model -> why its last load did not happen (cleared by a later successful load)."""
        return dict(self._failures)

    def load_seconds(self) -> dict[str, float]:
        """Model -> seconds its last successful load took here."""
        return dict(self._load_s)

    def users(self, model: str) -> int:
        """Jobs holding `model` now (running on it or waiting for its load)."""
        return self._users[model]

    def held_bytes(self) -> int:
        """The estimated memory the loaded models take."""
        return sum(self._held_bytes.values())

    # ----- loading ------------------------------------------------------------------------------

    async def ensure_loaded(self, model: str) -> float:
        """Load `model` unless it is loaded; the seconds this call waited for it (0.0: it was
        loaded). Concurrent callers share one load; cancelling one leaves the load going."""
        self._require(model)
        if model in self._loaded:
            return 0.0
        started = time.perf_counter()
        task = self._loading.get(model)
        if task is None:
            task = asyncio.create_task(self._load(model), name=f"load {model}")
            # A load nobody waits for any more still has its exception looked at (no
            # "exception was never retrieved" at exit); the failure is recorded already.
            task.add_done_callback(_retrieve)
            self._loading[model] = task
        await asyncio.shield(task)
        return time.perf_counter() - started

    async def _load(self, model: str) -> Backend:
        spec = self._specs[model]
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        try:
            async with self._load_lock:
                needs_bytes = self._admit(spec)
                loop = asyncio.get_running_loop()
                started = time.perf_counter()
                try:
                    backend = await loop.run_in_executor(self._executor(), self._build, spec)
                except Exception as err:
                    raise self._failed(spec, err) from err
                self._register(spec, backend, needs_bytes, time.perf_counter() - started)
                return backend
        finally:
            self._loading.pop(model, None)

    def load_blocking(self, model: str) -> float:
        """Load `model` in this thread (the start's preload, before the event loop runs); the
        seconds it took (0.0: it was loaded)."""
        spec = self._require(model)
        if model in self._loaded:
            return 0.0
        if self._loading:
            raise RuntimeError(f"cannot load {model} in this thread while loads run on the loop")
        if spec is None:
            raise ModelNotServable(f"this agent cannot load {model} again")
        needs_bytes = self._admit(spec)
        started = time.perf_counter()
        try:
            backend = self._build(spec)
        except Exception as err:
            raise self._failed(spec, err) from err
        load_s = time.perf_counter() - started
        self._register(spec, backend, needs_bytes, load_s)
        return load_s

    def preload(
        self, models: Iterable[str], optional_errors: tuple[type[BaseException], ...] = ()
    ) -> None:
        """Load `models` now, one after another. A load that fails with one of
        `optional_errors` (an engine this machine cannot run, for models nobody asked for by
        name) drops the model from what the node serves, with an error in the log; any other
        refusal or failure raises."""
        for model in models:
            try:
                self.load_blocking(model)
            except ModelLoadFailed as err:
                if not isinstance(err.__cause__, optional_errors):
                    raise
                log.error("not serving %s: %s", model, err.__cause__)
                self._specs.pop(model, None)
                self._failures.pop(model, None)

    def _require(self, model: str) -> BackendSpec | None:
        if not self.is_servable(model):
            known = ", ".join(self.servable_models()) or "none"
            raise ModelNotServable(f"this agent does not serve {model} (it serves: {known})")
        return self._specs.get(model)

    def _admit(self, spec: BackendSpec) -> int:
        """The bytes `spec`'s model needs, if they are free; else the refusal, recorded."""
        size = self._file_bytes(spec)
        needs_bytes = estimate_model_bytes(spec.kind, size or 0, self.prefix_cache_bytes)
        host_free = self._free_memory() if needs_bytes > 0 else None
        reason = memory_refusal(
            spec.model_name, needs_bytes, host_free, self.model_memory_bytes, self.held_bytes()
        )
        if reason is not None:
            self._failures[spec.model_name] = reason
            if self.metrics is not None:
                self.metrics.model_load_ended(spec.model_name, "refused")
            raise ModelLoadRefused(reason)
        return needs_bytes

    def _failed(self, spec: BackendSpec, err: Exception) -> ModelLoadFailed:
        reason = (f"loading {spec.model_name} ({spec.kind.value}) failed: "
                  f"{type(err).__name__}: {err}")
        self._failures[spec.model_name] = reason[:1000]
        if self.metrics is not None:
            self.metrics.model_load_ended(spec.model_name, "failed")
        log.warning("%s", reason)
        return ModelLoadFailed(reason)

    def _register(
        self, spec: BackendSpec, backend: Backend, needs_bytes: int, load_s: float
    ) -> None:
        model = spec.model_name
        self._loaded[model] = backend
        self._held_bytes[model] = needs_bytes
        self._load_s[model] = load_s
        self._failures.pop(model, None)
        if self.metrics is not None:
            self.metrics.model_load_ended(model, "loaded", load_s=load_s)
            self.metrics.set_model_loaded(model, True)
        log.info("loaded %s (%s) in %.2f s, about %.0f MiB", model, spec.kind.value, load_s,
                 needs_bytes / MIB)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        return self._pool

    # ----- using and unloading ------------------------------------------------------------------

    @contextlib.contextmanager
    def in_use(self, model: str) -> Iterator[None]:
        """Hold `model` for one job: an unload is refused until every holder lets go. Taken
        before waiting for the load, so the model cannot go between its load and the job."""
        self._require(model)
        self._users[model] += 1
        try:
            yield
        finally:
            self._users[model] -= 1
            if self._users[model] <= 0:
                del self._users[model]

    def unload(self, model: str) -> str | None:
        """Free `model`'s memory. None: done (or it was not loaded); else why not."""
        self._require(model)
        if model in self._loading:
            return f"{model} is loading now"
        users = self._users[model]
        if users:
            return f"{model} is in use by {users} job{'s' if users != 1 else ''}"
        backend = self._loaded.pop(model, None)
        if backend is None:
            return None
        self._held_bytes.pop(model, None)
        started = time.perf_counter()
        close = getattr(backend, "close", None)
        if close is not None:
            try:
                close()
            except Exception as err:  # it is dropped all the same; its memory goes with it
                log.warning("closing %s's backend failed: %s", model, err)
        if self.metrics is not None:
            self.metrics.set_model_loaded(model, False)
        log.info("unloaded %s in %.2f s", model, time.perf_counter() - started)
        return None

    def shutdown(self) -> None:
        """Stop the load thread after the load it runs (queued ones are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _cannot_build(spec: BackendSpec) -> Backend:
    raise ModelNotServable(f"this agent has no way to load {spec.model_name}")


def _retrieve(task: asyncio.Task[Backend]) -> None:
    if not task.cancelled():
        task.exception()
