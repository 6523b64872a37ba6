"""The journal's contract, run against both backends (SQLite and a real PostgreSQL server), and
what only the PostgreSQL journal promises: another instance (another Ray node) reads what one
wrote, concurrent submits of one idempotency key end as one job, a server restart is survived,
an unreachable server or an unknown commit outcome is a clear error, and the scheduler serves
submits from it end to end.

One PostgreSQL server per module (tests/integration/postgres_server.py), one fresh database per
test. The PostgreSQL cases skip, with the reason, where the server binaries are not installed.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hashserve.client import Client, embed_spec
from scheduler.api.auth import Authenticator, new_agent_token
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.journal import IdempotencyConflict, Journal, SqliteJournal, TenantRow, open_journal
from scheduler.journal.base import AgentCredentialKind, AgentCredentialRow
from tests.integration.postgres_server import PostgresServer, unavailable_reason
from tests.unit.scheduler.core.builders import T0_S, make_record
from tests.unit.scheduler.journal.test_sqlite_journal import full_record, keyed

if TYPE_CHECKING:
    import psycopg

    from scheduler.journal.postgres import PostgresJournal

pytestmark = pytest.mark.integration

_db_numbers = itertools.count()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    pytest.importorskip("psycopg", reason="the PostgreSQL journal needs psycopg: pip install "
                        "'psycopg[binary]'")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """An empty database of its own for each test, sorting text by en-US rules (not by bytes),
    as many production servers do: the journal must not depend on the server's locale."""
    return pg_server.create_database(f"t{next(_db_numbers)}", icu_locale="en-US")


@dataclass
class Backend:
    """A journal store and how to open more instances of it (each its own connections)."""

    name: str
    opener: Callable[[], Journal]
    integrity_error: type[Exception]
    opened: list[Journal] = field(default_factory=list)

    def open(self) -> Journal:
        journal = self.opener()
        self.opened.append(journal)
        return journal


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "journal.db"
        b = Backend("sqlite", lambda: SqliteJournal(path), sqlite3.IntegrityError)
    else:
        url: str = request.getfixturevalue("pg_url")
        import psycopg

        from scheduler.journal.postgres import PostgresJournal

        b = Backend("postgres", lambda: PostgresJournal(url), psycopg.IntegrityError)
    yield b
    for journal in b.opened:
        journal.close()


@pytest.fixture
def journal(backend: Backend) -> Journal:
    return backend.open()


# ----- the contract: every field, idempotency, transactions ------------------------------------


def test_every_field_survives_the_database(journal: Journal) -> None:
    rec = full_record()
    assert journal.insert_jobs([rec]) == [(rec, False)]
    assert journal.get_job(rec.job_id) == rec
    again = rec.evolve(state=JobState.SUCCEEDED, history=(*rec.history, "x"))
    journal.write_jobs([again])
    assert journal.get_job(rec.job_id) == again


def test_empty_collections_round_trip(journal: Journal) -> None:
    rec = make_record("plain")
    journal.insert_jobs([rec])
    assert journal.get_job("plain") == rec
    assert journal.get_job("missing") is None
    assert journal.insert_jobs([]) == []


def test_same_key_and_hash_returns_the_stored_job(journal: Journal) -> None:
    first = keyed("j1", "order-1", "h1")
    assert journal.insert_jobs([first]) == [(first, False)]
    retry = keyed("j2", "order-1", "h1")  # the client retried: the API minted a fresh id
    assert journal.insert_jobs([retry]) == [(first, True)]
    assert journal.get_job("j2") is None


def test_same_key_other_hash_conflicts_and_the_batch_is_not_written(journal: Journal) -> None:
    journal.insert_jobs([keyed("j1", "order-1", "h1")])
    batch = [keyed("j2", "order-2", "h2"), keyed("j3", "order-1", "h-other")]
    with pytest.raises(IdempotencyConflict) as info:
        journal.insert_jobs(batch)
    assert info.value.existing.job_id == "j1"
    assert "order-1" in str(info.value) and "j1" in str(info.value)
    assert journal.get_job("j2") is None  # rolled back with the conflicting one
    assert journal.get_job("j3") is None
    assert journal.insert_jobs([batch[0]]) == [(batch[0], False)]  # usable afterwards


