"""The scheduler on Ray: an actor that hosts `SchedulerApp`, restarted by Ray when it dies.

The actor's process runs the gRPC server in the actor's own event loop. When the process is killed,
Ray starts a new one (max_restarts=-1) and the supervising driver calls `ensure_started` again;
the new app recovers from the journal and agents reconnect to the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from typing import Any

import ray

from scheduler.settings import SchedulerSettings

log = logging.getLogger("hashserve.scheduler")
ACTOR_NAME = "hashserve-scheduler"
# A start that failed (the port taken, the journal unreachable): Ray starts the actor again.
START_FAILED_EXIT = 70
STEPPED_DOWN_EXIT = 75  # EX_TEMPFAIL: the process ends on purpose and is to be started again


def actor_name(settings: SchedulerSettings) -> str:
    """One Ray actor per scheduler instance: the default keeps the historical name."""
    if settings.instance_name == "scheduler":
        return ACTOR_NAME
    return f"{ACTOR_NAME}-{settings.instance_name}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class SchedulerActor:
    def __init__(self, settings_json: str) -> None:
        from hashserve.logs import configure_logging, enable_fatal_signal_trace

        self.settings = SchedulerSettings.model_validate_json(settings_json)
        # The actor's process is Ray's worker: it sets up its own logging, in its own format.
        handler = configure_logging(
            self.settings.log_format,
            static_fields={"process": "scheduler", "pid": os.getpid()},
            log_file=self.settings.log_file,
        )
        enable_fatal_signal_trace(handler)
        log.info("scheduler actor starting (pid %d)", os.getpid())
        self.app: Any = None
        self._start: asyncio.Future[int] | None = None
        self._exit_watch: asyncio.Future[None] | None = None
        self.started_at = time.time()

    async def ensure_started(self) -> dict[str, Any]:
        """Start the app once; answer within about a second, as leader or as standby (the app
        waits for the leader lease in the background)."""
        if self._start is None:
            from scheduler.runtime.app import SchedulerApp

            app = SchedulerApp(self.settings)
            self.app = app
            self._start = asyncio.ensure_future(app.start())
            self._exit_watch = asyncio.ensure_future(self._exit_on_step_down(app))
        if not self._start.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._start), 1.0)
        if self._start.done() and not self._start.cancelled() and self._start.exception():
            err = self._start.exception()
            # Said here, in the actor's own log, and the process goes: Ray starts a fresh one
            # (a port taken by this process's own Ray worker server, say, is free in the next).
            log.error("the scheduler failed to start: %s: %s; exiting so Ray starts it again",
                      type(err).__name__, err)
            asyncio.get_running_loop().call_later(0.5, os._exit, START_FAILED_EXIT)
            self._start.result()  # and the driver hears it too
        return {
            "role": "leader" if self._start.done() else "standby",
            "port": self.app.port,
            "http_port": self.app.http_port,
            "metrics_port": self.app.metrics_port,
            "epoch": self.app.loop.epoch,
            "pid": os.getpid(),
            "started_at": self.started_at,
        }

    async def _exit_on_step_down(self, app: Any) -> None:
        """A scheduler that lost its lease exits; Ray starts it again, as a standby."""
        await app.stepped_down.wait()
        log.error("scheduler stepped down (%s); exiting so Ray restarts it as a standby",
                  app.step_down_reason)
        await asyncio.sleep(0.5)  # its server's stop and the log line go out first
        os._exit(STEPPED_DOWN_EXIT)

    async def stop(self) -> None:
        if self._start is not None and not self._start.done():
            self._start.cancel()  # a standby: nothing was served
            with contextlib.suppress(asyncio.CancelledError):
                await self._start
        elif self.app is not None:
            await self.app.stop()
        self.app = None

    async def pid(self) -> int:
        return os.getpid()


LOCAL_RAY_START_TRIES = 3


def init_ray(address: str | None, relay_worker_logs: bool = True) -> None:
    """`relay_worker_logs=False` keeps the actor's lines out of the driver's output (JSON mode:
    Ray prefixes relayed lines, which would break them).

    A local Ray is started again when its start times out: Ray gives its raylet a fixed 30 s to
    register, which a loaded 2-core machine (one just done with a previous Ray) can miss."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=relay_worker_logs)
        return
    for attempt in range(1, LOCAL_RAY_START_TRIES + 1):
        try:
            ray.init(
                num_cpus=max(os.cpu_count() or 1, 1),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=relay_worker_logs,
                configure_logging=False,
            )
            return
        except Exception as err:
            if not _start_timed_out(err) or attempt == LOCAL_RAY_START_TRIES:
                raise
            log.warning("local Ray did not start (%s); starting it again (%d/%d)",
                        err, attempt + 1, LOCAL_RAY_START_TRIES)
            with contextlib.suppress(Exception):
                ray.shutdown()
            time.sleep(2.0)


