"""The scheduler on Ray: an actor that hosts `SchedulerApp`, restarted by Ray when it dies.

The actor's process runs the gRPC server in the actor's own event loop. When the process is killed,
Ray starts a new one (max_restarts=-1) and the supervising driver calls `ensure_started` again;
the new app recovers from the journal and agents reconnect to the same port.
"""

from __future__ import annotations

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
        self.started_at = time.time()

    async def ensure_started(self) -> dict[str, Any]:
        if self.app is None:
            from scheduler.runtime.app import SchedulerApp

            app = SchedulerApp(self.settings)
            await app.start()
            self.app = app
        return {
            "port": self.app.port,
            "metrics_port": self.app.metrics_port,
            "pid": os.getpid(),
            "started_at": self.started_at,
        }

    async def stop(self) -> None:
        if self.app is not None:
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
            if "timed out during startup" not in str(err) or attempt == LOCAL_RAY_START_TRIES:
                raise
            log.warning("local Ray did not start (%s); starting it again (%d/%d)",
                        err, attempt + 1, LOCAL_RAY_START_TRIES)
            with contextlib.suppress(Exception):
                ray.shutdown()
            time.sleep(2.0)


class SupervisedScheduler:
    """Driver-side handle: starts the actor and brings the server back after Ray restarts it."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.actor: Any = None
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self._stop_watchdog = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self, timeout_s: float = 120.0) -> dict[str, Any]:
        from hashserve.logs import LogFormat

        init_ray(
            self.settings.ray_address,
            relay_worker_logs=self.settings.log_format is LogFormat.TEXT,
        )
        options: dict[str, Any] = {"name": ACTOR_NAME}
        if self.settings.ray_actor_resources:
            options["resources"] = dict(self.settings.ray_actor_resources)
        self.actor = SchedulerActor.options(**options).remote(  # type: ignore[attr-defined]
            self.settings.model_dump_json()
        )
        self.info = ray.get(self.actor.ensure_started.remote(), timeout=timeout_s)
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
                log.warning("scheduler actor restarted by Ray (pid %s)", info["pid"])
                self.restarts += 1
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
