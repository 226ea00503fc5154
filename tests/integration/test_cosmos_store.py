"""Cosmos DB specifics the contract cannot see: layout, URL settings, throttling, provisioning."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from azure.cosmos import CosmosClient, PartitionKey

from field_encrypt.backends.base import DekRecord, WrapUpdate
from field_encrypt.backends.cosmos.db import CosmosDatabase, parse_url
from field_encrypt.backends.cosmos.dek_store import CosmosDekStore
from field_encrypt.errors import (
    ConfigurationError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)
from tests.backends import cosmos_url_for
from tests.servers.cosmos import CosmosServer
from tests.servers.cosmos_faults import Fault, FaultTransport


@pytest.fixture
def faults(cosmos_server: CosmosServer) -> FaultTransport:
    return FaultTransport(connection_verify=str(cosmos_server.ca_cert))


def _open(
    cosmos_server: CosmosServer, url: str, faults: FaultTransport | None = None
) -> CosmosDatabase:
    extra = {"transport": faults} if faults is not None else {}
    return CosmosDatabase.connect(url, key=cosmos_server.key, **extra)


@pytest.fixture
def store(cosmos_server: CosmosServer, cosmos_url: str) -> Iterator[CosmosDekStore]:
    database = _open(cosmos_server, cosmos_url)
    yield CosmosDekStore(database, product="notelett")
    database.close()


def _dek(store: CosmosDekStore, version: str = "1") -> DekRecord:
    return store.create(
        dek_id=uuid.uuid4().hex, mek_name="m", mek_version=version, wrapped=b"w", algorithm="A"
    )


# --- layout --------------------------------------------------------------------------------


def test_items_use_the_runbook_field_names_and_a_derived_partition_key(
    store: CosmosDekStore,
) -> None:
    """An item carries dekId and mekVersion, and its /pk is product plus a dekId bucket."""
    record = _dek(store)
    item = store.container.read_item(
        record.dek_id, partition_key=store.partition_key(record.dek_id)
    )
    assert item["dekId"] == item["id"] == record.dek_id
    assert item["mekVersion"] == "1"
    assert item["pk"] == f"notelett:{record.dek_id[:2]}"
    assert item["_etag"] == record.revision


def test_the_runbook_verification_query_agrees_with_count_not_on(store: CosmosDekStore) -> None:
    """``SELECT VALUE COUNT(1) FROM c WHERE c.mekVersion != @v`` counts what count_not_on does."""
    for version in ("1", "1", "2", "3"):
        _dek(store, version)
    runbook = list(
        store.container.query_items(
            "SELECT VALUE COUNT(1) FROM c WHERE c.mekVersion != @v",
            parameters=[{"name": "@v", "value": "2"}],
            enable_cross_partition_query=True,
        )
    )
    assert runbook == [store.count_not_on("2")] == [3]


def test_products_share_the_container_but_not_their_items(
    cosmos_server: CosmosServer, cosmos_url: str
) -> None:
    """Two products in one container count, scan and read only their own DEKs."""
    database = _open(cosmos_server, cosmos_url)
    try:
        notes = CosmosDekStore(database, product="notes")
        other = CosmosDekStore(database, product="other")
        mine = _dek(notes)
        theirs = _dek(other)
        assert notes.count_by_version() == {"1": 1}
        assert [r.dek_id for r in notes.scan().records] == [mine.dek_id]
        with pytest.raises(NotFoundError):
            notes.get(theirs.dek_id)
    finally:
        database.close()


def test_a_batch_is_written_on_several_threads(
    cosmos_server: CosmosServer, cosmos_url: str, faults: FaultTransport
) -> None:
    """replace_wraps spreads one batch over the write threads instead of writing serially."""
    database = _open(cosmos_server, cosmos_url + "&write_concurrency=4", faults)
    try:
        store = CosmosDekStore(database, product="p")
        records = [_dek(store) for _ in range(40)]
        faults.threads.clear()
        updates = [
            WrapUpdate(record=r, mek_version="2", wrapped=b"n", algorithm="A") for r in records
        ]
        assert store.replace_wraps(updates) == []
        assert len({t for t in faults.threads if t.startswith("cosmos-write")}) > 1
        assert store.count_by_version() == {"2": 40}
    finally:
        database.close()


# --- settings and provisioning -------------------------------------------------------------


def test_url_names_endpoint_database_and_options() -> None:
    """The cosmos:// URL becomes an https endpoint plus options; unknown options are refused."""
    endpoint, options = parse_url(
        "cosmos://acct.documents.azure.com:443/?database=notelett&throttle_retries=3"
    )
    assert endpoint == "https://acct.documents.azure.com:443/"
    assert (options.database, options.throttle_retries, options.provision) == ("notelett", 3, None)
    for bad in (
        "cosmos://acct.documents.azure.com/",
        "cosmos://acct.documents.azure.com/?database=x&colour=blue",
        "cosmos://acct.documents.azure.com/?database=x&write_concurrency=0",
        "https://acct.documents.azure.com/?database=x",
    ):
        with pytest.raises(ConfigurationError):
            parse_url(bad)


def test_without_provisioning_a_missing_container_fails_at_start_up(
    cosmos_server: CosmosServer, cosmos_client: CosmosClient, cosmos_url: str
) -> None:
    """provision=false checks the container exists and says how to create it if not."""
    name = parse_url(cosmos_url)[1].database
    cosmos_client.create_database(name)
    database = _open(cosmos_server, cosmos_url + "&provision=false")
    try:
        with pytest.raises(ConfigurationError, match="partition key /pk"):
            CosmosDekStore(database, product="p")
        cosmos_client.get_database_client(name).create_container(
            "dek_store", partition_key=PartitionKey(path="/pk")
        )
        CosmosDekStore(database, product="p")  # now it exists
    finally:
        database.close()


