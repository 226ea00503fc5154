"""The Cosmos DB test server harness, and each server quirk listed in ``tests.servers.cosmos``."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.cosmos", reason="needs the 'cosmos' extra (azure-cosmos)")
if shutil.which("node") is None:
    pytest.skip("needs Node.js 20 or later on PATH", allow_module_level=True)

from azure.core import MatchConditions
from azure.core.exceptions import ServiceRequestError
from azure.cosmos import (
    ContainerProxy,
    CosmosClient,
    DatabaseProxy,
    PartitionKey,
    SSLConfiguration,
)
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)
from urllib3.exceptions import InsecureRequestWarning

from tests.servers.cosmos import CosmosServer, CosmosServerError
from tests.servers.tls import make_loopback_tls

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[CosmosServer]:
    with CosmosServer() as running:
        yield running


@pytest.fixture(scope="module")
def client(server: CosmosServer) -> Iterator[CosmosClient]:
    with server.client() as cosmos:
        yield cosmos


@pytest.fixture(scope="module")
def database(client: CosmosClient) -> DatabaseProxy:
    return client.create_database_if_not_exists("field-encrypt-tests")


@pytest.fixture
def container(database: DatabaseProxy) -> Iterator[ContainerProxy]:
    created = database.create_container(
        id=f"deks-{uuid.uuid4().hex[:12]}", partition_key=PartitionKey(path="/pk")
    )
    yield created
    database.delete_container(created)


def _wait_for_background_refresh() -> None:
    """Join the SDK's endpoint health-check thread, which a new client starts and forgets."""
    for thread in threading.enumerate():
        if thread.name == "cosmos-endpoint-refresh":
            thread.join(timeout=5)


# --- the harness ---------------------------------------------------------------------------


def test_client_verifies_the_certificate_against_our_ca(
    server: CosmosServer, tmp_path: Path
) -> None:
    """A client from ``client()`` talks to the server; one trusting another CA cannot connect."""
    with server.client() as cosmos:
        assert cosmos.get_database_account().WritableLocations[0]["databaseAccountEndpoint"] == (
            server.url
        )
    other_ca = make_loopback_tls(tmp_path).ca_cert
    wrong = SSLConfiguration()
    wrong.SSLCaCerts = str(other_ca)
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        CosmosClient(server.url, credential=server.key, ssl_config=wrong)


def test_connection_verify_alone_does_not_verify_on_loopback(
    server: CosmosServer, tmp_path: Path
) -> None:
    """``connection_verify=<ca>`` without an SSLConfiguration leaves 127.0.0.1 unverified."""
    other_ca = make_loopback_tls(tmp_path).ca_cert
    with pytest.warns(InsecureRequestWarning):
        with CosmosClient(
            server.url, credential=server.key, connection_verify=str(other_ca)
        ) as unverified:
            list(unverified.list_databases())
        _wait_for_background_refresh()


def test_start_twice_is_refused_and_stop_is_idempotent() -> None:
    """A running server refuses a second start; stop can be called again and clears the url."""
    harness = CosmosServer()
    with harness, pytest.raises(CosmosServerError, match="already running"):
        harness.start()
    harness.stop()
    with pytest.raises(CosmosServerError, match="not running"):
        _ = harness.url


