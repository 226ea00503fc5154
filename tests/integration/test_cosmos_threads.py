"""One Cosmos DB client called from several threads: no thread sees another's response.

Found by the runbook rehearsal on Cosmos DB (``tests/cli/test_runbook.py``): ``field-encrypt
rotate`` failed now and then with an internal error, ``RuntimeError: OrderedDict mutated
during iteration`` in a query's ``read_items``. azure-cosmos keeps "the last response's
headers" in one attribute of the client, which every request replaces and then grows, and
which a query iterates; our stores call one client from several threads.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest

from field_encrypt.backends.registry import open_database, open_dek_store
from field_encrypt.config import load_settings
from tests.servers.cosmos import CosmosServer


@pytest.fixture
def database(cosmos_server: CosmosServer, cosmos_url: str) -> Iterator[object]:
    opened = open_database(
        load_settings({"FIELD_ENCRYPT_DATABASE": cosmos_url}, cosmos_key=cosmos_server.key)
    )
    yield opened
    opened.close()


def test_a_request_on_another_thread_leaves_this_threads_last_response_alone(
    database: object,
) -> None:
    """The headers the SDK keeps as the client's last response are this thread's own, while
    another thread's request (the race's first half) comes and goes."""
    store = open_dek_store(database, product="threads")
    ids = [
        store.create(
            dek_id=uuid.uuid4().hex,
            mek_name="m",
            mek_version="1",
            wrapped=os.urandom(40),
            algorithm="A256KW",
        ).dek_id
        for _ in range(2)
    ]
    connection = database.database.client_connection  # type: ignore[attr-defined]
    store.get(ids[0])
    ours = connection.last_response_headers
    other = threading.Thread(target=store.get, args=(ids[1],))
    other.start()
    other.join()
    assert connection.last_response_headers is ours
