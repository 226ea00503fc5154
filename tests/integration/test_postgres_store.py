"""PostgreSQL specifics the contract cannot see: URL settings, migrations, error conversion."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy

from field_encrypt.backends.base import DekRecord, WrapUpdate
from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.postgres.dek_store import PostgresDekStore
from field_encrypt.errors import (
    AlreadyExistsError,
    ConfigurationError,
    StoreError,
    StoreUnavailableError,
)
from tests.servers.postgres import PostgresServer


@pytest.fixture
def database(postgres_url: str) -> Iterator[PostgresDatabase]:
    db = PostgresDatabase(postgres_url, pool_timeout=2)
    yield db
    db.close()


def _dek(store: PostgresDekStore, version: str = "1") -> DekRecord:
    return store.create(
        dek_id=uuid.uuid4().hex, mek_name="m", mek_version=version, wrapped=b"w", algorithm="A"
    )


def _driver_error(cause: BaseException | None) -> BaseException | None:
    """The psycopg error behind a store error (SQLAlchemy wraps it on the Core paths)."""
    return cause.orig if isinstance(cause, sqlalchemy.exc.DBAPIError) else cause


# --- settings ------------------------------------------------------------------------------


def test_url_parameters_set_the_pool_and_the_rest_go_to_libpq() -> None:
    """Our query parameters configure the pool and session; libpq's stay in the URL."""
    db = PostgresDatabase(
        "postgresql://app:s3cret@db.internal:5433/notelett"
        "?pool_size=12&pool_timeout=2.5&lock_timeout=250ms&sslmode=verify-full"
    )
    try:
        assert (db.options.pool_size, db.options.pool_timeout) == (12, 2.5)
        assert db.options.lock_timeout == "250ms"
        assert db.url.drivername == "postgresql+psycopg"
        assert dict(db.url.query) == {"sslmode": "verify-full"}
        assert "s3cret" not in repr(db)
    finally:
        db.close()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app@db/notelett",
        "postgresql://app@db/notelett?pool_size=many",
        "postgresql://app@db/notelett?lock_timeout=5s%20-c%20role=admin",
    ],
)
def test_bad_urls_fail_at_construction(url: str) -> None:
    """A wrong scheme or a malformed pool parameter is a ConfigurationError before any I/O."""
    with pytest.raises(ConfigurationError):
        PostgresDatabase(url)


def test_session_settings_reach_the_server(database: PostgresDatabase) -> None:
    """lock_timeout, statement_timeout and application_name are set on every connection."""
    rows = database.execute(
        sqlalchemy.text(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout'), "
            "current_setting('application_name')"
        )
    )
    assert rows == [("5s", "1min", "field-encrypt")]


# --- migrations ----------------------------------------------------------------------------


def test_migrations_are_named_recorded_and_applied_once(database: PostgresDatabase) -> None:
    """Each migration runs once and is recorded; running them again applies nothing."""
    steps = [
        Migration("0001_a", "CREATE TABLE a (x int)"),
        Migration("0002_b", "CREATE TABLE b (y int); CREATE INDEX b_y ON b (y)"),
    ]
    assert database.pending_migrations(steps) == ["0001_a", "0002_b"]
    assert database.migrate(steps) == ["0001_a", "0002_b"]
    assert database.migrate(steps) == []
    assert database.applied_migrations() == ["0001_a", "0002_b"]
    assert database.pending_migrations([*steps, Migration("0003_c", "SELECT 1")]) == ["0003_c"]


def test_a_failing_migration_leaves_no_trace(database: PostgresDatabase) -> None:
    """A migration that fails half-way is rolled back whole and not recorded; failing on
    the schema (a table of that name exists), it is a configuration error, not an outage."""
    broken = Migration("0001_broken", "CREATE TABLE half (x int); CREATE TABLE half (x int)")
    with pytest.raises(ConfigurationError, match=r"schema conflict .*0001_broken"):
        database.migrate([broken])
    assert database.applied_migrations() == []
    rows = database.execute(sqlalchemy.text("SELECT to_regclass('half')"))
    assert rows == [(None,)]


def test_concurrent_starts_apply_each_migration_once(postgres_url: str) -> None:
    """Several processes starting together (threads here) create the schema exactly once."""
    databases = [PostgresDatabase(postgres_url) for _ in range(4)]
    barrier = threading.Barrier(len(databases))
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def start(db: PostgresDatabase) -> None:
        barrier.wait()
        try:
            store = PostgresDekStore(db, product="p")
            applied.append(store.database.applied_migrations())
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for db in databases:
        db.close()
    assert errors == []
    assert applied == [["0001_dek_store"]] * 4