def test_keys_are_per_tenant_and_empty_keys_never_dedup(journal: Journal) -> None:
    a = keyed("a", "order-1", "h1", tenant="acme")
    b = keyed("b", "order-1", "h2", tenant="globex")
    c, d = keyed("c", "", "h1"), keyed("d", "", "h1")
    assert journal.insert_jobs([a, b, c, d]) == [(a, False), (b, False), (c, False), (d, False)]


def test_a_repeated_key_within_one_batch_is_deduplicated(journal: Journal) -> None:
    first, second = keyed("j1", "k", "h"), keyed("j2", "k", "h")
    assert journal.insert_jobs([first, second]) == [(first, False), (first, True)]


def test_a_reused_job_id_is_refused_and_nothing_is_written(
    backend: Backend, journal: Journal
) -> None:
    journal.insert_jobs([make_record("j1")])
    with pytest.raises(backend.integrity_error):
        journal.insert_jobs([make_record("j2"), make_record("j1")])
    assert journal.get_job("j2") is None


def test_write_jobs_upserts_and_records_decisions(journal: Journal) -> None:
    rec = make_record("j1")
    journal.insert_jobs([rec])
    assigned = rec.evolve(state=JobState.ASSIGNED, attempt=1, node_id="n1")
    new = make_record("j2")  # written first by write_jobs: an upsert inserts it
    journal.write_jobs(
        [assigned, new],
        decisions=[
            (T0_S, "placement", "j1", '{"node": "n1"}'),
            (T0_S + 1, "outcome", "j1", '{"accepted": true}'),
        ],
    )
    assert journal.get_job("j1") == assigned
    assert journal.get_job("j2") == new
    assert journal.decisions_for("j1") == [
        (T0_S, "placement", '{"node": "n1"}'),
        (T0_S + 1, "outcome", '{"accepted": true}'),
    ]
    assert journal.decisions_for("j2") == []
    journal.write_jobs([])  # nothing to do is not an error
    journal.write_jobs([], decisions=[(T0_S + 2, "mode", "site-1", "{}")])  # decisions alone
    assert journal.decisions_for("site-1") == [(T0_S + 2, "mode", "{}")]


def test_an_unsynced_write_is_stored_and_one_transaction_too(
    backend: Backend, journal: Journal
) -> None:
    """`synced=False` (an assignment) skips the wait for the disk, nothing else: what it wrote
    is read back, and a write it broke leaves nothing; the next synced write is as ever."""
    journal.insert_jobs([keyed("j1", "k1", "h"), keyed("j2", "k2", "h")])
    moved = keyed("j1", "k1", "h").evolve(state=JobState.ASSIGNED, attempt=1, node_id="n1")
    journal.write_jobs([moved], decisions=[(T0_S, "placement", "j1", "{}")], synced=False)
    assert journal.get_job("j1") == moved
    with pytest.raises(backend.integrity_error):
        journal.write_jobs([keyed("j2", "k1", "h")], synced=False)
    j2 = journal.get_job("j2")
    assert j2 is not None and j2.idempotency_key == "k2"
    done = moved.evolve(state=JobState.SUCCEEDED)
    journal.write_jobs([done])
    assert journal.get_job("j1") == done


def test_write_jobs_is_one_transaction(backend: Backend, journal: Journal) -> None:
    journal.insert_jobs([keyed("j1", "k1", "h"), keyed("j2", "k2", "h")])
    moved = keyed("j1", "k1", "h").evolve(state=JobState.ASSIGNED)
    clash = keyed("j2", "k1", "h")  # breaks the unique (tenant, idempotency key) index
    with pytest.raises(backend.integrity_error):
        journal.write_jobs([moved, clash], decisions=[(T0_S, "placement", "j1", "{}")])
    j1 = journal.get_job("j1")
    assert j1 is not None and j1.state is JobState.QUEUED
    assert journal.decisions_for("j1") == []


# ----- the contract: reading -------------------------------------------------------------------