def test_server_exits_when_the_test_process_is_killed(tmp_path: Path) -> None:
    """Killing the process that started the server with SIGKILL leaves no node process behind."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.servers.cosmos import CosmosServer\n"
        "server = CosmosServer(directory=Path(sys.argv[1]))\n"
        "server.start()\n"
        "print(server._process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert parent.stdout is not None
    with parent.stdout:
        node_pid = int(parent.stdout.readline())
    assert _is_running(node_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _is_running(node_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _is_running(node_pid)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; our test process is not its parent, so nothing reaps it here.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


# --- items and compare-and-swap ------------------------------------------------------------


def test_missing_item_read_raises_not_found(container: ContainerProxy) -> None:
    """A missing id, or an existing id under another partition key, answers 404 NotFound."""
    container.upsert_item({"id": "dek-1", "pk": "tenant-a"})
    with pytest.raises(CosmosResourceNotFoundError) as missing:
        container.read_item("no-such-dek", partition_key="tenant-a")
    assert missing.value.status_code == 404
    with pytest.raises(CosmosResourceNotFoundError):
        container.read_item("dek-1", partition_key="tenant-b")


def test_replace_with_current_etag_succeeds_and_stale_etag_fails_412(
    container: ContainerProxy,
) -> None:
    """Compare-and-swap: the current ETag wins, a stale one raises 412 and changes nothing."""
    first = container.upsert_item({"id": "dek-1", "pk": "tenant-a", "mekVersion": 1})
    read = container.read_item("dek-1", partition_key="tenant-a")
    assert read["_etag"] == first["_etag"]
    assert read["mekVersion"] == 1

    second = container.replace_item(
        "dek-1",
        {**read, "mekVersion": 2},
        etag=read["_etag"],
        match_condition=MatchConditions.IfNotModified,
    )
    assert second["_etag"] != first["_etag"]

    with pytest.raises(CosmosAccessConditionFailedError) as stale:
        container.replace_item(
            "dek-1",
            {**read, "mekVersion": 3},
            etag=first["_etag"],
            match_condition=MatchConditions.IfNotModified,
        )
    assert stale.value.status_code == 412
    with pytest.raises(CosmosAccessConditionFailedError):
        container.upsert_item(
            {**read, "mekVersion": 3},
            etag=first["_etag"],
            match_condition=MatchConditions.IfNotModified,
        )
    assert container.read_item("dek-1", partition_key="tenant-a")["mekVersion"] == 2


def test_create_of_an_existing_id_raises_409(container: ContainerProxy) -> None:
    """``create_item`` does not overwrite: a second create of one id raises Conflict."""
    container.create_item({"id": "dek-1", "pk": "tenant-a"})
    with pytest.raises(CosmosResourceExistsError) as exists:
        container.create_item({"id": "dek-1", "pk": "tenant-a"})
    assert exists.value.status_code == 409


def test_delete_removes_the_item_and_a_second_delete_is_404(container: ContainerProxy) -> None:
    """After a delete the item reads as missing, and deleting it again raises NotFound."""
    container.upsert_item({"id": "dek-1", "pk": "tenant-a"})
    container.delete_item("dek-1", partition_key="tenant-a")
    with pytest.raises(CosmosResourceNotFoundError):
        container.read_item("dek-1", partition_key="tenant-a")
    with pytest.raises(CosmosResourceNotFoundError):
        container.delete_item("dek-1", partition_key="tenant-a")


# --- queries -------------------------------------------------------------------------------


def test_query_pages_resume_from_a_continuation_token(container: ContainerProxy) -> None:
    """Pages hold at most max_item_count items; a token resumes the query where it stopped."""
    for number in range(300):
        container.upsert_item({"id": f"dek-{number:03}", "pk": "tenant-a"})
    container.upsert_item({"id": "dek-other", "pk": "tenant-b"})
    query = "SELECT * FROM c WHERE c.pk = @pk"
    parameters: list[dict[str, Any]] = [{"name": "@pk", "value": "tenant-a"}]

    pages = container.query_items(query, parameters=parameters, max_item_count=40).by_page()
    first_ids = [item["id"] for page in (next(pages), next(pages)) for item in page]
    token = pages.continuation_token
    assert isinstance(token, str)
    assert len(first_ids) == 80

    resumed = container.query_items(query, parameters=parameters, max_item_count=40).by_page(token)
    page_sizes = []
    rest_ids = []
    for page in resumed:
        items = list(page)
        page_sizes.append(len(items))
        rest_ids.extend(item["id"] for item in items)
    assert max(page_sizes) <= 40
    assert resumed.continuation_token is None
    assert sorted(first_ids + rest_ids) == [f"dek-{number:03}" for number in range(300)]


def test_query_ignores_the_partition_key_argument(container: ContainerProxy) -> None:
    """``partition_key=`` does not scope a query: only the WHERE clause does."""
    container.upsert_item({"id": "dek-a", "pk": "tenant-a"})
    container.upsert_item({"id": "dek-b", "pk": "tenant-b"})
    scoped_by_where = container.query_items(
        "SELECT VALUE c.id FROM c WHERE c.pk = @pk",
        parameters=[{"name": "@pk", "value": "tenant-b"}],
        partition_key="tenant-a",
    )
    assert list(scoped_by_where) == ["dek-b"]


def test_query_without_the_partition_key_in_where_needs_cross_partition(
    container: ContainerProxy,
) -> None:
    """Without the key path in WHERE the server answers 400 unless cross-partition is enabled."""
    container.upsert_item({"id": "dek-a", "pk": "tenant-a"})
    container.upsert_item({"id": "dek-b", "pk": "tenant-b"})
    with pytest.raises(CosmosHttpResponseError) as refused:
        list(container.query_items("SELECT * FROM c", partition_key="tenant-a"))
    assert refused.value.status_code == 400
    assert "missing partition keys" in str(refused.value)
    everything = container.query_items(
        "SELECT VALUE c.id FROM c", enable_cross_partition_query=True
    )
    assert sorted(everything) == ["dek-a", "dek-b"]


def test_count_query_with_parameters_returns_one_int(container: ContainerProxy) -> None:
    """``SELECT VALUE COUNT(1)`` answers ``[n]``; parameters bind; partition_key= is ignored."""
    for number in range(10):
        container.upsert_item(
            {"id": f"dek-{number}", "pk": f"tenant-{number % 2}", "mekVersion": number % 3}
        )
    query = "SELECT VALUE COUNT(1) FROM c WHERE c.mekVersion != @v"
    parameters: list[dict[str, Any]] = [{"name": "@v", "value": 0}]
    assert list(
        container.query_items(query, parameters=parameters, enable_cross_partition_query=True)
    ) == [6]
    assert list(container.query_items(query, parameters=parameters)) == [6]
    assert list(container.query_items(query, parameters=parameters, partition_key="tenant-0")) == [
        6
    ]
    in_one_partition = container.query_items(
        "SELECT VALUE COUNT(1) FROM c WHERE c.pk = @pk AND c.mekVersion != @v",
        parameters=[*parameters, {"name": "@pk", "value": "tenant-0"}],
    )
    assert list(in_one_partition) == [3]


# --- known limits --------------------------------------------------------------------------


def test_transactional_batch_fails(container: ContainerProxy) -> None:
    """``execute_item_batch`` is answered 500: the server wants a header the SDK does not send."""
    with pytest.raises(CosmosHttpResponseError) as failed:
        container.execute_item_batch(
            [("upsert", ({"id": "dek-1", "pk": "tenant-a"},))], partition_key="tenant-a"
        )
    assert failed.value.status_code == 500
    assert "x-ms-documentdb-partitionkey" in str(failed.value)
    with pytest.raises(CosmosResourceNotFoundError):
        container.read_item("dek-1", partition_key="tenant-a")


def test_change_feed_does_not_return_changes_after_its_token(container: ContainerProxy) -> None:
    """The change feed lists current items from the beginning but never anything newer."""
    container.upsert_item({"id": "dek-1", "pk": "tenant-a"})
    pages = container.query_items_change_feed(start_time="Beginning").by_page()
    assert [item["id"] for page in pages for item in page] == ["dek-1"]
    token = pages.continuation_token
    container.upsert_item({"id": "dek-2", "pk": "tenant-a"})
    later = container.query_items_change_feed(continuation=token)
    assert list(later) == []


def test_concurrent_burst_is_never_throttled(
    server: CosmosServer, container: ContainerProxy
) -> None:
    """800 raw reads from 8 connections at once are all answered 200: the server has no 429."""
    container.upsert_item({"id": "dek-1", "pk": "tenant-a"})
    path = f"/{container.container_link}/docs/dek-1"
    context = ssl.create_default_context(cafile=str(server.ca_cert))
    port = int(server.url.rsplit(":", 1)[1].rstrip("/"))

    def read_many(_: int) -> Counter[int]:
        statuses: Counter[int] = Counter()
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        try:
            for _request in range(100):
                connection.request(
                    "GET", path, headers={"x-ms-documentdb-partitionkey": '["tenant-a"]'}
                )
                response = connection.getresponse()
                response.read()
                statuses[response.status] += 1
        finally:
            connection.close()
        return statuses

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sum(pool.map(read_many, range(8)), Counter[int]())
    assert statuses == Counter({200: 800})


def test_point_reads_reuse_the_connection(
    container: ContainerProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server keeps connections alive, so 500 SDK point reads run at hundreds per second."""
    container.upsert_item({"id": "dek-1", "pk": "tenant-a"})
    headers: dict[str, str] = {}
    container.read_item(
        "dek-1", partition_key="tenant-a", response_hook=lambda h, _body: headers.update(h)
    )
    assert headers["connection"] == "keep-alive"

    reads = 500
    started = time.perf_counter()
    for _ in range(reads):
        container.read_item("dek-1", partition_key="tenant-a")
    rate = reads / (time.perf_counter() - started)
    with capsys.disabled():
        print(f"\ncosmosdb-server point reads: {rate:.0f} req/s over {reads} reads")
    # Without keep-alive the SDK manages about 33 requests/s; the floor leaves room for slow CI.
    assert rate > 100