def test_indexes_serve_scans_counts_and_point_reads(database: PostgresDatabase) -> None:
    """The table has the indexes docs/stores.md promises."""
    PostgresDekStore(database, product="p")
    rows = database.execute(
        sqlalchemy.text(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'dek_store' ORDER BY indexname"
        )
    )
    definitions = " | ".join(r[0] for r in rows)
    assert "(product, seq)" in definitions
    assert "(product, mek_version)" in definitions
    assert "UNIQUE INDEX dek_store_dek_id_key ON public.dek_store USING btree (dek_id)" in (
        definitions
    )


# --- batched compare-and-swap --------------------------------------------------------------


def test_a_batch_of_records_without_row_locators_swaps_by_dek_id(
    database: PostgresDatabase,
) -> None:
    """Updates built from records that lack ``row`` still apply, by dekId, with the CAS."""
    import dataclasses

    store = PostgresDekStore(database, product="p")
    records = [_dek(store) for _ in range(3)]
    bare = [dataclasses.replace(r, row=None) for r in records]
    updates = [WrapUpdate(record=r, mek_version="2", wrapped=b"n", algorithm="A") for r in bare]
    assert store.replace_wraps(updates) == []
    assert store.replace_wraps(updates) == [r.dek_id for r in bare]
    assert store.count_by_version() == {"2": 3}


def test_a_dek_twice_in_one_batch_wins_once(database: PostgresDatabase) -> None:
    """The second update of the same row in one batch loses, as it would one batch later."""
    store = PostgresDekStore(database, product="p")
    record = _dek(store)
    first = WrapUpdate(record=record, mek_version="2", wrapped=b"a", algorithm="A")
    second = WrapUpdate(record=record, mek_version="3", wrapped=b"b", algorithm="A")
    assert store.replace_wraps([first, second]) == [record.dek_id]
    assert store.get(record.dek_id).wrapped == b"a"


def test_products_share_the_table_but_not_their_rows(database: PostgresDatabase) -> None:
    """Two products in one database count, scan and read only their own DEKs."""
    notes, other = (
        PostgresDekStore(database, product="notes"),
        PostgresDekStore(database, product="x"),
    )
    mine = _dek(notes)
    _dek(other)
    assert notes.count_by_version() == {"1": 1}
    assert [r.dek_id for r in notes.scan().records] == [mine.dek_id]
    assert other.get_many([mine.dek_id]) == {}


# --- errors --------------------------------------------------------------------------------


def test_unique_violation_is_already_exists(database: PostgresDatabase) -> None:
    """A duplicate dekId is AlreadyExistsError carrying the driver's UniqueViolation."""
    store = PostgresDekStore(database, product="p")
    record = _dek(store)
    with pytest.raises(AlreadyExistsError) as caught:
        store.create(
            dek_id=record.dek_id,
            mek_name="m",
            mek_version="1",
            wrapped=b"w",
            algorithm="A",
        )
    assert isinstance(_driver_error(caught.value.cause), psycopg.errors.UniqueViolation)


def test_a_row_lock_held_too_long_is_unavailable(postgres_url: str) -> None:
    """Waiting past lock_timeout for a row another session holds is StoreUnavailableError."""
    db = PostgresDatabase(postgres_url, lock_timeout="100ms")
    try:
        store = PostgresDekStore(db, product="p")
        record = _dek(store)
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT 1 FROM dek_store FOR UPDATE")
            update = WrapUpdate(record=record, mek_version="2", wrapped=b"n", algorithm="A")
            with pytest.raises(StoreUnavailableError) as caught:
                store.replace_wraps([update])
            assert isinstance(_driver_error(caught.value.cause), psycopg.errors.LockNotAvailable)
        assert store.replace_wraps([update]) == []
    finally:
        db.close()


def test_terminated_sessions_are_replaced_by_the_pool(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """After an administrator kills every session, the next call gets a fresh connection."""
    db = PostgresDatabase(postgres_url)
    try:
        store = PostgresDekStore(db, product="p")
        record = _dek(store)
        name = postgres_url.rsplit("/", 1)[1]
        assert postgres_server.terminate_backends(name) >= 1
        assert store.get(record.dek_id) == record
    finally:
        db.close()


def test_server_down_is_unavailable_and_recovers(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """With the server stopped, calls raise StoreUnavailableError; after restart they work."""
    db = PostgresDatabase(postgres_url)
    try:
        store = PostgresDekStore(db, product="p")
        record = _dek(store)
        postgres_server.stop()
        try:
            with pytest.raises(StoreUnavailableError):
                store.count_not_on("2")
        finally:
            postgres_server.start()
        assert store.get(record.dek_id) == record
    finally:
        db.close()


def test_no_credentials_in_errors(postgres_server: PostgresServer) -> None:
    """A failed connection's error says what failed without echoing the URL's password."""
    db = PostgresDatabase(
        f"postgresql://nobody:hunter2@127.0.0.1:{postgres_server.port}/nowhere?connect_timeout=2"
    )
    try:
        with pytest.raises(StoreError) as caught:
            PostgresDekStore(db, product="p")
        assert "hunter2" not in str(caught.value)
    finally:
        db.close()