def test_list_jobs_pages_by_id_within_one_tenant(journal: Journal) -> None:
    journal.insert_jobs(
        [make_record(f"a{i}", tenant="acme") for i in (3, 1, 5, 2, 4)]
        + [make_record(f"b{i}", tenant="globex") for i in (1, 2)]
    )
    pages, after = [], ""
    while page := journal.list_jobs("acme", None, 2, after):
        pages.append([r.job_id for r in page])
        after = page[-1].job_id
    assert pages == [["a1", "a2"], ["a3", "a4"], ["a5"]]
    assert [r.job_id for r in journal.list_jobs("globex", None, 10, "")] == ["b1", "b2"]
    assert journal.list_jobs("nobody", None, 10, "") == []


def test_list_jobs_orders_ids_byte_by_byte(journal: Journal) -> None:
    # SQLite compares text by bytes; the test databases sort text by en-US rules, which give
    # "_" < "a" < "B". Bytes: "B" (0x42) < "_" (0x5f) < "a" (0x61).
    journal.insert_jobs([make_record(i) for i in ("a", "B", "_")])
    assert [r.job_id for r in journal.list_jobs("acme", None, 10, "")] == ["B", "_", "a"]
    assert [r.job_id for r in journal.list_jobs("acme", None, 10, "B")] == ["_", "a"]


def test_list_jobs_filters_by_state(journal: Journal) -> None:
    journal.insert_jobs([make_record(f"a{i}") for i in range(4)])
    journal.write_jobs([make_record("a1").evolve(state=JobState.SUCCEEDED)])
    assert [r.job_id for r in journal.list_jobs("acme", "succeeded", 10, "")] == ["a1"]
    assert [r.job_id for r in journal.list_jobs("acme", "queued", 10, "")] == ["a0", "a2", "a3"]


def test_load_active_jobs_and_counts(journal: Journal) -> None:
    by_state = {state: make_record(state.value).evolve(state=state) for state in JobState}
    journal.insert_jobs(list(by_state.values()))
    active = sorted(r.job_id for r in journal.load_active_jobs())
    assert active == ["assigned", "queued", "running"]
    assert journal.count_jobs_by_state() == {state.value: 1 for state in JobState}


# ----- the contract: credentials ---------------------------------------------------------------


def test_ops_state_is_replaced_and_deleted_by_key(journal: Journal) -> None:
    assert journal.load_ops_state() == {}
    journal.put_ops_state("market:ERCOT", '{"price": 250}')
    journal.put_ops_state("market:ERCOT", '{"price": 300}')
    journal.put_ops_state("nothing-here", None)  # deleting a missing key is no error
    assert journal.load_ops_state() == {"market:ERCOT": '{"price": 300}'}
    journal.put_ops_state("market:ERCOT", None)
    assert journal.load_ops_state() == {}


def test_accounting_rows_are_replaced_ranged_and_pruned(journal: Journal) -> None:
    from scheduler.core.accounting import SiteHourRow

    a0 = SiteHourRow("a", 0.0, 1.0, 0.5, 0.1, 0.0, 95.0, 3.0, 40.0, 1800.0)
    a0_full = SiteHourRow("a", 0.0, 2.0, 1.0, 0.2, 0.0, 190.0, 6.0, 80.0, 3600.0)
    b0 = SiteHourRow("b", 0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 3600.0)
    a1 = SiteHourRow("a", 3600.0, 1.0, 0.0, 0.0, 0.0, 95.0, 0.0, 50.0, 3600.0)
    journal.put_accounting_rows([a0, b0])
    journal.put_accounting_rows([a0_full, a1])  # the hour filled up: the row is replaced
    assert journal.accounting_rows() == [a0_full, b0, a1]
    assert journal.accounting_rows("a") == [a0_full, a1]
    assert journal.accounting_rows(start_s=3600.0) == [a1]
    assert journal.accounting_rows(end_s=3600.0) == [a0_full, b0]
    assert journal.forget_accounting_before(3600.0) == 2
    assert journal.accounting_rows() == [a1]


