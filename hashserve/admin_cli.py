"""The operators' commands: `hashserve sites`, `hashserve market` and `hashserve admin ...`.

Thin, like `cli.py`: each command checks what it can without a server (a mode name, a finite
price, a window that ends after it starts, a time it can read), makes one or two AdminService
calls through `AdminClient`, and prints a table, or with `--json` one line of JSON (the last line
printed). Everything else is the server's to decide and to refuse: its gRPC status is printed as
`CODE: details` with exit status 1. Usage errors exit with status 2.

The admin key comes from --admin-key, env HASHSERVE_ADMIN_KEY, or var/hashserve/credentials.env
(written by `hashserve up`); the scheduler address likewise from --scheduler, HASHSERVE_SCHEDULER
or that file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import Enum
from typing import Annotated, TypeVar

import grpc
import typer
from rich.console import Console

from hashserve.admin_client import AdminClient, resolve_admin_key
from hashserve.admin_views import (
    AGENT_CREDENTIAL_COLUMNS,
    USAGE_COLUMNS,
    accounting_table,
    accounting_totals,
    agent_credential_records,
    agent_credentials_table,
    as_dict,
    curtailments_table,
    iso,
    nodes_table,
    print_json,
    print_market,
    seconds,
    site_totals,
    sites_table,
    usage_records,
    usage_table,
)
from hashserve.client import resolve
from hashserve.v1 import admin_pb2

T = TypeVar("T")
DEFAULT_SCHEDULER = "127.0.0.1:50051"
HOUR_S = 3600.0

admin_app = typer.Typer(
    help="Operators' commands (need an admin key): nodes, overrides, market values, tenants, "
    "keys, agent credentials and accounting.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one greppable line
out = Console()

SchedulerOpt = Annotated[
    str | None, typer.Option("--scheduler", help="HOST:PORT [env HASHSERVE_SCHEDULER]")
]
AdminKeyOpt = Annotated[
    str | None, typer.Option("--admin-key", help="[env HASHSERVE_ADMIN_KEY]")
]
TlsCaOpt = Annotated[str | None, typer.Option("--tls-ca", help="CA to verify the scheduler")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print one line of JSON (the last line) instead")
]


class Mode(str, Enum):
    auto = "auto"
    curtail = "curtail"
    mine = "mine"
    serve = "serve"


def register(app: typer.Typer) -> None:
    """Mount the operators' commands on the main `hashserve` app."""
    app.command("sites")(sites)
    app.command("market")(market)
    app.add_typer(admin_app, name="admin")


# ----- plumbing ---------------------------------------------------------------------------------


def usage_error(message: str) -> typer.Exit:
    err_console.print(f"[red]{message}[/]")
    return typer.Exit(2)


def call(
    scheduler: str | None,
    admin_key: str | None,
    tls_ca: str | None,
    fn: Callable[[AdminClient], Awaitable[T]],
    hints: Mapping[grpc.StatusCode, str] | None = None,
) -> T:
    """Run `fn` with a client; a gRPC error becomes `CODE: details` and exit status 1, with
    what to do next where `hints` has one for the code."""
    address = resolve(scheduler, "HASHSERVE_SCHEDULER", DEFAULT_SCHEDULER)
    assert address is not None
    key = resolve_admin_key(admin_key)
    if not key:
        raise usage_error(
            "no admin key: pass --admin-key, set HASHSERVE_ADMIN_KEY, or run `hashserve up` "
            "here (it writes var/hashserve/credentials.env)"
        )

    async def go() -> T:
        async with AdminClient(address, key, tls_ca) as client:
            return await fn(client)

    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as err:
        hint = ""
        if err.code() == grpc.StatusCode.UNAVAILABLE:
            hint = f" (is the scheduler running at {address}? --scheduler / HASHSERVE_SCHEDULER)"
        elif hints and err.code() in hints:
            hint = f" ({hints[err.code()]})"
        err_console.print(f"[red]{err.code().name}[/]: {err.details()}{hint}")
        raise typer.Exit(1) from None
    except OSError as err:  # an unreadable --tls-ca
        raise usage_error(str(err)) from None


