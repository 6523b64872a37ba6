"""`hashserve`: run the parts, submit and watch jobs, run the demo.

Thin: every command parses its flags and calls the module that does the work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console

from hashserve.client import (
    STATE_NAMES,
    TIERS,
    Client,
    embed_spec,
    generate_spec,
    job_to_dict,
    resolve,
)
from hashserve.v1 import jobs_pb2

app = typer.Typer(
    help="hashserve: mine or serve. A Ray scheduler for AI inference at Bitcoin-mining sites.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

SchedulerOpt = Annotated[
    str | None, typer.Option("--scheduler", help="HOST:PORT [env HASHSERVE_SCHEDULER]")
]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", help="[env HASHSERVE_API_KEY]")]
TlsCaOpt = Annotated[str | None, typer.Option("--tls-ca", help="CA to verify the scheduler")]


LogFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="text (default) or json: one JSON object a line, with job, attempt, agent, site "
        "and tenant ids as fields",
    ),
]


def _logging(
    verbose: bool,
    log_format: str | None = None,
    static_fields: dict[str, object] | None = None,
    log_file: str | None = None,
) -> logging.Handler:
    from hashserve.logs import LogFormat, configure_logging, parse_log_format

    try:
        fmt = parse_log_format(log_format) if log_format else LogFormat.TEXT
    except ValueError as err:
        console.print(f"[red]{err}[/]")
        raise typer.Exit(2) from None
    return configure_logging(
        fmt, verbose=verbose, static_fields=static_fields, log_file=log_file
    )


def _client(scheduler: str | None, api_key: str | None, tls_ca: str | None) -> Client:
    address = resolve(scheduler, "HASHSERVE_SCHEDULER", "127.0.0.1:50051")
    key = resolve(api_key, "HASHSERVE_API_KEY")
    if not key:
        console.print(
            "[red]no API key:[/] pass --api-key, set HASHSERVE_API_KEY, or run `hashserve up` "
            "here (it writes var/hashserve/credentials.env)"
        )
        raise typer.Exit(2)
    assert address is not None
    return Client(address, key, tls_ca)


CatalogueOpt = Annotated[
    str | None,
    typer.Option(
        "--catalogue",
        help="model catalogue YAML (default: the embedded models; env HASHSERVE_CATALOGUE_PATH); "
        "the fleet file's prices win over the catalogue's",
    ),
]


def _checked_catalogue(path: str | None) -> str | None:
    """The catalogue file as an absolute path (the scheduler actor may run elsewhere), checked
    here so that a bad file stops the command with its problems, not the actor's start."""
    if path is None:
        return None
    from scheduler.fleet import CatalogueError, load_catalogue

    try:
        load_catalogue(path)
    except CatalogueError as err:
        console.print(f"[red]bad catalogue:[/] {err}")
        raise typer.Exit(2) from None
    return str(Path(path).resolve())


def _run_rpc(coro: object) -> object:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except grpc.aio.AioRpcError as err:
        console.print(f"[red]{err.code().name}[/]: {err.details()}")
        raise typer.Exit(1) from None