def _start_timed_out(err: Exception) -> bool:
    """A local Ray's start that ran out of time: the raylet's registration ("timed out during
    startup"), or the GCS's port file, which a loaded machine can be slow to write."""
    text = str(err)
    return "timed out during startup" in text or (
        "Timed out waiting for file" in text and "gcs_server_port" in text
    )


class SupervisedScheduler:
    """Driver-side handle: starts the actor and brings the server back after Ray restarts it."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.actor: Any = None
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self._stop_watchdog = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self, timeout_s: float = 120.0, wait_leader: bool = True) -> dict[str, Any]:
        """Start the actor. `wait_leader`: until it leads (a lone scheduler leads at once, or
        once a dead predecessor's lease lapses); else as soon as it leads or stands by."""
        from hashserve.logs import LogFormat

        init_ray(
            self.settings.ray_address,
            relay_worker_logs=self.settings.log_format is LogFormat.TEXT,
        )
        options: dict[str, Any] = {
            "name": actor_name(self.settings),
            # Ray renices its workers to 15, so on a busy machine the scheduler, which every
            # submit and heartbeat waits on, would get the CPU last. Its worker keeps the
            # raylet's niceness instead (the variable Ray's own job supervisor sets).
            "runtime_env": {"env_vars": {"RAY_worker_niceness": "0"}},
        }
        if self.settings.ray_actor_resources:
            options["resources"] = dict(self.settings.ray_actor_resources)
        self.actor = SchedulerActor.options(**options).remote(  # type: ignore[attr-defined]
            self.settings.model_dump_json()
        )
        deadline = time.monotonic() + timeout_s
        while True:
            self.info = ray.get(self.actor.ensure_started.remote(),
                                timeout=max(deadline - time.monotonic(), 1.0))
            if self.info["role"] == "leader" or not wait_leader:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scheduler did not get the leader lease in {timeout_s} s")
        self.start_watchdog()
        return self.info

    def start_watchdog(self, interval_s: float = 1.0) -> None:
        """Bring the gRPC server back up whenever Ray has restarted the actor."""
        self._stop_watchdog.clear()
        thread = threading.Thread(
            target=self._watch, args=(interval_s,), name="scheduler-watchdog", daemon=True
        )
        thread.start()
        self._watchdog = thread

    def _watch(self, interval_s: float) -> None:
        while not self._stop_watchdog.wait(interval_s):
            try:
                info = ray.get(self.actor.ensure_started.remote(), timeout=60)
            except Exception as err:  # restarting; try again next round
                log.info("scheduler actor not ready: %s", err)
                continue
            if info["pid"] != self.info.get("pid"):
                log.warning("scheduler actor restarted by Ray (pid %s, %s)", info["pid"],
                            info["role"])
                self.restarts += 1
            elif info["role"] != self.info.get("role"):
                log.warning("scheduler (pid %s) is now %s, epoch %s", info["pid"], info["role"],
                            info["epoch"])
            self.info = info

    def stop(self) -> None:
        self._stop_watchdog.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=70)
        if self.actor is not None:
            try:
                ray.get(self.actor.stop.remote(), timeout=15)
            except Exception as err:
                log.warning("scheduler did not stop cleanly: %s", err)
            ray.kill(self.actor, no_restart=True)
            self.actor = None
        if ray.is_initialized():
            ray.shutdown()