def parse_when(text: str, now_s: float) -> float:
    """Seconds from now (`30`, `-5`, `now`) or an RFC 3339 time (`2025-01-31T14:00:00Z`)."""
    text = text.strip()
    if text.lower() == "now":
        return now_s
    try:
        offset_s = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(offset_s):
            raise ValueError(f"{text!r} is not a time")
        return now_s + offset_s
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r}: give seconds from now (e.g. 600) or an RFC 3339 time "
            "(e.g. 2025-01-31T14:00:00Z)"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z or an offset such as +02:00")
    return when.timestamp()


# ----- sites and market -------------------------------------------------------------------------


def sites(
    region: Annotated[str | None, typer.Option(help="only the sites of this region")] = None,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Every site: price, R_mine, how its power is split (MW), overrides, nodes, jobs, profit."""

    async def go(c: AdminClient) -> admin_pb2.ListSitesResponse:
        return await c.sites()

    resp = call(scheduler, admin_key, tls_ca, go)
    chosen = [s for s in resp.sites if region is None or s.region == region]
    if region is not None and not chosen:
        regions = sorted({s.region for s in resp.sites})
        raise usage_error(f"no site in region {region!r}; regions: {', '.join(regions)}")
    if json_out:
        print_json(
            {
                "as_of": resp.as_of.ToJsonString() if resp.HasField("as_of") else None,
                "sites": [as_dict(s) for s in chosen],
                "totals": site_totals(chosen),
            }
        )
        return
    out.print(sites_table(chosen, title=f"sites at {iso(seconds(resp.as_of))}"))
    for s in chosen:
        if s.override or s.feed_fallback:
            out.print(f"[bold]{s.name}[/]: {s.mode_reason}")


def market(
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Zone prices with their source and age, BTC price, hashprice, difficulty, problems."""

    async def go(c: AdminClient) -> admin_pb2.Market:
        return await c.market()

    m = call(scheduler, admin_key, tls_ca, go)
    print_market(m, json_out, time.time())


# ----- admin: nodes -----------------------------------------------------------------------------


@admin_app.command("nodes")
def admin_nodes(
    site: Annotated[str, typer.Option(help="only the nodes of this site")] = "",
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """The node agents the scheduler knows: connected, draining, jobs, power, models."""

    async def go(c: AdminClient) -> admin_pb2.ListNodesResponse:
        return await c.nodes(site)

    resp = call(scheduler, admin_key, tls_ca, go)
    if json_out:
        print_json({"nodes": [as_dict(n) for n in resp.nodes]})
        return
    out.print(nodes_table(resp.nodes))


def _node_command(node_id: str, drain: bool, json_out: bool, scheduler: str | None,
                  admin_key: str | None, tls_ca: str | None) -> None:
    async def go(c: AdminClient) -> admin_pb2.Node:
        return await (c.drain(node_id) if drain else c.resume(node_id))

    node = call(scheduler, admin_key, tls_ca, go)
    if json_out:
        print_json(as_dict(node))
        return
    what = "draining: no new work; running jobs finish" if node.draining else "takes new work"
    out.print(f"{node.id}: {what}")
    out.print(nodes_table([node]))


@admin_app.command("drain")
def admin_drain(
    node_id: Annotated[str, typer.Argument(help="node (agent) id, see `hashserve admin nodes`")],
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Stop placing new work on a node; what runs there finishes."""
    _node_command(node_id, True, json_out, scheduler, admin_key, tls_ca)


def _model_command(node_id: str, model: str, load: bool, json_out: bool,
                   scheduler: str | None, admin_key: str | None, tls_ca: str | None) -> None:
    async def go(c: AdminClient) -> admin_pb2.Node:
        return await c.set_model(node_id, model, load)

    node = call(scheduler, admin_key, tls_ca, go)
    if json_out:
        print_json(as_dict(node))
        return
    out.print(f"{node.id}: {'loading' if load else 'unloading'} {model}; "
              "`hashserve admin nodes` shows when it is done")
    out.print(nodes_table([node]))


@admin_app.command("load-model")
def admin_load_model(
    node_id: Annotated[str, typer.Argument(help="node (agent) id, see `hashserve admin nodes`")],
    model: Annotated[str, typer.Argument(help="a model the node can serve")],
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Load a model on a node now (its agent checks its memory first)."""
    _model_command(node_id, model, True, json_out, scheduler, admin_key, tls_ca)


@admin_app.command("unload-model")
def admin_unload_model(
    node_id: Annotated[str, typer.Argument(help="node (agent) id")],
    model: Annotated[str, typer.Argument(help="a model loaded there")],
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Unload a model from a node, freeing its memory; refused while its jobs run there."""
    _model_command(node_id, model, False, json_out, scheduler, admin_key, tls_ca)


@admin_app.command("resume")
def admin_resume(
    node_id: Annotated[str, typer.Argument(help="node (agent) id")],
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Let a drained node take new work again."""
    _node_command(node_id, False, json_out, scheduler, admin_key, tls_ca)


# ----- admin: site overrides --------------------------------------------------------------------


def _print_site(site: admin_pb2.Site, json_out: bool) -> None:
    if json_out:
        print_json(as_dict(site))
        return
    out.print(sites_table([site]))
    out.print(f"[bold]why:[/] {site.mode_reason or '-'}")


@admin_app.command("set-mode")
def admin_set_mode(
    site: Annotated[str, typer.Argument(help="site name, see `hashserve sites`")],
    mode: Annotated[
        Mode, typer.Argument(help="auto: the planner decides; curtail, mine or serve: forced")
    ],
    cap_mw: Annotated[
        float, typer.Option(help="ops cap on the site's power in MW; 0: none")
    ] = 0.0,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Force a site's power mode (or give it back to the planner with `auto`), and cap it."""
    if not math.isfinite(cap_mw) or cap_mw < 0:
        raise usage_error(f"--cap-mw must be a number >= 0, got {cap_mw}")

    async def go(c: AdminClient) -> admin_pb2.Site:
        return await c.set_mode(site, mode.value, cap_mw)

    _print_site(call(scheduler, admin_key, tls_ca, go), json_out)


@admin_app.command("curtail")
def admin_curtail(
    site: Annotated[str, typer.Argument(help="site name")],
    end: Annotated[str, typer.Option("--end", help="seconds from now or an RFC 3339 time")],
    start: Annotated[
        str, typer.Option("--start", help="seconds from now or an RFC 3339 time")
    ] = "now",
    reason: Annotated[str, typer.Option(help="why (shown in the plan's reasons)")] = "",
    max_load_mw: Annotated[
        float,
        typer.Option(help="the site's load (mining + AI) stays at or under this; 0: nothing"),
    ] = 0.0,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Schedule a demand-response window: from --start to --end the site's load stays at or
    under --max-load-mw (default 0: it draws nothing). Running AI work over that is preempted."""
    now_s = time.time()
    try:
        start_s = parse_when(start, now_s)
        end_s = parse_when(end, now_s)
    except ValueError as err:
        raise usage_error(str(err)) from None
    if end_s <= start_s:
        raise usage_error(f"--end ({iso(end_s)}) must be after --start ({iso(start_s)})")
    if end_s <= now_s:
        raise usage_error(f"--end ({iso(end_s)}) is in the past")
    if len(reason) > 200:
        raise usage_error("--reason: at most 200 characters")
    if not math.isfinite(max_load_mw) or max_load_mw < 0:
        raise usage_error(f"--max-load-mw must be >= 0, got {max_load_mw}")

    async def go(c: AdminClient) -> admin_pb2.Site:
        return await c.curtail(site, start_s, end_s, reason, max_load_mw=max_load_mw)

    site_msg = call(scheduler, admin_key, tls_ca, go)
    _print_site(site_msg, json_out)
    if not json_out:
        out.print(curtailments_table(site_msg.curtailments))


@admin_app.command("curtailments")
def admin_curtailments(
    site: Annotated[str, typer.Option(help="only this site's windows")] = "",
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Demand-response windows that have not ended, with their ids (to cancel one)."""

    async def go(c: AdminClient) -> admin_pb2.ListCurtailmentsResponse:
        return await c.curtailments(site)

    resp = call(scheduler, admin_key, tls_ca, go)
    if json_out:
        print_json({"windows": [as_dict(w) for w in resp.windows]})
        return
    out.print(curtailments_table(resp.windows))


@admin_app.command("cancel-curtailment")
def admin_cancel_curtailment(
    window_id: Annotated[str, typer.Argument(help="the window's id, see `admin curtailments`")],
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """End a demand-response window now, or drop one that has not started."""

    async def go(c: AdminClient) -> admin_pb2.Site:
        return await c.cancel_curtailment(window_id)

    _print_site(call(scheduler, admin_key, tls_ca, go), json_out)


# ----- admin: market values ---------------------------------------------------------------------


# A price can be negative: let `-50` through as the argument instead of an unknown option.
@admin_app.command("set-price", context_settings={"ignore_unknown_options": True})
def admin_set_price(
    zone: Annotated[str, typer.Argument(help="price zone, see `hashserve market`")],
    usd_per_mwh: Annotated[float, typer.Argument(help="USD per MWh; may be negative")],
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Set a zone's power price (ops value; beats the feeds until `clear-market` or a day)."""
    if not math.isfinite(usd_per_mwh):
        raise usage_error(f"USD_PER_MWH must be a finite number, got {usd_per_mwh}")

    async def go(c: AdminClient) -> admin_pb2.Market:
        return await c.set_price(zone, usd_per_mwh)

    print_market(call(scheduler, admin_key, tls_ca, go), json_out, time.time())


@admin_app.command("set-btc")
def admin_set_btc(
    btc_usd: Annotated[float, typer.Option(help="Bitcoin price in USD")] = 0.0,
    hashprice: Annotated[
        float, typer.Option(help="hashprice in USD per PH/s per day (used as is)")
    ] = 0.0,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Set the Bitcoin price and/or the hashprice (ops values)."""
    if not btc_usd and not hashprice:
        raise usage_error("give --btc-usd X, --hashprice X, or both")
    for name, value in (("--btc-usd", btc_usd), ("--hashprice", hashprice)):
        if value and not (math.isfinite(value) and value > 0):
            raise usage_error(f"{name} must be a positive number, got {value}")

    async def go(c: AdminClient) -> admin_pb2.Market:
        return await c.set_btc(btc_usd, hashprice)

    print_market(call(scheduler, admin_key, tls_ca, go), json_out, time.time())


@admin_app.command("clear-market")
def admin_clear_market(
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Drop every ops-set market value; the feeds decide again."""

    async def go(c: AdminClient) -> admin_pb2.Market:
        return await c.clear_market()

    print_market(call(scheduler, admin_key, tls_ca, go), json_out, time.time())


# ----- admin: tenants and credentials -----------------------------------------------------------


@admin_app.command("create-tenant")
def admin_create_tenant(
    name: Annotated[str, typer.Argument(help="lowercase letters, digits, '.', '_', '-'")],
    max_queued: Annotated[int, typer.Option(help="jobs it may have queued; 0: default")] = 0,
    rate: Annotated[float, typer.Option(help="submits per second; 0: default")] = 0.0,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Create a tenant (or change its limits)."""
    if max_queued < 0:
        raise usage_error("--max-queued must be >= 0")
    if not math.isfinite(rate) or rate < 0:
        raise usage_error("--rate must be a number >= 0")

    async def go(c: AdminClient) -> admin_pb2.Tenant:
        return await c.create_tenant(name, max_queued, rate)

    tenant = call(scheduler, admin_key, tls_ca, go)
    if json_out:
        print_json(as_dict(tenant))
        return
    out.print(
        f"tenant {tenant.name}: at most {tenant.max_queued_jobs:,} queued jobs, "
        f"{tenant.submits_per_second:g} submits/s"
    )


@admin_app.command("create-key")
def admin_create_key(
    tenant: Annotated[str, typer.Argument(help="the tenant the key acts for")],
    admin: Annotated[bool, typer.Option("--admin", help="an admin key (all of this API)")] = False,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Issue an API key for a tenant. It is printed once: only its hash is stored."""

    async def go(c: AdminClient) -> admin_pb2.CreateApiKeyResponse:
        return await c.create_key(tenant, admin)

    resp = call(scheduler, admin_key, tls_ca, go)
    if json_out:
        print_json({"key_id": resp.key_id, "api_key": resp.api_key, "tenant": tenant,
                    "admin": admin})
        return
    err_console.print(
        f"{'admin ' if admin else ''}key {resp.key_id} for tenant {tenant}; it is shown once, "
        f"keep it (revoke with `hashserve admin revoke-key {resp.key_id}`):"
    )
    print(resp.api_key)


@admin_app.command("revoke-key")
def admin_revoke_key(
    key_id: Annotated[str, typer.Argument(help="the key id (hsk_<key id>_...)")],
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Revoke an API key; calls with it fail UNAUTHENTICATED from now on."""
    if key_id.startswith("hsk_"):  # the whole key was pasted: its id is the second part
        key_id = key_id.split("_", 2)[1]

    async def go(c: AdminClient) -> admin_pb2.RevokeApiKeyResponse:
        return await c.revoke_key(key_id)

    call(scheduler, admin_key, tls_ca, go)
    if json_out:
        print_json({"key_id": key_id, "revoked": True})
        return
    out.print(f"key {key_id} revoked")


@admin_app.command("new-key")
def admin_new_key() -> None:
    """Make a fresh admin key offline, for the scheduler's bootstrap HASHSERVE_ADMIN_KEY."""
    from scheduler.api.auth import new_api_key

    _, key = new_api_key()
    print(key)


# ----- admin: agent credentials -----------------------------------------------------------------


def _check_ttl(ttl_s: float) -> None:
    if not math.isfinite(ttl_s) or ttl_s < 0:
        raise usage_error(f"--ttl-s must be a number of seconds >= 0 (0: the default), got {ttl_s}")


async def _listed(c: AdminClient, credential_id: str,
                  agent_id: str = "") -> admin_pb2.AgentCredential | None:
    """A credential just issued, as the scheduler lists it (for the region it bound); None if
    the listing fails: the token is already issued and must still be printed."""
    try:
        resp = await c.agent_credentials(agent_id)
    except grpc.aio.AioRpcError:
        return None
    return next((cred for cred in resp.credentials if cred.credential_id == credential_id), None)


@admin_app.command("agent-token")
def admin_agent_token(
    agent_id: Annotated[str, typer.Argument(help="the agent id the token binds")],
    site: Annotated[str, typer.Option(help="the agent's site (the token binds it)")],
    region: Annotated[str, typer.Option(help="the site's region; default: the fleet's")] = "",
    ttl_s: Annotated[float, typer.Option(
        help="lifetime in seconds; 0: the scheduler's agent_credential_ttl_s (7 days)")] = 0.0,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Issue a per-agent token (--token-file), for an agent that cannot enroll. Printed once.

    It binds the agent id, site and region: a hello naming anything else is refused. Agents
    that can should enroll instead (`bootstrap-token`): their credential is renewed for them.
    """
    _check_ttl(ttl_s)

    async def go(c: AdminClient) -> tuple[admin_pb2.CreateAgentTokenResponse,
                                          admin_pb2.AgentCredential | None]:
        resp = await c.agent_token(agent_id, site, region, ttl_s)
        return resp, await _listed(c, resp.credential_id, agent_id)

    resp, listed = call(scheduler, admin_key, tls_ca, go)
    bound_region = listed.region if listed is not None else region
    expires = iso(seconds(resp.expires_at))
    if json_out:
        print_json({"agent_id": agent_id, "site": site, "region": bound_region,
                    "credential_id": resp.credential_id, "expires_at": expires,
                    "token": resp.token})
        return
    err_console.print(
        f"token {resp.credential_id} for agent {agent_id} at {site} ({bound_region or '?'}), "
        f"until {expires}; it is shown once (revoke with `hashserve admin revoke-agent "
        f"--credential {resp.credential_id}`):"
    )
    print(resp.token)


@admin_app.command("bootstrap-token")
def admin_bootstrap_token(
    site: Annotated[str, typer.Option(help="the site whose agents it may enroll")],
    region: Annotated[str, typer.Option(help="the site's region; default: the fleet's")] = "",
    agent_id: Annotated[list[str] | None, typer.Option(
        "--agent-id", help="only this agent id; repeatable (default: any id at the site)")]
    = None,
    ttl_s: Annotated[float, typer.Option(
        help="seconds it may be used for; 0: one hour; at most 7 days")] = 0.0,
    uses: Annotated[int, typer.Option(help="enrollments it allows; 0: one")] = 0,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Issue a bootstrap token: it can only enroll agents of one site. Printed once.

    Give it to the agent (--bootstrap-token-file): it enrolls once, keeps its own credential in
    --state-dir and renews it; the bootstrap token is then spent or expires.
    """
    _check_ttl(ttl_s)
    if uses < 0:
        raise usage_error(f"--uses must be >= 0 (0: single-use), got {uses}")
    agent_ids = list(dict.fromkeys(agent_id or ()))

    async def go(c: AdminClient) -> tuple[admin_pb2.CreateBootstrapTokenResponse,
                                          admin_pb2.AgentCredential | None]:
        resp = await c.bootstrap_token(site, region, agent_ids, ttl_s, uses)
        return resp, await _listed(c, resp.credential_id)

    resp, listed = call(scheduler, admin_key, tls_ca, go)
    bound_region = listed.region if listed is not None else region
    uses_left = listed.uses_left if listed is not None else (uses or 1)
    expires = iso(seconds(resp.expires_at))
    if json_out:
        print_json({"credential_id": resp.credential_id, "site": site, "region": bound_region,
                    "agent_ids": agent_ids, "uses": uses_left, "expires_at": expires,
                    "token": resp.token})
        return
    who = ", ".join(agent_ids) if agent_ids else "any agent id"
    err_console.print(
        f"bootstrap token {resp.credential_id}: enrolls {who} at {site} "
        f"({bound_region or '?'}), {uses_left} time{'' if uses_left == 1 else 's'}, until "
        f"{expires}; it is shown once (give it to the agent as --bootstrap-token-file):"
    )
    print(resp.token)


def new_bootstrap_token() -> str:
    """`hsb_<12 hex>_<secret>`: the shape the scheduler's bootstrap_token setting requires."""
    from scheduler.api.agent_identity import BOOTSTRAP_PREFIX

    return f"{BOOTSTRAP_PREFIX}_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"


@admin_app.command("new-bootstrap-token")
def admin_new_bootstrap_token() -> None:
    """Make a fresh bootstrap token offline, for a deployment's HASHSERVE_BOOTSTRAP_TOKEN."""
    print(new_bootstrap_token())


@admin_app.command("agent-credentials")
def admin_agent_credentials(
    agent_id: Annotated[str, typer.Option(help="only this agent's")] = "",
    revoked: Annotated[bool, typer.Option("--revoked", help="revoked ones too")] = False,
    expired: Annotated[bool, typer.Option("--expired", help="expired ones too")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV on stdout")] = False,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Agent credentials: tokens, certificates, bootstrap tokens; what each binds, last use.

    Live ones by default; with --revoked and --expired the others too, each with its last use
    (what an audit after a revocation looks for).
    """

    async def go(c: AdminClient) -> admin_pb2.ListAgentCredentialsResponse:
        return await c.agent_credentials(agent_id, revoked, expired)

    creds = list(call(scheduler, admin_key, tls_ca, go).credentials)
    if json_out:
        print_json({"credentials": agent_credential_records(creds)})
    elif csv_out:
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=list(AGENT_CREDENTIAL_COLUMNS))
        writer.writeheader()
        writer.writerows(agent_credential_records(creds, flat=True))
    else:
        out.print(agent_credentials_table(creds, time.time()))


def revoke_target(agent_id: str | None, credential: str | None) -> tuple[str, str]:
    """(credential id, agent id), exactly one of them set. A pasted bootstrap token
    (hsb_<id>_...) stands for its credential id, bt-<id>."""
    if bool(agent_id) == bool(credential):
        raise ValueError("give an AGENT_ID or --credential ID (one of them)")
    if credential and credential.startswith("hsb_"):
        credential = f"bt-{credential.split('_', 2)[1]}"
    return credential or "", agent_id or ""


@admin_app.command("revoke-agent")
def admin_revoke_agent(
    agent_id: Annotated[str | None, typer.Argument(
        help="revoke every live credential of this agent")] = None,
    credential: Annotated[str | None, typer.Option(
        "--credential", help="revoke this one credential (see `admin agent-credentials`)")]
    = None,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Revoke an agent's credentials, or one credential; it takes effect at once.

    The agent's open stream is closed (UNAUTHENTICATED) and the credential is refused from then
    on, on every scheduler of the journal. To let the agent back, enroll it again with a new
    bootstrap token.
    """
    try:
        credential_id, agent = revoke_target(agent_id, credential)
    except ValueError as err:
        raise usage_error(str(err)) from None

    async def go(c: AdminClient) -> admin_pb2.RevokeAgentCredentialResponse:
        return await c.revoke_agent(credential_id, agent)

    hint = (f"see `hashserve admin agent-credentials --agent-id {agent}`" if agent
            else "see `hashserve admin agent-credentials`")
    resp = call(scheduler, admin_key, tls_ca, go, hints={grpc.StatusCode.NOT_FOUND: hint})
    if json_out:
        print_json({"agent_id": agent, "credential_id": credential_id,
                    "revoked": list(resp.revoked), "streams_closed": resp.streams_closed})
        return
    what = f"agent {agent}" if agent else f"credential {credential_id}"
    closed = resp.streams_closed
    out.print(
        f"{what}: revoked {', '.join(resp.revoked)}; {closed} open stream"
        f"{'' if closed == 1 else 's'} closed"
    )


# ----- admin: usage and accounting --------------------------------------------------------------


def parse_day_or_when(text: str, now_s: float) -> float:
    """`parse_when`, or a date (`2026-11-01`) meaning its start in UTC."""
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        return parse_when(text, now_s)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


@admin_app.command("usage")
def admin_usage(
    tenant: Annotated[str, typer.Option(help="only this tenant (default: all)")] = "",
    from_: Annotated[str | None, typer.Option(
        "--from", help="jobs finished from: a date (UTC), an RFC 3339 time, or seconds from "
        "now (-86400)")] = None,
    to: Annotated[str | None, typer.Option(help="... to before this time (default: now)")]
    = None,
    hourly: Annotated[bool, typer.Option(help="a row per UTC hour too")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV on stdout")] = False,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Metered usage: tokens in and out and USD charged, per tenant, model and tier.

    From the succeeded jobs themselves, by the wall-clock time they finished; the charges add
    up to the accounting's AI revenue.
    """
    now_s = time.time()
    try:
        start_s = parse_day_or_when(from_, now_s) if from_ else None
        end_s = parse_day_or_when(to, now_s) if to else None
    except ValueError as err:
        raise usage_error(str(err)) from None
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise usage_error("--to must be after --from")
    resp = call(scheduler, admin_key, tls_ca,
                lambda c: c.usage(tenant, start_s=start_s, end_s=end_s, hourly=hourly))
    records = usage_records(resp.rows)
    if json_out:
        print_json({"rows": records})
    elif csv_out:
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=list(USAGE_COLUMNS))
        writer.writeheader()
        writer.writerows(records)
    else:
        out.print(usage_table(list(resp.rows)))


@admin_app.command("accounting")
def admin_accounting(
    site: Annotated[str, typer.Option(help="only this site")] = "",
    hours: Annotated[int, typer.Option(help="the last N market hours, the current one included")]
    = 6,
    json_out: JsonOpt = False,
    scheduler: SchedulerOpt = None,
    admin_key: AdminKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """MWh by use, revenue by source, power cost and profit, per site and hour; totals.

    Hours are the market's (on a compressed replay, an hour of history passes in seconds), so
    the window is counted back from the market time the scheduler reports.
    """
    if hours < 1:
        raise usage_error("--hours must be >= 1")

    async def go(c: AdminClient) -> tuple[float, admin_pb2.GetAccountingResponse]:
        m = await c.market()
        market_now_s = seconds(m.as_of) if m.HasField("as_of") else time.time()
        start_s = (market_now_s // HOUR_S - (hours - 1)) * HOUR_S
        return start_s, await c.accounting(site, start_s=start_s)

    start_s, resp = call(scheduler, admin_key, tls_ca, go)
    rows = list(resp.rows)
    if json_out:
        print_json(
            {
                "start": dt.datetime.fromtimestamp(start_s, tz=dt.UTC).isoformat(),
                "rows": [as_dict(r) for r in rows],
                "totals": accounting_totals(rows),
            }
        )
        return
    out.print(accounting_table(rows))
