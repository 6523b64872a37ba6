"""The operators' CLI without a server: argument checks, where the key and address come from,
the gRPC status on errors, and the tables and JSON it prints (`admin_views`)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from hashserve import admin_cli
from hashserve.admin_cli import parse_when
from hashserve.admin_client import resolve_admin_key, to_timestamp
from hashserve.admin_views import (
    accounting_table,
    accounting_totals,
    print_market,
    site_totals,
    sites_table,
)
from hashserve.cli import app
from hashserve.v1 import admin_pb2
from scheduler.api.auth import key_id_of

runner = CliRunner()
KEY = "hsk_0123456789ab_" + "s" * 32


@pytest.fixture(autouse=True)
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run where no var/hashserve/credentials.env is, with no HASHSERVE_* in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("HASHSERVE_ADMIN_KEY", "HASHSERVE_SCHEDULER", "HASHSERVE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----- usage errors (exit 2), before any call -----------------------------------------------------

USAGE_ERRORS = [
    (["sites"], "no admin key"),
    (["admin", "set-mode", "tx-odessa", "turbo"], "turbo"),
    (["admin", "set-mode", "tx-odessa", "auto", "--cap-mw", "-1"], "--cap-mw"),
    (["admin", "set-mode", "tx-odessa", "auto", "--cap-mw", "nan"], "--cap-mw"),
    (["admin", "set-price", "DE-LU", "nan"], "finite"),
    (["admin", "set-price", "DE-LU", "inf"], "finite"),
    (["admin", "set-price", "DE-LU", "cheap"], "usd_per_mwh"),
    (["admin", "set-btc"], "--btc-usd X, --hashprice X"),
    (["admin", "set-btc", "--hashprice", "-3"], "--hashprice must be a positive number"),
    (["admin", "set-btc", "--btc-usd", "nan"], "--btc-usd must be a positive number"),
    (["admin", "curtail", "tx-odessa", "--start", "60", "--end", "30"], "must be after --start"),
    (["admin", "curtail", "tx-odessa", "--end", "tomorrow"], "seconds from now"),
    (["admin", "curtail", "tx-odessa", "--end", "2030-01-01T00:00:00"], "no time zone"),
    (["admin", "curtail", "tx-odessa", "--start", "-120", "--end", "-60"], "in the past"),
    (["admin", "curtail", "tx-odessa", "--end", "60", "--reason", "x" * 201], "200 characters"),
    (["admin", "curtail", "tx-odessa", "--end", "60", "--max-load-mw", "-1"], "--max-load-mw"),
    (["admin", "create-tenant", "acme", "--max-queued", "-1"], "--max-queued"),
    (["admin", "create-tenant", "acme", "--rate", "-2"], "--rate"),
    (["admin", "accounting", "--hours", "0"], "--hours must be >= 1"),
    (["admin", "usage", "--from", "yesterday"], "RFC 3339"),
    (["admin", "usage", "--from", "2026-11-02", "--to", "2026-11-01"], "--to must be after"),
    (["admin", "drain"], "Missing argument"),
]


@pytest.mark.parametrize(
    ("args", "words"), USAGE_ERRORS, ids=[" ".join(a)[:60] for a, _ in USAGE_ERRORS]
)
def test_usage_errors_exit_2_with_a_clear_message(args: list[str], words: str) -> None:
    # With a key, so the argument check (not the missing key) is what fails -- except the first.
    extra = [] if args == ["sites"] else ["--admin-key", KEY]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 2, result.output
    assert words in result.output


# ----- gRPC errors (exit 1) -----------------------------------------------------------------------


def test_an_unreachable_scheduler_is_reported_with_its_status_and_address() -> None:
    address = f"127.0.0.1:{closed_port()}"
    # A negative price is the argument, not an unknown option.
    result = runner.invoke(
        app, ["admin", "set-price", "ERCOT", "-50", "--scheduler", address, "--admin-key", KEY]
    )
    assert result.exit_code == 1, result.output
    assert "UNAVAILABLE" in result.output
    assert f"is the scheduler running at {address}?" in result.output


def test_key_and_address_come_from_the_credentials_file(no_credentials: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    creds = no_credentials / "var" / "hashserve" / "credentials.env"
    creds.parent.mkdir(parents=True)
    creds.write_text(f"HASHSERVE_SCHEDULER={address}\nHASHSERVE_ADMIN_KEY={KEY}\n")
    result = runner.invoke(app, ["market"])
    # It got past the key check and dialled the file's address.
    assert result.exit_code == 1, result.output
    assert "UNAVAILABLE" in result.output and address in result.output


def test_admin_key_precedence(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = no_credentials / "var" / "hashserve" / "credentials.env"
    creds.parent.mkdir(parents=True)
    creds.write_text("HASHSERVE_ADMIN_KEY=from-file\n")
    assert resolve_admin_key(None) == "from-file"
    monkeypatch.setenv("HASHSERVE_ADMIN_KEY", "from-env")
    assert resolve_admin_key(None) == "from-env"
    assert resolve_admin_key("from-flag") == "from-flag"


# ----- offline commands and helpers -------------------------------------------------------------


def test_new_key_prints_a_key_the_scheduler_accepts_as_bootstrap() -> None:
    result = runner.invoke(app, ["admin", "new-key"])
    assert result.exit_code == 0
    key = result.output.strip()
    # What Authenticator.ensure_api_key requires: hsk_<id>_<secret>, at least 32 characters.
    assert key_id_of(key) and len(key) >= 32
    assert runner.invoke(app, ["admin", "new-key"]).output.strip() != key


def test_parse_when_reads_offsets_and_rfc3339() -> None:
    now_s = 1_700_000_000.0
    assert parse_when("now", now_s) == now_s
    assert parse_when("30", now_s) == now_s + 30
    assert parse_when("-5.5", now_s) == now_s - 5.5
    # 2025-01-31T14:00:00Z = 1,738,332,000 s; at +02:00 the same wall time is 7,200 s earlier.
    assert parse_when("2025-01-31T14:00:00Z", now_s) == 1_738_332_000.0
    assert parse_when("2025-01-31T14:00:00+02:00", now_s) == 1_738_332_000.0 - 7200
    for bad in ("inf", "nan", "2025-01-31T14:00:00", "soon"):
        with pytest.raises(ValueError):
            parse_when(bad, now_s)


def _site(name: str, **values: float) -> admin_pb2.Site:
    return admin_pb2.Site(name=name, region="europe", price_zone="DE-LU", **values)  # type: ignore[arg-type]


def test_sites_table_and_totals() -> None:
    sites = [
        _site("a", mining_mw=10.5, ai_mw=0.0007, curtailed_mw=0.2, nodes_connected=1,
              jobs_running=2, profit_usd_per_hour=700.0),
        _site("b", mining_mw=2.5, idle_mw=0.06, nodes_connected=0, profit_usd_per_hour=-50.0),
    ]
    totals = site_totals(sites)
    assert totals["mining_mw"] == pytest.approx(13.0)
    assert totals["nodes_connected"] == 1 and totals["jobs_running"] == 2
    assert totals["profit_usd_per_hour"] == pytest.approx(650.0)
    console = Console(width=250, record=True)
    console.print(sites_table(sites))
    text = console.export_text()
    assert "total (2)" in text and "13.00" in text and "650.00" in text
    assert "0.0007" in text  # a CPU node's AI load is not rounded away


def test_accounting_totals_and_table() -> None:
    rows = [
        admin_pb2.AccountingRow(site="a", hour=to_timestamp(3600.0), mining_mwh=10.0,
                                mining_revenue_usd=1100.0, ai_revenue_usd=5.0,
                                power_cost_usd=400.0, profit_usd=705.0),
        admin_pb2.AccountingRow(site="b", hour=to_timestamp(7200.0), mining_mwh=1.0,
                                mining_revenue_usd=110.0, power_cost_usd=-50.0,
                                profit_usd=160.0),
    ]
    totals = accounting_totals(rows)
    assert totals["profit_usd"] == pytest.approx(865.0)
    assert totals["profit_usd"] == pytest.approx(
        totals["mining_revenue_usd"] + totals["ai_revenue_usd"] - totals["power_cost_usd"]
    )
    console = Console(width=250, record=True)
    console.print(accounting_table(rows))
    text = console.export_text()
    assert "total (2 rows)" in text and "865.00" in text and "1970-01-01 01:00Z" in text


def test_market_json_is_one_last_line_with_zone_ages(capsys: pytest.CaptureFixture[str]) -> None:
    market = admin_pb2.Market(
        zones=[
            admin_pb2.ZonePrice(zone="DE-LU", price_usd_per_mwh=-50.0, source="ops",
                                as_of=to_timestamp(990.0)),
            admin_pb2.ZonePrice(zone="FR", stale=True),
        ],
        btc_usd=62_841.27,
        problems=["price[FR]: missing"],
    )
    print_market(market, json_out=True, now_s=1000.0)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    d = json.loads(last)
    assert d["btc_usd"] == 62_841.27 and d["problems"] == ["price[FR]: missing"]
    de, fr = d["zones"]
    assert (de["zone"], de["price_usd_per_mwh"], de["source"], de["age_s"]) == (
        "DE-LU", -50.0, "ops", 10.0,
    )
    assert fr["stale"] is True and fr["age_s"] is None


def test_the_admin_commands_are_mounted() -> None:
    result = runner.invoke(app, ["admin", "--help"])
    assert result.exit_code == 0
    for name in ("nodes", "drain", "resume", "set-mode", "curtail", "curtailments",
                 "cancel-curtailment", "set-price", "set-btc",
                 "clear-market", "create-tenant", "create-key", "revoke-key", "agent-token",
                 "accounting", "usage", "new-key"):
        assert name in result.output
    assert admin_cli.Mode("curtail") is admin_cli.Mode.curtail