def test_a_container_on_another_partition_key_is_refused(
    cosmos_server: CosmosServer, cosmos_client: CosmosClient, cosmos_url: str
) -> None:
    """A dek_store container partitioned on /dekId cannot be used: point reads would miss."""
    name = parse_url(cosmos_url)[1].database
    cosmos_client.create_database(name).create_container(
        "dek_store", partition_key=PartitionKey(path="/dekId")
    )
    database = _open(cosmos_server, cosmos_url)
    try:
        with pytest.raises(ConfigurationError, match="/dekId"):
            CosmosDekStore(database, product="p")
    finally:
        database.close()


# --- throttling and other faults -----------------------------------------------------------


def test_throttling_beyond_the_sdk_retries_is_unavailable_with_retry_after(
    cosmos_server: CosmosServer, cosmos_url: str, faults: FaultTransport
) -> None:
    """A 429 the SDK stops retrying becomes StoreUnavailableError(retry_after) from its header."""
    database = _open(cosmos_server, cosmos_url + "&throttle_retries=1", faults)
    try:
        store = CosmosDekStore(database, product="p")
        record = _dek(store)
        faults.inject(Fault(status=429, method="GET", retry_after_ms=20), times=2)
        with pytest.raises(StoreUnavailableError) as caught:
            store.get(record.dek_id)
        assert caught.value.retry_after == 0.02
        assert caught.value.cause.status_code == 429  # type: ignore[union-attr]
        assert [status for _, _, status in faults.injected] == [429, 429]
        assert store.get(record.dek_id) == record
    finally:
        database.close()


def test_a_short_throttle_is_absorbed_by_the_sdk(
    cosmos_server: CosmosServer, cosmos_url: str, faults: FaultTransport
) -> None:
    """Within throttle_retries the SDK waits x-ms-retry-after-ms and the write goes through."""
    database = _open(cosmos_server, cosmos_url + "&throttle_retries=3", faults)
    try:
        store = CosmosDekStore(database, product="p")
        record = _dek(store)
        faults.inject(Fault(status=429, method="PUT", retry_after_ms=50), times=2)
        started = time.monotonic()
        update = WrapUpdate(record=record, mek_version="2", wrapped=b"n", algorithm="A")
        assert store.replace_wraps([update]) == []
        assert time.monotonic() - started >= 0.1
        assert faults.pending() == 0
        assert store.get(record.dek_id).mek_version == "2"
    finally:
        database.close()


def test_a_throttled_batch_finishes_its_other_writes_then_raises(
    cosmos_server: CosmosServer, cosmos_url: str, faults: FaultTransport
) -> None:
    """One throttled item fails the batch only after the others are written; a rerun loses
    nothing: the applied ones report lost (their ETag moved), the throttled one applies."""
    database = _open(cosmos_server, cosmos_url + "&throttle_retries=1", faults)
    try:
        store = CosmosDekStore(database, product="p")
        records = [_dek(store) for _ in range(6)]
        throttled = Fault(
            status=429, method="PUT", path_contains=records[3].dek_id, retry_after_ms=1
        )
        faults.inject(throttled, times=2)
        updates = [
            WrapUpdate(record=r, mek_version="2", wrapped=b"n", algorithm="A") for r in records
        ]
        with pytest.raises(StoreUnavailableError):
            store.replace_wraps(updates)
        assert store.count_by_version() == {"2": 5, "1": 1}
        lost = store.replace_wraps(updates)
        assert len(lost) == 5
        assert store.count_by_version() == {"2": 6}
    finally:
        database.close()


def test_a_server_error_is_not_mistaken_for_a_missing_item(
    cosmos_server: CosmosServer, cosmos_url: str, faults: FaultTransport
) -> None:
    """A 500 on a point read is a StoreError, never NotFoundError (only 404 means missing)."""
    database = _open(cosmos_server, cosmos_url, faults)
    try:
        store = CosmosDekStore(database, product="p")
        record = _dek(store)
        faults.inject(Fault(status=500, method="GET"), times=2)  # the SDK retries a read once
        with pytest.raises(StoreError) as caught:
            store.get(record.dek_id)
        assert not isinstance(caught.value, NotFoundError | StoreUnavailableError)
        assert faults.pending() == 0
    finally:
        database.close()


def test_a_lost_connection_is_unavailable(
    cosmos_server: CosmosServer, cosmos_url: str, faults: FaultTransport
) -> None:
    """A request that cannot reach the service is StoreUnavailableError (retry later)."""
    database = _open(cosmos_server, cosmos_url, faults)
    try:
        store = CosmosDekStore(database, product="p")
        faults.inject(Fault(status=0, method="POST"), times=20)
        with pytest.raises(StoreUnavailableError):
            _dek(store)
    finally:
        database.close()


def test_test_server_url_helper_verifies_with_the_ca(cosmos_server: CosmosServer) -> None:
    """A URL with ca_cert reaches the test server over verified HTTPS."""
    name = f"t{uuid.uuid4().hex[:12]}"
    database = _open(cosmos_server, cosmos_url_for(cosmos_server, name))
    try:
        assert database.database.read()["id"] == name
    finally:
        database.close()