def test_live_market_prices_are_replaced_ranged_and_pruned(journal: Journal) -> None:
    from scheduler.core.market import ZoneHourPrice

    de0 = ZoneHourPrice("DE-LU", 0.0, 80.0, "entsoe")
    tx0 = ZoneHourPrice("US-TEX-ERCO@HB_WEST", 0.0, 21.5, "ercot", 2)
    tx0_full = ZoneHourPrice("US-TEX-ERCO@HB_WEST", 0.0, 23.25, "ercot", 4)
    de1 = ZoneHourPrice("DE-LU", 3600.0, -5.0, "entsoe")
    journal.put_market_prices([de0, tx0])
    journal.put_market_prices([tx0_full, de1])  # the hour's quotes came in: replaced
    assert journal.market_prices() == [de0, tx0_full, de1]
    assert journal.market_prices("DE-LU") == [de0, de1]
    assert journal.market_prices(start_s=3600.0) == [de1]
    assert journal.forget_market_prices_before(3600.0) == 2
    assert journal.market_prices() == [de1]


def test_tenants_upsert(journal: Journal) -> None:
    assert journal.get_tenant("acme") is None
    journal.upsert_tenant(TenantRow("acme", 100, 5.0))
    journal.upsert_tenant(TenantRow("acme", 200, 7.5))
    assert journal.get_tenant("acme") == TenantRow("acme", 200, 7.5)


def test_api_keys_and_agent_tokens(backend: Backend, journal: Journal) -> None:
    journal.add_api_key("kid", "hash1", "acme", admin=True)
    row = journal.get_api_key("kid")
    assert row is not None
    assert (row.key_id, row.key_hash, row.tenant, row.admin, row.revoked) == (
        "kid", "hash1", "acme", True, False,
    )
    assert journal.revoke_api_key("kid")
    assert not journal.revoke_api_key("kid")  # already revoked
    assert not journal.revoke_api_key("other")
    row = journal.get_api_key("kid")
    assert row is not None and row.revoked
    assert journal.get_api_key("other") is None
    with pytest.raises(backend.integrity_error):
        journal.add_api_key("kid2", "hash1", "acme", admin=False)  # hashes are unique
    journal.add_api_key("kid3", "hash3", "acme", admin=False)
    row = journal.get_api_key("kid3")
    assert row is not None and not row.admin
    cred = AgentCredentialRow("tok-1", AgentCredentialKind.TOKEN, "th", "node-a", "site-a",
                              "north_america", 100.0, 200.0)
    journal.add_agent_credential(cred)
    assert journal.find_agent_credential("th") == cred
    assert journal.find_agent_credential("nope") is None


def test_agent_credentials_bootstrap_uses_revocation_and_last_use(backend: Backend) -> None:
    journal = backend.open()
    boot = AgentCredentialRow("bt-1", AgentCredentialKind.BOOTSTRAP, "bh", "", "site-a",
                              "north_america", 100.0, 200.0, ("a1", "a2"), uses_left=2)
    token = AgentCredentialRow("tok-1", AgentCredentialKind.TOKEN, "th", "a1", "site-a",
                               "north_america", 150.0, 0.0)
    journal.add_agent_credential(boot)
    journal.add_agent_credential(token)
    assert journal.find_agent_credential("bh") == boot  # the scope comes back as it went in
    # Two uses, then none; never past its expiry.
    assert journal.consume_bootstrap("bt-1", 120.0)
    assert not journal.consume_bootstrap("tok-1", 120.0)  # only bootstrap tokens are spent
    assert journal.consume_bootstrap("bt-1", 121.0)
    assert not journal.consume_bootstrap("bt-1", 122.0)
    spent = journal.find_agent_credential("bh")
    assert spent is not None and spent.uses_left == 0 and spent.last_used_s == 121.0
    journal.add_agent_credential(AgentCredentialRow(
        "bt-2", AgentCredentialKind.BOOTSTRAP, "bh2", "", "site-a", "north_america", 100.0,
        200.0, uses_left=5))
    assert not journal.consume_bootstrap("bt-2", 200.0)  # expired
    assert [r.credential_id for r in journal.list_agent_credentials()] == ["tok-1", "bt-1",
                                                                          "bt-2"]
    assert [r.credential_id for r in journal.list_agent_credentials("a1")] == ["tok-1"]
    journal.touch_agent_credential("tok-1", 160.0)
    assert journal.revoke_agent_credentials(170.0, agent_id="a1") == ["tok-1"]
    assert journal.revoke_agent_credentials(171.0, agent_id="a1") == []  # already revoked
    assert journal.revoke_agent_credentials(172.0) == []  # nothing named: nothing revoked
    revoked = journal.find_agent_credential("th")
    assert revoked is not None and (revoked.revoked_s, revoked.last_used_s) == (170.0, 160.0)
    assert journal.revoke_agent_credentials(173.0, credential_id="bt-2") == ["bt-2"]
    assert not journal.consume_bootstrap("bt-2", 150.0)  # revoked