def _install_stop(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            logging.getLogger("hashserve").info("%s received: stopping", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)


# ----- parts ------------------------------------------------------------------------------------


@app.command()
def scheduler(
    host: Annotated[
        str | None, typer.Option(help="address to listen on [default: 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port [default: 50051]")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus port; -1: none [default: 9100]")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="join this Ray cluster (default: a local Ray)")
    ] = None,
    journal: Annotated[
        str | None,
        typer.Option(
            help="sqlite:///PATH or postgresql://... [default: sqlite:///var/hashserve/journal.db]"
        ),
    ] = None,
    fleet: Annotated[str | None, typer.Option(help="fleet YAML (default: shipped example)")] = None,
    catalogue: CatalogueOpt = None,
    tls_cert: Annotated[str | None, typer.Option(help="server certificate (PEM)")] = None,
    tls_key: Annotated[str | None, typer.Option(help="server key (PEM)")] = None,
    tls_client_ca: Annotated[
        str | None, typer.Option(help="more CAs the agents' port trusts (an old one while "
                                 "rotating); customers never show client certificates")
    ] = None,
    agent_port: Annotated[int | None, typer.Option(
        help="the agents' own port, mutual TLS (needs --tls-* and --agent-ca-*); "
        "-1: agents share the gRPC port, with tokens [default: -1]")] = None,
    agent_ca_cert: Annotated[str | None, typer.Option(
        help="CA that signs enrolled agents' certificates (PEM)")] = None,
    agent_ca_key: Annotated[str | None, typer.Option(help="that CA's key (PEM)")] = None,
    log_format: LogFormatOpt = None,
    log_file: Annotated[
        str | None,
        typer.Option(help="the scheduler actor's log file (default: its stderr, in Ray's logs)"),
    ] = None,
    name: Annotated[str | None, typer.Option(
        help="this scheduler's instance name; several on one journal: one leads, the others "
        "stand by [default: scheduler]")] = None,
    verbose: bool = False,
) -> None:
    """Run the scheduler (a Ray actor, restarted by Ray if it dies) until interrupted.

    Several schedulers may share one PostgreSQL journal, each with its own --name (and port,
    on one machine): the one holding the leader lease serves; a standby takes over within
    about `leader_lease_s` (3 s) when the leader stops renewing it.
    """
    from hashserve.logs import enable_fatal_signal_trace
    from scheduler.runtime.ray_host import SupervisedScheduler
    from scheduler.settings import SchedulerSettings

    given = {
        "host": host,
        "port": port,
        "metrics_port": metrics_port,
        "journal_url": journal,
        "ray_address": ray_address,
        "fleet_path": fleet,
        "catalogue_path": _checked_catalogue(catalogue),
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls_client_ca": tls_client_ca,
        "agent_port": agent_port,
        "agent_ca_cert": agent_ca_cert,
        "agent_ca_key": agent_ca_key,
        "log_format": log_format,
        "log_file": log_file,
        "instance_name": name,
    }
    # Flags left unset fall through to HASHSERVE_* environment variables and the defaults.
    try:
        settings = SchedulerSettings.model_validate(
            {k: v for k, v in given.items() if v is not None}
        )
    except ValueError as err:
        console.print(f"[red]bad scheduler settings:[/] {err}")
        raise typer.Exit(2) from None
    enable_fatal_signal_trace(
        _logging(verbose, settings.log_format.value, {"process": "scheduler-driver"})
    )
    supervised = SupervisedScheduler(settings)
    info = supervised.start(wait_leader=False)
    if info["role"] == "leader":
        console.print(
            f"scheduler {settings.instance_name} serving on {settings.host}:{info['port']} "
            f"(actor pid {info['pid']}, epoch {info['epoch']}), metrics on port "
            f"{info['metrics_port']}"
        )
    else:
        console.print(
            f"scheduler {settings.instance_name} standing by (actor pid {info['pid']}): it "
            f"serves on {settings.host}:{settings.port} once the leader's lease lapses"
        )
    try:
        asyncio.run(_wait_for_signal())
    finally:
        supervised.stop()


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    _install_stop(asyncio.get_running_loop(), stop)
    await stop.wait()


@app.command()
def agent(
    scheduler: Annotated[str, typer.Option(help="scheduler HOST:PORT")] = "127.0.0.1:50051",
    site: Annotated[str, typer.Option(help="site this node is at")] = "local",
    region: Annotated[str, typer.Option(help="region of the site")] = "north_america",
    agent_id: Annotated[str | None, typer.Option(help="default: host name")] = None,
    gpu_kind: str = "cpu",
    gpu_count: int = 1,
    gpu_memory_mb: int = 16384,
    max_concurrent_jobs: int = 2,
    idle_power_kw: float = 0.3,
    busy_power_kw: float = 0.7,
    token: Annotated[str | None, typer.Option(
        help="a fixed agent token [env HASHSERVE_AGENT_TOKEN]; else the agent enrolls")] = None,
    token_file: str | None = None,
    bootstrap_token_file: Annotated[str | None, typer.Option(
        help="bootstrap token to enroll with (`hashserve admin bootstrap-token`)")] = None,
    state_dir: Annotated[str | None, typer.Option(
        help="where the enrolled credential is kept [default: $STATE_DIRECTORY]")] = None,
    enroll_address: Annotated[str | None, typer.Option(
        help="where to enroll: the scheduler's gRPC port, when --scheduler is the agents' "
        "mTLS port [default: the first --scheduler]")] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            help="MODEL=onnx | MODEL=llama-cpp | MODEL=openai:URL[:served]; repeatable; "
            "default: the embedded CPU models"
        ),
    ] = None,
    preload: Annotated[
        list[str] | None,
        typer.Option(
            help="a model of the backends to load at start; repeatable or comma-separated; "
            "--preload '' loads none (each loads on the scheduler's command or its first job); "
            "default: all"
        ),
    ] = None,
    model_memory_mib: Annotated[
        float | None,
        typer.Option(
            help="memory the loaded models may take together, MiB (estimated from their "
            "files); a load beyond it is refused; default 0: only the host's free memory"
        ),
    ] = None,
    threads_per_job: int = 1,
    metrics_port: Annotated[int, typer.Option(help="Prometheus port; -1: none")] = -1,
    asic_hashrate_phs: Annotated[
        float | None,
        typer.Option(help="drive the site's ASIC fleet (simulated) of this many PH/s"),
    ] = None,
    asic_efficiency_j_per_th: float | None = None,
    asic_block_mw: float | None = None,
    asic_ramp_s: float | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_server_name: str | None = None,
    log_format: LogFormatOpt = None,
    verbose: bool = False,
) -> None:
    """Run a node agent: dial the scheduler, run jobs on local backends, apply power modes."""
    import functools
    import os

    from hashserve.local import watch_lifeline_from_env
    from hashserve.logs import enable_fatal_signal_trace
    from node_agent.backends.host import ModelHost, resolve_preload
    from node_agent.backends.llama_engine import EngineUnavailable
    from node_agent.backends.registry import (
        build_backend,
        default_backend_specs,
        parse_backend_specs,
    )
    from node_agent.runtime import NodeAgent, log_agent_exit
    from node_agent.settings import AgentSettings

    values: dict[str, object] = {
        "scheduler": scheduler,
        "site": site,
        "region": region,
        "gpu_kind": gpu_kind,
        "gpu_count": gpu_count,
        "gpu_memory_mb": gpu_memory_mb,
        "max_concurrent_jobs": max_concurrent_jobs,
        "idle_power_kw": idle_power_kw,
        "busy_power_kw": busy_power_kw,
        "threads_per_job": threads_per_job,
        "metrics_port": metrics_port,
        "tls_ca": tls_ca,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls_server_name": tls_server_name,
        "token_file": token_file,
        "token": token or os.environ.get("HASHSERVE_AGENT_TOKEN"),
        "bootstrap_token_file": bootstrap_token_file,
        "state_dir": state_dir,
        "enroll_address": enroll_address,
        "preload": preload,
        "model_memory_mib": model_memory_mib,
    }
    if agent_id:
        values["agent_id"] = agent_id
    if log_format:
        values["log_format"] = log_format
    # Flags left unset fall through to HASHSERVE_AGENT_* environment variables and the defaults.
    try:
        settings = AgentSettings(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
    except ValueError as err:
        console.print(f"[red]bad agent settings:[/] {err}")
        raise typer.Exit(2) from None
    handler = _logging(
        verbose,
        settings.log_format.value,
        {
            "process": "agent",
            "agent_id": settings.agent_id,
            "site": settings.site,
            "region": settings.region,
        },
    )
    # A fatal signal (an engine's illegal instruction, say) leaves the Python stacks in the log.
    enable_fatal_signal_trace(handler)
    watch_lifeline_from_env()
    asked = list(backend or settings.backends)
    specs = asked or default_backend_specs()
    prefix_cache_bytes = int(settings.prefix_cache_mib * 2**20)
    try:
        host = ModelHost(
            parse_backend_specs(specs),
            functools.partial(
                build_backend, threads=settings.threads_per_job,
                prefix_cache_bytes=prefix_cache_bytes,
            ),
            model_memory_mib=settings.model_memory_mib,
            prefix_cache_bytes=prefix_cache_bytes,
        )
        preloaded = resolve_preload(settings.preload, host.servable_models())
    except ValueError as err:
        console.print(f"[red]bad backend:[/] {err}")
        raise typer.Exit(2) from None
    metrics = None
    if settings.metrics_port >= 0:
        from node_agent.metrics import AgentMetrics, start_metrics_http_server

        metrics = AgentMetrics(
            agent_id=settings.agent_id,
            site=settings.site,
            region=settings.region,
            gpu_kind=settings.gpu_kind,
            models=host.servable_models(),
        )
        server = start_metrics_http_server(
            metrics.registry, settings.metrics_host, settings.metrics_port
        )
        console.print(f"agent metrics on {settings.metrics_host}:{server.port}")
        host.metrics = metrics
    try:
        # Models nobody asked for by name leave out an engine this machine cannot run.
        host.preload(preloaded, optional_errors=() if asked else (EngineUnavailable,))
    except RuntimeError as err:
        console.print(f"[red]bad backend:[/] {err}")
        raise typer.Exit(2) from None
    try:
        node = NodeAgent(settings, host, metrics)
    except ValueError as err:
        console.print(f"[red]{err}[/]")
        raise typer.Exit(2) from None

    async def main_async() -> None:
        stop = asyncio.Event()
        _install_stop(asyncio.get_running_loop(), stop)
        await node.run(stop)

    logging.getLogger("hashserve.agent").info(
        "agent %s at %s/%s serving %s, loadable %s (pid %d)",
        settings.agent_id,
        settings.region,
        settings.site,
        ", ".join(host.loaded_models()) or "none",
        ", ".join(host.loadable_models()) or "none",
        os.getpid(),
    )
    with log_agent_exit():
        asyncio.run(main_async())


@app.command()
def front(
    scheduler: Annotated[str, typer.Option(
        help="the scheduler's gRPC address(es): the leader and its standbys, IP:PORT,...")
    ] = "127.0.0.1:50061",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the customers' gRPC port, shared by every front "
                                      "process on this machine (SO_REUSEPORT)")] = 50051,
    processes: Annotated[int, typer.Option(help="front processes to run and supervise")] = 1,
    metrics_port: Annotated[int | None, typer.Option(
        help="Prometheus metrics on this port (0: a free one); the i-th of several processes "
             "on this port + i [default: none]")] = None,
    http_port: Annotated[int | None, typer.Option(
        help="serve the OpenAI-compatible HTTP API on this port too, shared the same way")
    ] = None,
    scheduler_http: Annotated[str | None, typer.Option(
        help="the scheduler's HTTP port(s), leader and standbys, IP:PORT,...: where the Batch "
             "API and /v1/usage are passed on")] = None,
    catalogue: CatalogueOpt = None,
    fleet: Annotated[str | None, typer.Option(help="the scheduler's fleet YAML")] = None,
    tls_cert: Annotated[str | None, typer.Option(help="this front's certificate (PEM)")] = None,
    tls_key: Annotated[str | None, typer.Option(help="its key (PEM)")] = None,
    scheduler_tls_ca: Annotated[str | None, typer.Option(
        help="CA to verify the scheduler with (when it serves TLS)")] = None,
    engine: Annotated[str | None, typer.Option(
        help="auto: the native front where it is built (scripts/build_front.sh) and no "
             "--http-port is given, else the Python one; native; python [default: auto]")
    ] = None,
    log_format: LogFormatOpt = None,
    verbose: bool = False,
) -> None:
    """Run stateless customer fronts: they batch submits into the leader and forward every
    other call; clients keep their connections across a leader change.

    Give the scheduler its own port (`hashserve scheduler --port 50061`) and put the fronts on
    the customers' (50051); run a set on every node, and list every node to clients.
    """
    from hashserve.logs import enable_fatal_signal_trace
    from scheduler.front.app import (
        FrontApp,
        FrontEngine,
        FrontSettings,
        metrics_port_of,
        native_command,
        resolve_engine,
        run_fronts,
    )
    from scheduler.front.native import NativeFrontError

    given = {"scheduler": scheduler, "host": host, "port": port, "processes": processes,
             "metrics_port": metrics_port, "http_port": http_port, "scheduler_http": scheduler_http,
             "catalogue_path": _checked_catalogue(catalogue), "fleet_path": fleet,
             "tls_cert": tls_cert, "tls_key": tls_key, "scheduler_tls_ca": scheduler_tls_ca,
             "log_format": log_format, "engine": engine}
    try:
        settings = FrontSettings.model_validate({k: v for k, v in given.items() if v is not None})
        chosen = resolve_engine(settings)
    except (ValueError, NativeFrontError) as err:
        console.print(f"[red]bad front settings:[/] {err}")
        raise typer.Exit(2) from None
    handler = _logging(verbose, settings.log_format.value, {"process": "front"})
    enable_fatal_signal_trace(handler)
    if chosen is FrontEngine.NATIVE and settings.processes == 1:
        native = native_command(settings)
        os.execv(native[0], native)  # the native front is this process from here on
    if settings.processes > 1:
        if settings.port == 0 or settings.http_port == 0 or settings.metrics_port == 0:
            console.print("[red]several front processes share one port: give --port (and "
                          "--http-port; --metrics-port is the first of one port each)[/]")
            raise typer.Exit(2)

        def command(i: int) -> list[str]:
            if chosen is FrontEngine.NATIVE:
                return native_command(settings, i)
            line = [sys.executable, "-m", "hashserve", "front", "--engine", "python",
                    "--processes", "1", "--scheduler", settings.scheduler,
                    "--host", settings.host, "--port", str(settings.port),
                    "--log-format", settings.log_format.value,
                    *(["--verbose"] if verbose else []),
                    "--http-port", str(settings.http_port)]
            for flag, value in (("--scheduler-http", settings.scheduler_http),
                                ("--catalogue", settings.catalogue_path),
                                ("--fleet", settings.fleet_path),
                                ("--tls-cert", settings.tls_cert),
                                ("--tls-key", settings.tls_key),
                                ("--scheduler-tls-ca", settings.scheduler_tls_ca)):
                if value:
                    line += [flag, value]
            if settings.metrics_port > 0:
                line += ["--metrics-port", str(metrics_port_of(settings, i))]
            return line
        console.print(f"{settings.processes} {chosen.value} front processes on "
                      f"{settings.host}:{settings.port}")

        async def supervise() -> None:
            stop = asyncio.Event()
            _install_stop(asyncio.get_running_loop(), stop)
            await run_fronts(settings, command, stop)

        asyncio.run(supervise())
        return

    async def serve() -> None:
        stop = asyncio.Event()
        _install_stop(asyncio.get_running_loop(), stop)
        app_ = FrontApp(settings)
        await app_.start()
        console.print(f"front serving on {settings.host}:{app_.port}"
                      + (f", HTTP on {app_.http_port}" if app_.http_port else "")
                      + (f", metrics on {app_.metrics_port}" if app_.metrics_port else ""))
        await stop.wait()
        await app_.stop()

    try:
        asyncio.run(serve())
    except RuntimeError as err:
        console.print(f"[red]{err}[/]")
        raise typer.Exit(1) from None


