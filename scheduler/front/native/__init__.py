"""The native front (`front.cc`): the customers' gRPC port in C++, batching submits into the
leader's `Intake.SubmitMany` and passing every other customer, admin and reflection call
through. Here: where its binary is, the command that starts it, and a running one.

It is built by `scripts/build_front.sh` (which `scripts/install.sh` runs when gRPC's C++ library
and prometheus-cpp are there: Debian's `libgrpc++-dev` and `prometheus-cpp-dev`), into the
virtual environment's `bin/`, beside the Python that runs hashserve. Where it is not built, the
Python front (`scheduler/front/app.py`) does the same work, at a higher cost per call.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scheduler.runtime.processes import end_process

BINARY = "hashserve-front-native"
# A binary elsewhere than beside the interpreter (a system package, a test's own build).
BINARY_ENV = "HASHSERVE_FRONT_NATIVE"
SOURCE = Path(__file__).with_name("front.cc")

HOW_TO_BUILD = (
    "the native front is not built: run `bash scripts/build_front.sh` (it needs g++, "
    "pkg-config, gRPC's C++ library and prometheus-cpp, on Debian `apt-get install "
    "libgrpc++-dev prometheus-cpp-dev pkg-config`), "
    "or use the Python front (`--engine python`)"
)


class NativeFrontError(RuntimeError):
    """The native front is not built, or did not start."""


def native_front_binary() -> Path | None:
    """The built binary: $HASHSERVE_FRONT_NATIVE, else beside this interpreter, else on PATH."""
    override = os.environ.get(BINARY_ENV)
    candidates = [Path(override)] if override else [Path(sys.executable).parent / BINARY]
    if not override and (on_path := shutil.which(BINARY)):
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def require_binary() -> Path:
    binary = native_front_binary()
    if binary is None:
        raise NativeFrontError(HOW_TO_BUILD)
    return binary


@dataclass(frozen=True)
class NativeFrontOptions:
    listen: str  # host:port; port 0 picks a free one
    scheduler_target: str  # a gRPC target: the leader and its standbys
    max_batch_items: int = 256
    failover_wait_s: float = 15.0
    tls_cert: str | None = None
    tls_key: str | None = None
    scheduler_tls_ca: str | None = None
    scheduler_tls_server_name: str | None = None
    metrics_listen: str | None = None  # host:port of its /metrics; port 0 picks a free one

    def command(self, binary: Path) -> list[str]:
        args = [str(binary), "--listen", self.listen, "--scheduler", self.scheduler_target,
                "--max-batch-items", str(self.max_batch_items),
                "--failover-wait-s", repr(self.failover_wait_s)]
        for flag, value in (("--metrics-listen", self.metrics_listen),
                            ("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key),
                            ("--scheduler-tls-ca", self.scheduler_tls_ca),
                            ("--scheduler-tls-server-name", self.scheduler_tls_server_name)):
            if value:
                args += [flag, value]
        return args


@dataclass
class NativeFront:
    """One native front process. It prints `serving port=N metrics_port=M` on stdout once it
    listens (M is 0 without metrics); its log (stderr) goes to `log_path`, or to this
    process's own."""

    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int = 0

    @classmethod
    def start(cls, options: NativeFrontOptions, log_path: Path | None = None,
              binary: Path | None = None, timeout_s: float = 30.0) -> NativeFront:
        command = options.command(binary or require_binary())
        log_file: IO[bytes] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(log_path, "ab")  # noqa: SIM115 (the child keeps its own copy)
        try:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file,
                                    stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            if log_file is not None:
                log_file.close()
        try:
            port, metrics_port = _read_ports(proc, timeout_s)
        except BaseException:
            _end(proc)
            raise
        return cls(proc, port, metrics_port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout_s: float = 10.0) -> int:
        return _end(self.proc, timeout_s)


def _read_ports(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, int]:
    """(the customers' port, the metrics port or 0) from the front's first line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise NativeFrontError(f"the native front did not start within {timeout_s:g} s")
            if not selector.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                code = proc.wait(5)
                raise NativeFrontError(
                    f"the native front exited with status {code} before it served (its log "
                    "says why)")
            line += chunk
    text = line.decode("ascii", "replace").strip()
    words = dict(word.partition("=")[::2] for word in text.removeprefix("serving ").split())
    if not text.startswith("serving ") or not words.get("port", "").isdigit():
        raise NativeFrontError(f"the native front said {text!r}, not its port")
    metrics = words.get("metrics_port", "0")
    return int(words["port"]), int(metrics) if metrics.isdigit() else 0


def _end(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    code = end_process(proc, timeout_s)
    if proc.stdout is not None:
        with contextlib.suppress(OSError):
            proc.stdout.close()
    return code