# ----- the contract: more than one instance ----------------------------------------------------


def test_reopen_after_close_keeps_everything(backend: Backend) -> None:
    first = backend.open()
    rec = full_record()
    first.insert_jobs([rec])
    first.write_jobs([], decisions=[(T0_S, "placement", rec.job_id, "{}")])
    first.upsert_tenant(TenantRow("acme", 10, 1.0))
    first.add_api_key("kid", "hash", "acme", admin=False)
    first.add_agent_credential(AgentCredentialRow(
        "tok-1", AgentCredentialKind.TOKEN, "th", "node-a", "site-a", "north_america", 1.0, 0.0))
    first.put_ops_state("site:tx-odessa", '{"force": "curtail"}')
    first.put_ops_state("drain:node-a", "true")
    first.put_ops_state("drain:node-b", "true")
    first.put_ops_state("drain:node-b", None)
    first.close()
    second = backend.open()
    assert second.load_ops_state() == {
        "drain:node-a": "true", "site:tx-odessa": '{"force": "curtail"}'
    }
    assert second.get_job(rec.job_id) == rec
    assert second.load_active_jobs() == [rec]
    assert second.decisions_for(rec.job_id) == [(T0_S, "placement", "{}")]
    assert second.get_tenant("acme") == TenantRow("acme", 10, 1.0)
    assert second.get_api_key("kid") is not None
    found = second.find_agent_credential("th")
    assert found is not None and found.agent_id == "node-a"


def test_another_instance_reads_and_writes_the_same_jobs(backend: Backend) -> None:
    # Two scheduler processes (on PostgreSQL: on two Ray nodes) sharing one journal.
    node_a, node_b = backend.open(), backend.open()
    node_a.insert_jobs([make_record("j1")])
    assert node_b.get_job("j1") == make_record("j1")
    moved = make_record("j1").evolve(state=JobState.RUNNING, attempt=1, node_id="n1")
    node_b.write_jobs([moved], decisions=[(T0_S, "placement", "j1", "{}")])
    assert node_a.get_job("j1") == moved
    assert node_a.decisions_for("j1") == [(T0_S, "placement", "{}")]


def test_concurrent_submits_of_one_key_make_one_job(backend: Backend) -> None:
    # Six instances, each with its own connections, submit the same key at once; each retry
    # carries a fresh job id, as the API mints one per call.
    journals = [backend.open() for _ in range(6)]
    start = threading.Barrier(len(journals))

    def submit(i: int) -> list[tuple[JobRecord, bool]]:
        start.wait()
        return journals[i].insert_jobs([keyed(f"j{i}", "order-1", "h1")])

    with ThreadPoolExecutor(len(journals)) as pool:
        results = [r[0] for r in pool.map(submit, range(len(journals)))]
    winners = [rec for rec, dedup in results if not dedup]
    assert len(winners) == 1
    assert {rec.job_id for rec, _ in results} == {winners[0].job_id}
    assert journals[0].count_jobs_by_state() == {"queued": 1}


# ----- PostgreSQL only -------------------------------------------------------------------------


def _open_pg(url: str) -> PostgresJournal:
    from scheduler.journal.postgres import PostgresJournal

    return PostgresJournal(url)


def _connect(url: str) -> psycopg.Connection[Any]:
    import psycopg

    return psycopg.connect(url)


def _wait_for_a_lock_wait(url: str, timeout_s: float = 20.0) -> None:
    """Until some session of this database waits for a lock (a row another holds)."""
    deadline = time.monotonic() + timeout_s
    with _connect(url) as watcher:
        watcher.autocommit = True
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0] > 0:
                return
            time.sleep(0.02)
    raise TimeoutError("no session started waiting for the key's row")