@app.command()
def up(
    agents: Annotated[int, typer.Option(help="local agents to start")] = 4,
    port: int = 50051,
    http_port: Annotated[
        int, typer.Option(help="the OpenAI-compatible API's port (-1: off)")
    ] = 8080,
    workdir: Annotated[Path, typer.Option(help="journal, logs, credentials")] = Path(
        "var/hashserve"
    ),
    catalogue: CatalogueOpt = None,
    native_front: Annotated[bool | None, typer.Option(
        help="customers' gRPC port on the native front, which batches their submits into the "
             "scheduler [default: where it is built (scripts/build_front.sh)]")] = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run the scheduler and local agents until interrupted; prints the credentials.

    Agents that die are restarted (with backoff; a crash loop is given up on), and each death is
    reported with how the agent ended and where its log is. So is the native front."""
    from hashserve.demo import demo_agents
    from hashserve.local import AgentExit, LocalCluster, write_credentials_file
    from hashserve.logs import LogFormat, enable_fatal_signal_trace
    from scheduler.front.native import HOW_TO_BUILD, native_front_binary

    if native_front is None:
        native_front = native_front_binary() is not None
        if not native_front:
            console.print(f"[yellow]the scheduler serves customers itself: {HOW_TO_BUILD}[/]")
    elif native_front and native_front_binary() is None:
        console.print(f"[red]{HOW_TO_BUILD}[/]")
        raise typer.Exit(2)

    enable_fatal_signal_trace(_logging(False, log_format, {"process": "local-cluster"}))
    overrides: dict[str, object] = {"http_port": http_port}
    catalogue_path = _checked_catalogue(catalogue)
    if catalogue_path is not None:
        overrides["catalogue_path"] = catalogue_path

    def on_agent_exit(event: AgentExit) -> None:
        console.print(f"[red]{event.describe()}[/]")

    cluster = LocalCluster(
        workdir=workdir, agents=demo_agents(agents), port=port, native_front=native_front,
        settings_overrides=overrides,
        log_format=LogFormat(log_format) if log_format else LogFormat.TEXT,
        on_agent_exit=on_agent_exit,
    )
    if (workdir / "credentials.env").exists() and (workdir / "journal.db").exists():
        from hashserve.client import read_credentials
        from hashserve.local import Credentials

        saved = read_credentials(workdir / "credentials.env")
        cluster.credentials = Credentials(
            saved["HASHSERVE_API_KEY"],
            saved["HASHSERVE_ADMIN_KEY"],
            saved["HASHSERVE_AGENT_TOKEN"],
            "demo",
        )
    try:
        cluster.start_scheduler()
        cluster.start_agents()
        assert cluster.credentials is not None
        write_credentials_file(
            workdir / "credentials.env", cluster.address, cluster.credentials,
            openai_base_url=f"http://127.0.0.1:{http_port}/v1" if http_port >= 0 else None,
        )
        if cluster.native_front:
            out.print(f"hashserve up: customers' port {cluster.address} (native front, "
                      f"metrics on port {cluster.front_metrics_port}), "
                      f"scheduler on {cluster.scheduler_address}, {agents} agents")
        else:
            out.print(f"hashserve up: scheduler on {cluster.address}, {agents} agents")
        out.print(f"  export HASHSERVE_SCHEDULER={cluster.address}")
        out.print(f"  export HASHSERVE_API_KEY={cluster.credentials.api_key}")
        out.print(f"  export HASHSERVE_ADMIN_KEY={cluster.credentials.admin_key}")
        out.print(f"  (also in {workdir / 'credentials.env'}; logs in {workdir / 'logs'})")
        out.print("Ctrl-C to stop.")
        asyncio.run(_wait_for_signal())
    finally:
        console.print("stopping...")
        cluster.stop()


@app.command()
def demo(
    jobs: Annotated[int, typer.Option(help="jobs to submit")] = 60,
    agents: Annotated[int, typer.Option(help="local agents (sites)")] = 5,
    rate: Annotated[float, typer.Option(help="submits per second")] = 6.0,
    seed: int = 7,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    stall_s: Annotated[
        float, typer.Option(help="give up when no job finishes for this long (s)")
    ] = 120.0,
) -> None:
    """Start everything locally, run a stream of real jobs from the Azure trace, summarise, exit.

    Exits 1, keeping its logs, if an agent dies or no job finishes for --stall-s seconds."""
    from hashserve.demo import DemoFailed, run_demo

    try:
        summary = run_demo(
            jobs=jobs, n_agents=agents, rate_per_s=rate, seed=seed, stall_s=stall_s
        )
    except DemoFailed as err:
        console.print(f"[red]hashserve demo failed:[/] {err}")
        raise typer.Exit(1) from None
    if json_out:
        print(json.dumps(summary))
    if summary.get("lost", 0):
        raise typer.Exit(1)


# ----- customers --------------------------------------------------------------------------------


@app.command()
def submit(
    model: Annotated[str, typer.Option(help="model name (see `hashserve models`)")],
    embed: Annotated[list[str] | None, typer.Option(help="text to embed; repeatable")] = None,
    prompt: Annotated[str | None, typer.Option(help="prompt to generate from")] = None,
    max_tokens: int = 64,
    temperature: float = 0.0,
    tier: Annotated[str, typer.Option(help="interactive | standard | flex")] = "standard",
    deadline: Annotated[
        str | None, typer.Option(help="seconds from now (e.g. 3600) or an RFC 3339 time")
    ] = None,
    region: Annotated[list[str] | None, typer.Option(help="allowed region; repeatable")] = None,
    idempotency_key: str = "",
    wait: Annotated[bool, typer.Option(help="wait for the result, streaming tokens")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="last line: the job as JSON")] = False,
    scheduler: SchedulerOpt = None,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Submit a job: --embed TEXT... or --prompt TEXT."""
    if tier not in TIERS:
        console.print(f"[red]--tier must be one of {', '.join(TIERS)}[/]")
        raise typer.Exit(2)
    if bool(embed) == bool(prompt):
        console.print("[red]give either --embed TEXT (repeatable) or --prompt TEXT[/]")
        raise typer.Exit(2)
    if embed:
        spec = embed_spec(model, list(embed), tier, region or ())
    else:
        assert prompt is not None
        spec = generate_spec(model, prompt, max_tokens, tier, temperature, region or ())
    if deadline:
        _set_deadline(spec, deadline)

    async def go() -> None:
        async with _client(scheduler, api_key, tls_ca) as client:
            resp = await client.submit(spec, idempotency_key)
            job = resp.job
            if not json_out:
                note = " (deduplicated)" if resp.deduplicated else ""
                out.print(f"submitted {job.id}{note}")
            if wait:
                job = await _follow(client, job.id, stream_tokens=not json_out)
            if json_out:
                print(json.dumps(job_to_dict(job)))
            elif wait:
                _print_job(job)

    _run_rpc(go())


def _set_deadline(spec: object, text: str) -> None:
    import time
    from datetime import datetime

    try:
        t_s = time.time() + float(text)
    except ValueError:
        try:
            t_s = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            console.print(f"[red]--deadline {text!r}: give seconds from now or an RFC 3339 time[/]")
            raise typer.Exit(2) from None
    spec.deadline.FromNanoseconds(int(t_s * 1e9))  # type: ignore[attr-defined]


async def _follow(client: Client, job_id: str, stream_tokens: bool) -> jobs_pb2.Job:
    last = None
    async for event in client.watch(job_id):
        if event.HasField("tokens") and stream_tokens:
            sys.stdout.write(event.tokens.text)
            sys.stdout.flush()
        elif event.HasField("job"):
            last = event.job
            if stream_tokens and last.state >= 4:
                sys.stdout.write("\n")
    return last if last is not None else await client.get(job_id)


def _print_job(job: object) -> None:
    d = job_to_dict(job)  # type: ignore[arg-type]
    out.print_json(json.dumps({k: v for k, v in d.items() if k != "result"}))
    result = d["result"]
    assert isinstance(result, dict)
    if "embeddings" in result:
        vecs = result["embeddings"]
        out.print(f"{len(vecs)} embedding(s) of {len(vecs[0]) if vecs else 0} dimensions")
    elif "text" in result:
        out.print(result["text"])


@app.command()
def jobs(
    state: Annotated[str | None, typer.Option(help="only jobs in this state")] = None,
    limit: int = 50,
    page_token: str = "",
    json_out: Annotated[bool, typer.Option("--json")] = False,
    scheduler: SchedulerOpt = None,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """List your jobs, newest id last, a page at a time."""
    from rich.table import Table

    codes = {name: code for code, name in STATE_NAMES.items() if code}
    if state and state not in codes:
        console.print(f"[red]--state must be one of {', '.join(codes)}[/]")
        raise typer.Exit(2)

    async def go() -> None:
        async with _client(scheduler, api_key, tls_ca) as client:
            resp = await client.list_jobs(limit, page_token, codes.get(state or "", 0))
        if json_out:
            print(
                json.dumps(
                    {
                        "jobs": [job_to_dict(j) for j in resp.jobs],
                        "next_page_token": resp.next_page_token,
                    }
                )
            )
            return
        table = Table("id", "state", "model", "tier", "site", "node", "total ms")
        for j in resp.jobs:
            d = job_to_dict(j)
            timings = d["timings"]
            assert isinstance(timings, dict)
            table.add_row(
                str(d["id"]),
                str(d["state"]),
                str(d["model"]),
                str(d["tier"]),
                str(d["site"]),
                str(d["node"]),
                f"{timings['total_ms']:.0f}",
            )
        out.print(table)
        if resp.next_page_token:
            out.print(f"next page: --page-token {resp.next_page_token}")

    _run_rpc(go())


@app.command()
def watch(
    job_id: str,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    scheduler: SchedulerOpt = None,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Follow a job: its state changes and generated tokens as they come."""

    async def go() -> None:
        async with _client(scheduler, api_key, tls_ca) as client:
            async for event in client.watch(job_id):
                if event.HasField("tokens"):
                    if json_out:
                        print(json.dumps({"tokens": event.tokens.text}))
                    else:
                        sys.stdout.write(event.tokens.text)
                        sys.stdout.flush()
                else:
                    d = job_to_dict(event.job)
                    if json_out:
                        print(json.dumps(d))
                    else:
                        console.print(f"[bold]{d['state']}[/] {d['site']} {d['node']}".rstrip())

    _run_rpc(go())


@app.command()
def cancel(
    job_id: str,
    scheduler: SchedulerOpt = None,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Cancel a job that has not finished."""

    async def go() -> None:
        async with _client(scheduler, api_key, tls_ca) as client:
            job = await client.cancel(job_id)
        out.print(f"{job.id}: {STATE_NAMES[job.state]}")

    _run_rpc(go())


@app.command()
def models(
    json_out: Annotated[bool, typer.Option("--json")] = False,
    scheduler: SchedulerOpt = None,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """The models you can ask for, their limits and prices per tier."""
    from google.protobuf.json_format import MessageToDict
    from rich.table import Table

    async def go() -> None:
        async with _client(scheduler, api_key, tls_ca) as client:
            resp = await client.models()
        if json_out:
            print(json.dumps(MessageToDict(resp)))
            return
        table = Table("model", "kind", "max in", "max out", "nodes", "USD / M tokens by tier")
        for m in resp.models:
            prices = ", ".join(
                f"{next(k for k, v in TIERS.items() if v == p.tier)} {p.usd_per_million_tokens:g}"
                for p in m.prices
            )
            kind = "embedding" if m.kind == 1 else "generation"
            table.add_row(
                m.name,
                kind,
                str(m.max_input_tokens),
                str(m.max_output_tokens),
                str(m.nodes_serving),
                prices,
            )
        out.print(table)

    _run_rpc(go())


# ----- operators: `hashserve sites`, `hashserve market`, `hashserve admin ...` ------------------
from hashserve.admin_cli import register as _register_admin_commands  # noqa: E402

_register_admin_commands(app)


@app.command("export-prices")
def export_prices(
    out: Annotated[Path, typer.Option("--out", help="the price file to write (CSV)")],
    journal: Annotated[str, typer.Option(help="the scheduler's journal URL")] = (
        "sqlite:///var/hashserve/journal.db"
    ),
    zone: Annotated[list[str] | None, typer.Option(help="only these zones (repeatable)")] = None,
    start: Annotated[str | None, typer.Option(help="first hour, ISO 8601 UTC")] = None,
    end: Annotated[str | None, typer.Option(help="end (exclusive), ISO 8601 UTC")] = None,
) -> None:
    """Write the live prices the scheduler kept in its journal as a price file that
    `hashserve backtest --prices FILE` reads."""
    from scheduler.feeds.export import export_prices as write
    from scheduler.feeds.history import parse_utc_s

    try:
        start_s = parse_utc_s(start) if start else None
        end_s = parse_utc_s(end) if end else None
    except ValueError as exc:
        console.print(f"[red]export-prices: {exc}[/]")
        raise typer.Exit(2) from None
    try:
        hours, zones = write(journal, out, zone or (), start_s, end_s)
    except (OSError, ValueError) as exc:
        console.print(f"[red]export-prices: {exc}[/]")
        raise typer.Exit(2) from None
    if hours == 0:
        console.print("[yellow]the journal has no live prices (no live source has run)[/]")
        raise typer.Exit(1)
    console.print(f"wrote {hours} hours of {zones} zones to {out}")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def backtest(ctx: typer.Context) -> None:
    """Replay history through the scheduler's core and the baselines; compare them with the
    hindsight optimum (`hashserve backtest --help` for its options)."""
    # Imported here: the backtester pulls in SciPy, which the other commands do not need.
    from scheduler.backtest.cli import app as backtest_app

    backtest_app(args=list(ctx.args), prog_name="hashserve backtest")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
