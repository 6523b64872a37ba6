"""How the local cluster tells a child to stop, and how it describes a death.

The lifeline is tested with real child processes: the kernel closes the pipe when the parent goes,
and the parent-death signal it replaces fired when the spawning *thread* exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from hashserve.local import LIFELINE_FD_ENV, describe_exit

CHILD = (
    "import time; from hashserve.local import watch_lifeline_from_env; "
    "watch_lifeline_from_env(); print('ready', flush=True); time.sleep(60)"
)


def spawn_with_lifeline() -> tuple[subprocess.Popen[str], int]:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], env={**os.environ, LIFELINE_FD_ENV: str(read_fd)},
        pass_fds=(read_fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    os.close(read_fd)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, write_fd


def test_a_child_stops_when_its_lifeline_closes() -> None:
    proc, write_fd = spawn_with_lifeline()
    try:
        time.sleep(0.2)
        assert proc.poll() is None
        os.close(write_fd)  # what the kernel does when the parent dies, however it dies
        assert proc.wait(10) == -signal.SIGTERM
        assert proc.stderr is not None
        assert "the process that started this agent is gone" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_child_spawned_from_a_thread_outlives_the_thread() -> None:
    spawned: list[tuple[subprocess.Popen[str], int]] = []
    thread = threading.Thread(target=lambda: spawned.append(spawn_with_lifeline()))
    thread.start()
    thread.join()
    proc, write_fd = spawned[0]
    try:
        time.sleep(0.5)
        assert proc.poll() is None, "the child died with the thread that spawned it"
    finally:
        os.close(write_fd)
        proc.wait(10)


def test_exits_are_described_by_signal_or_status() -> None:
    assert describe_exit(-signal.SIGILL) == "killed by SIGILL (illegal instruction)"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV (segmentation fault)"
    assert describe_exit(2) == "exited with status 2"
    assert describe_exit(0) == "exited with status 0"