@pytest.mark.parametrize(
    ("other_hash", "other_commits", "expected"),
    [
        ("h1", True, "dedup"),  # the first commits the same request: ours is a retry of it
        ("h-other", True, "conflict"),  # the first commits another request under the key
        ("h1", False, "inserted"),  # the first rolls back: the key is free again, ours is new
    ],
)
def test_a_submit_waits_for_a_concurrent_one_of_the_same_key(
    pg_url: str, other_hash: str, other_commits: bool, expected: str
) -> None:
    # The interleaving forced, not hoped for: another scheduler has inserted the key and not
    # committed yet when our insert arrives; ours must wait for it, then act on its outcome.
    from scheduler.journal.codec import JOB_COLUMNS, to_row

    journal = _open_pg(pg_url)
    theirs = keyed("theirs", "order-1", other_hash)
    ours = keyed("ours", "order-1", "h1")
    with _connect(pg_url) as other:
        other.execute(
            f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) "
            f"VALUES ({', '.join('%s' for _ in JOB_COLUMNS)})",
            to_row(theirs),
        )
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(journal.insert_jobs, [ours])
            _wait_for_a_lock_wait(pg_url)
            assert not pending.done()
            if other_commits:
                other.commit()
            else:
                other.rollback()
            if expected == "conflict":
                with pytest.raises(IdempotencyConflict) as info:
                    pending.result(timeout=20)
                assert info.value.existing == theirs
            else:
                result = pending.result(timeout=20)
                assert result == ([(theirs, True)] if expected == "dedup" else [(ours, False)])
    assert journal.get_job("ours") == (ours if expected == "inserted" else None)
    journal.close()


def test_open_journal_takes_a_postgresql_url(pg_url: str) -> None:
    from scheduler.journal.postgres import PostgresJournal

    for i, url in enumerate((pg_url, pg_url.replace("postgresql://", "postgres://", 1))):
        journal = open_journal(url)
        try:
            assert isinstance(journal, PostgresJournal)
            journal.insert_jobs([make_record(f"j{i}")])
            assert journal.get_job(f"j{i}") is not None
        finally:
            journal.close()


def test_a_nul_in_text_is_stored_as_a_replacement_character(pg_url: str) -> None:
    # PostgreSQL text cannot hold U+0000; an agent's error message may. The write must not fail.
    journal = _open_pg(pg_url)
    failed = make_record("j1").evolve(state=JobState.FAILED, error="bad\x00byte")
    journal.write_jobs([failed], decisions=[(T0_S, "outcome", "j1", '{"e": "\x00"}')])
    stored = journal.get_job("j1")
    assert stored is not None and stored.error == "bad\ufffdbyte"
    assert journal.decisions_for("j1") == [(T0_S, "outcome", '{"e": "\ufffd"}')]
    journal.close()


def test_the_journal_reconnects_after_a_server_restart(
    pg_server: PostgresServer, pg_url: str
) -> None:
    journal = _open_pg(pg_url)
    try:
        journal.insert_jobs([make_record("before")])
        assert journal.get_job("before") is not None  # both connections are open and used
        pg_server.restart()  # a fast restart ends every session
        # A read, then a write, each on a connection the server has dropped: both reconnect.
        assert journal.get_job("before") == make_record("before")
        assert journal.insert_jobs([make_record("after")]) == [(make_record("after"), False)]
        pg_server.restart()
        journal.write_jobs([make_record("before").evolve(state=JobState.CANCELLED)])
        pg_server.restart()
        journal.add_api_key("kid", "h", "acme", admin=False)
        assert journal.count_jobs_by_state() == {"queued": 1, "cancelled": 1}
        assert journal.get_api_key("kid") is not None
    finally:
        journal.close()


def test_an_unreachable_server_is_a_clear_error(pg_server: PostgresServer, pg_url: str) -> None:
    from scheduler.journal.postgres import JournalUnavailable

    journal = _open_pg(pg_url)
    try:
        pg_server.stop()
        for call in (lambda: journal.get_job("j1"), lambda: journal.insert_jobs([make_record()])):
            with pytest.raises(JournalUnavailable) as info:
                call()
            message = str(info.value)
            assert f"127.0.0.1:{pg_server.port}" in message
            assert pg_server.password not in message
        with pytest.raises(JournalUnavailable, match="cannot reach"):
            _open_pg(pg_url)
        pg_server.relaunch()
        # Back: the same instance carries on without being reopened.
        assert journal.insert_jobs([make_record("j1")]) == [(make_record("j1"), False)]
    finally:
        pg_server.relaunch()
        journal.close()


