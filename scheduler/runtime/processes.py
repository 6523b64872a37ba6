"""Ending a child process the way every supervisor here does: asked first (SIGTERM), then, past
its grace, killed (SIGKILL)."""

from __future__ import annotations

import signal
import subprocess


def end_process(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM, up to `timeout_s` for it to exit, then SIGKILL; its exit status (negative: the
    signal that ended it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode or 0)