def test_a_connection_lost_during_commit_is_reported_not_replayed(pg_url: str) -> None:
    # A trigger that runs at COMMIT and ends its own session: the commit's outcome is unknown
    # to the client. Replaying could record a decision twice, so the journal says so instead.
    from scheduler.journal.postgres import JournalUnavailable

    journal = _open_pg(pg_url)
    try:
        with _connect(pg_url) as admin:
            admin.execute(
                "CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$"
            )
            admin.execute(
                "CREATE CONSTRAINT TRIGGER die AFTER INSERT ON decisions "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die_at_commit()"
            )
        with pytest.raises(JournalUnavailable, match="may or may not"):
            journal.write_jobs([], decisions=[(T0_S, "placement", "j1", "{}")])
        with _connect(pg_url) as admin:
            admin.execute("DROP TRIGGER die ON decisions")
        # Not replayed; and the next call reconnects.
        assert journal.decisions_for("j1") == []
        journal.write_jobs([], decisions=[(T0_S, "placement", "j1", "{}")])
        assert journal.decisions_for("j1") == [(T0_S, "placement", "{}")]
    finally:
        journal.close()


def test_the_scheduler_serves_submits_from_a_postgresql_journal(pg_url: str) -> None:
    from scheduler.runtime.app import SchedulerApp
    from scheduler.settings import SchedulerSettings

    setup = _open_pg(pg_url)
    auth = Authenticator(setup)
    auth.create_tenant("acme")
    api_key = auth.issue_api_key("acme")[1]
    setup.close()
    values: dict[str, object] = {
        "port": 0, "metrics_port": -1, "agent_token": new_agent_token(), "journal_url": pg_url,
    }
    settings = SchedulerSettings(**values)  # type: ignore[arg-type]
    spec = embed_spec("all-minilm-l6-v2", ["a sentence to embed"])

    async def submit_twice() -> tuple[str, bool, str, int]:
        app = SchedulerApp(settings)
        await app.start()
        try:
            async with Client(f"127.0.0.1:{app.port}", api_key) as client:
                first = await client.submit(spec, idempotency_key="order-1")
                again = await client.submit(spec, idempotency_key="order-1")
                fetched = await client.get(first.job.id)
                return first.job.id, again.deduplicated, fetched.tenant, len(
                    (await client.list_jobs()).jobs
                )
        finally:
            await app.stop(0.5)

    job_id, deduplicated, tenant, listed = asyncio.run(submit_twice())
    assert deduplicated and tenant == "acme" and listed == 1
    # The job is in PostgreSQL, read by an instance that had nothing to do with the scheduler.
    reader = _open_pg(pg_url)
    try:
        stored = reader.get_job(job_id)
        assert stored is not None
        assert (stored.tenant, stored.idempotency_key, stored.state) == (
            "acme", "order-1", JobState.QUEUED,  # no agent: it waits in the queue
        )
        assert stored.spec.model == "all-minilm-l6-v2"
        assert reader.count_jobs_by_state() == {"queued": 1}
    finally:
        reader.close()

    # Another scheduler (a restart on another Ray node) recovers the job from PostgreSQL.
    async def recover() -> int:
        app = SchedulerApp(settings)
        await app.start()
        try:
            async with Client(f"127.0.0.1:{app.port}", api_key) as client:
                return int((await client.get(job_id)).state)
        finally:
            await app.stop(0.5)

    from hashserve.v1 import jobs_pb2

    assert asyncio.run(recover()) == jobs_pb2.JOB_STATE_QUEUED


def test_a_database_from_before_the_tokens_column_is_migrated(pg_url: str) -> None:
    import psycopg

    from scheduler.journal.postgres import PostgresJournal

    first = PostgresJournal(pg_url)
    first.insert_jobs([make_record("old-job")])
    first.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE jobs DROP COLUMN tokens_used")  # the schema before it
    journal = PostgresJournal(pg_url)
    try:
        rec = journal.get_job("old-job")
        assert rec is not None and rec.tokens_used == 0
        journal.write_jobs([rec.evolve(tokens_used=7)])
        again = journal.get_job("old-job")
        assert again is not None and again.tokens_used == 7
    finally:
        journal.close()


def test_files_batches_and_metered_jobs(journal: Journal) -> None:
    j = journal
    from scheduler.core.job_states import JobState
    from scheduler.journal.base import BatchRow, FileRow

    j.put_file(FileRow("file-1", "acme", "batch", "in.jsonl", 3, 10.0, 100.0, b"abc"))
    j.put_file(FileRow("file-2", "acme", "batch_output", "out.jsonl", 1, 20.0, 50.0, b"x"))
    j.put_file(FileRow("file-3", "beta", "batch", "b.jsonl", 1, 30.0, 100.0, b"y"))
    got = j.get_file("file-1")
    assert got is not None and got.content == b"abc" and got.size_bytes == 3
    assert [f.file_id for f in j.list_files("acme")] == ["file-2", "file-1"]
    assert [f.file_id for f in j.list_files("acme", "batch")] == ["file-1"]
    assert all(f.content is None for f in j.list_files("acme"))
    assert j.forget_files_expired(60.0) == 1 and j.get_file("file-2") is None
    assert j.delete_file("file-3") and not j.delete_file("file-3")
    for i, status in enumerate(["in_progress", "completed", "validating"]):
        j.put_batch(BatchRow(f"batch_{i}", "acme", "key", status, float(i), "{}"))
    j.put_batch(BatchRow("batch_9", "beta", "key", "in_progress", 9.0, "{}"))
    assert [b.batch_id for b in j.open_batches()] == ["batch_0", "batch_2", "batch_9"]
    page = j.list_batches("acme", 2)
    assert [b.batch_id for b in page] == ["batch_2", "batch_1"]
    assert [b.batch_id for b in j.list_batches("acme", 2, "batch_1")] == ["batch_0"]
    done = [make_record(f"job_{i:032x}").evolve(
        state=JobState.SUCCEEDED, finished_s=100.0 + i, tokens_used=10, completion_tokens=4)
        for i in range(3)]
    j.insert_jobs(done)
    metered = j.metered_jobs("acme", 100.0, 102.0)
    assert [(m.prompt_tokens, m.completion_tokens) for m in metered] == [(6, 4), (6, 4)]
    assert j.metered_jobs("beta") == []


def test_the_leader_lease_fences_an_old_leaders_writes(backend: Backend) -> None:
    from scheduler.journal.base import Fenced

    old, new = backend.open(), backend.open()
    held, _ = old.try_lease("sched-a/1", ttl_s=0.3)
    assert held is not None and held.epoch == 1
    taken, current = new.try_lease("sched-b/2", ttl_s=0.3)
    assert taken is None and current is not None and current.holder == "sched-a/1"
    again, _ = old.try_lease("sched-a/1", ttl_s=0.3)  # the holder extends, same epoch
    assert again is not None and again.epoch == 1 and old.renew_lease("sched-a/1", 1, 0.3)
    old.fence(1)
    old.insert_jobs([make_record("before")])
    time.sleep(0.5)  # the old leader is paused past its lease: the standby takes over
    taken, _ = new.try_lease("sched-b/2", ttl_s=5.0)
    assert taken is not None and taken.epoch == 2
    new.fence(2)
    for write in (lambda: old.insert_jobs([make_record("after")]),
                  lambda: old.insert_jobs([make_record("after1"), make_record("after2")]),
                  lambda: old.write_jobs([make_record("before").evolve(attempt=9)], [])):
        with pytest.raises(Fenced, match="epoch 1"):
            write()
    assert not old.renew_lease("sched-a/1", 1, 5.0)
    assert new.get_job("after") is None and new.get_job("after1") is None
    stored = new.get_job("before")
    assert stored is not None and stored.attempt == 0
    new.insert_jobs([make_record("by-new")])
    # A clean stop lets the lease go at once: the next scheduler need not wait for it to expire.
    new.release_lease("sched-b/2", 2)
    third = backend.open()
    taken, _ = third.try_lease("sched-c/3", ttl_s=5.0)
    assert taken is not None and taken.epoch == 3
