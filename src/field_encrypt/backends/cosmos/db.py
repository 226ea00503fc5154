"""One Azure Cosmos DB database shared by a product's stores: client, containers, errors.

``FIELD_ENCRYPT_DATABASE`` names the account and the database::

    cosmos://myaccount.documents.azure.com:443/?database=notelett

The key comes from ``FIELD_ENCRYPT_COSMOS_KEY``; without it the client signs in with
``azure.identity.DefaultAzureCredential`` (managed identity, workload identity, ``az login``).
Other query parameters:

``provision``
    ``true``: create the database and containers when missing (needs the account key or a
    control-plane role). ``false``: only check that they exist with the right partition key,
    and fail at start-up otherwise (data-plane RBAC cannot create containers). Default:
    ``true`` with a key, ``false`` with Microsoft Entra ID.
``ca_cert``
    A PEM file of CAs to verify the endpoint with (the emulator, a test server).
``throttle_retries``, ``throttle_wait``
    How often (default 9) and how long in total (default 30 s) the SDK itself retries a 429
    before the store raises ``StoreUnavailableError`` with ``retry_after`` set.
``write_concurrency``
    Threads writing one batch item by item (default 8): Cosmos DB's transactional batch is
    limited to one logical partition, so a batch of wraps is many point writes.

Errors are converted once, in :func:`translate_errors`: 404 ``NotFoundError``, 409
``AlreadyExistsError``, 412 ``ConcurrentUpdateError``; 429, 408, 449 and 503 and connection
failures ``StoreUnavailableError`` (``retry_after`` from ``x-ms-retry-after-ms``); anything else
``StoreError``.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from field_encrypt.errors import (
    AlreadyExistsError,
    ConcurrentUpdateError,
    ConfigurationError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)
from field_encrypt.retry_after import retry_after_from

try:
    from azure.core import MatchConditions
    from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
    from azure.cosmos import (
        ContainerProxy,
        CosmosClient,
        DatabaseProxy,
        PartitionKey,
        SSLConfiguration,
    )
    from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceExistsError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError(
        "the Cosmos DB store needs the 'cosmos' extra: pip install 'field-encrypt[cosmos]'"
    ) from exc

__all__ = ["CosmosDatabase", "CosmosOptions", "parse_url", "translate_errors"]

PARTITION_KEY_PATH = "/pk"
"""Every container field-encrypt provisions is partitioned on ``/pk``."""

PARTITIONS = 256
"""Logical partitions per product (dek_store) or per collection (documents): the ``/pk`` value
carries one of these numbers, taken from the id's hash bucket, so a point read derives its
partition key from the id alone. Fixed: changing it moves every item."""

_TRANSIENT_STATUS = frozenset({408, 429, 449, 503})
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class CosmosOptions:
    """What the ``cosmos://`` URL says besides the endpoint."""

    database: str
    provision: bool | None = None
    ca_cert: str | None = None
    throttle_retries: int = 9
    throttle_wait: float = 30.0
    write_concurrency: int = 8


def parse_url(url: str) -> tuple[str, CosmosOptions]:
    """The account endpoint (``https://host:port/``) and the options of a ``cosmos://`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "cosmos" or not parts.hostname:
        raise ConfigurationError("a Cosmos DB URL looks like cosmos://HOST[:PORT]/?database=NAME")
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    known = {"database", "provision", "ca_cert", "throttle_retries", "throttle_wait"}
    known.add("write_concurrency")
    unknown = sorted(set(query) - known)
    if unknown:
        raise ConfigurationError(f"unknown Cosmos DB URL parameter(s): {', '.join(unknown)}")
    if not query.get("database"):
        raise ConfigurationError("the Cosmos DB URL needs ?database=NAME")
    try:
        options = CosmosOptions(
            database=query["database"],
            provision=_flag(query["provision"]) if "provision" in query else None,
            ca_cert=query.get("ca_cert") or None,
            throttle_retries=int(query.get("throttle_retries", 9)),
            throttle_wait=float(query.get("throttle_wait", 30)),
            write_concurrency=int(query.get("write_concurrency", 8)),
        )
    except ValueError as exc:
        raise ConfigurationError(f"invalid Cosmos DB URL parameter: {exc}") from None
    if options.write_concurrency < 1 or options.throttle_retries < 1:
        # the SDK reads retry_total=0 as "use the default", so at least one retry
        raise ConfigurationError("write_concurrency and throttle_retries must be >= 1")
    port = f":{parts.port}" if parts.port else ""
    return f"https://{parts.hostname}{port}/", options


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"provision={value!r} (use true or false)")


class _HeadersPerThread:
    """``last_response_headers`` of an azure-cosmos client connection, one per thread.

    The SDK keeps the headers of "the last response" in one attribute of the client, sets
    it after every request and then adds keys to it (the throttle counters) or iterates it
    (a query copies it into its own headers). Our stores call one client from several
    threads (the write pool, the SDK's own ``read_items`` pool, a lease heartbeat), so one
    thread's request replaced or grew the dict another thread was iterating: a query failed
    with ``RuntimeError: OrderedDict mutated during iteration`` (seen as an internal error of
    ``field-encrypt rotate`` on Cosmos DB). Each thread only ever reads the headers of its own
    last request, so keeping them per thread is what the SDK's code expects.
    """

    def __get__(self, connection: Any, owner: type | None = None) -> Any:
        local = _thread_state(connection)
        headers = getattr(local, "headers", None)
        if headers is None:
            headers = local.headers = {}
        return headers

    def __set__(self, connection: Any, headers: Any) -> None:
        _thread_state(connection).headers = headers


def _thread_state(connection: Any) -> threading.local:
    state: threading.local = connection.__dict__.setdefault(
        "_field_encrypt_headers", threading.local()
    )
    return state


_PER_THREAD_CLASSES: dict[type, type] = {}


def _headers_per_thread(connection: Any) -> None:
    """Give ``connection`` (an SDK ``CosmosClientConnection``) per-thread response headers."""
    if connection is None or isinstance(
        type(connection).__dict__.get("last_response_headers"), _HeadersPerThread
    ):
        return
    base = type(connection)
    subclass = _PER_THREAD_CLASSES.get(base)
    if subclass is None:
        subclass = type(base.__name__, (base,), {"last_response_headers": _HeadersPerThread()})
        _PER_THREAD_CLASSES[base] = subclass
    current = connection.__dict__.pop("last_response_headers", None)
    connection.__class__ = subclass
    if current is not None:
        connection.last_response_headers = current


class CosmosDatabase:
    """A Cosmos DB database, its containers, and a thread pool for item-by-item batches."""

    def __init__(
        self,
        database: DatabaseProxy,
        *,
        provision: bool = True,
        write_concurrency: int = 8,
        client: CosmosClient | None = None,
    ) -> None:
        """Wrap an existing ``DatabaseProxy``; ``client`` is closed by :meth:`close` if given."""
        self.database = database
        _headers_per_thread(getattr(database, "client_connection", None))
        self.provision = provision
        self.write_concurrency = write_concurrency
        self._client = client
        self._containers: dict[str, ContainerProxy] = {}
        self._executor = ThreadPoolExecutor(write_concurrency, thread_name_prefix="cosmos-write")

    @classmethod
    def connect(
        cls, url: str, *, key: str | None = None, credential: Any = None, **client_kwargs: Any
    ) -> CosmosDatabase:
        """Open the database a ``cosmos://`` URL names, with ``key`` or an Entra ID credential.

        ``client_kwargs`` go to ``CosmosClient`` (a ``transport=`` for tests, for example).
        """
        endpoint, options = parse_url(url)
        if key is None and credential is None:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError:
                raise ConfigurationError(
                    "set FIELD_ENCRYPT_COSMOS_KEY, or install azure-identity to sign in with "
                    "Microsoft Entra ID"
                ) from None
            credential = DefaultAzureCredential()
        if options.ca_cert is not None:
            ssl_config = SSLConfiguration()
            ssl_config.SSLCaCerts = options.ca_cert
            client_kwargs.setdefault("ssl_config", ssl_config)
        provision = options.provision if options.provision is not None else key is not None
        with translate_errors():
            client = CosmosClient(
                endpoint,
                credential=key if key is not None else credential,
                # the SDK's public retry settings: 429s retried this often, waiting at most
                # this long in all (they also bound its own retries of dropped connections)
                retry_total=options.throttle_retries,
                retry_backoff_max=int(options.throttle_wait),
                **client_kwargs,
            )
            if provision:
                try:
                    database = client.create_database_if_not_exists(options.database)
                except CosmosResourceExistsError:  # another process created it just now
                    database = client.get_database_client(options.database)
            else:
                database = client.get_database_client(options.database)
        return cls(
            database,
            provision=provision,
            write_concurrency=options.write_concurrency,
            client=client,
        )

    def __repr__(self) -> str:
        return f"CosmosDatabase({self.database.id!r})"

    def container(self, name: str) -> ContainerProxy:
        """The container ``name`` (partitioned on ``/pk``), created first if provisioning.

        Raises ``ConfigurationError`` if it is missing (without provisioning) or is partitioned
        on another path.
        """
        found = self._containers.get(name)
        if found is not None:
            return found
        with translate_errors():
            if self.provision:
                try:
                    container = self.database.create_container_if_not_exists(
                        id=name, partition_key=PartitionKey(path=PARTITION_KEY_PATH)
                    )
                except CosmosResourceExistsError:  # another process created it just now
                    container = self.database.get_container_client(name)
            else:
                container = self.database.get_container_client(name)
            try:
                properties = container.read()
            except CosmosHttpResponseError as exc:
                if exc.status_code != 404:
                    raise
                raise ConfigurationError(
                    f"Cosmos DB container {self.database.id}/{name} does not exist; create it "
                    f"with partition key {PARTITION_KEY_PATH} (or set provision=true)"
                ) from None
        paths = properties.get("partitionKey", {}).get("paths")
        if paths != [PARTITION_KEY_PATH]:
            raise ConfigurationError(
                f"Cosmos DB container {name} is partitioned on {paths}, not {PARTITION_KEY_PATH}"
            )
        self._containers[name] = container
        return container

    def each(self, function: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
        """``function`` over ``items`` on the write threads; results in order.

        Waits for every call before raising the first error, so nothing is still writing when
        this returns.
        """
        if len(items) <= 1:
            return [function(item) for item in items]
        futures = [self._executor.submit(function, item) for item in items]
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop the write threads and close the client (if this object opened it)."""
        self._executor.shutdown(wait=True)
        if self._client is not None:
            self._client.close()


class ContainerStore:
    """A store kept in one container (:attr:`container_name`) of a :class:`CosmosDatabase`:
    its point reads, queries and deletes there; its repr names the database, and the
    product for a product's store."""

    container_name: ClassVar[str]

    def __init__(self, database: CosmosDatabase) -> None:
        self.database = database
        self.container = database.container(self.container_name)

    def __repr__(self) -> str:
        product = getattr(self, "product", None)
        named = "" if product is None else f", product={product!r}"
        return f"{type(self).__name__}({self.database!r}{named})"

    def _read_item(self, item_id: str, partition_key: str) -> dict[str, Any] | None:
        """:func:`read_or_none` in this container."""
        return read_or_none(self.container, item_id, partition_key)

    def _query_items(
        self, query: str, parameters: Mapping[str, Any], *, partition_key: str | None = None
    ) -> list[Any]:
        """:func:`query_all` in this container."""
        return query_all(self.container, query, parameters, partition_key=partition_key)

    def _delete_item(self, item_id: str, partition_key: str) -> bool:
        """:func:`delete_if_present` in this container."""
        return delete_if_present(self.container, item_id, partition_key)

    def _write_over(self, read: Mapping[str, Any] | None, item: dict[str, Any]) -> None:
        """Create ``item`` (``read`` is ``None``: there was none), or replace the item
        ``read`` with it only if it is unchanged since (its ETag); ``AlreadyExistsError`` or
        ``ConcurrentUpdateError`` when another writer came first."""
        with translate_errors():
            if read is None:
                self.container.create_item(item)
            else:
                self.container.replace_item(
                    item["id"],
                    item,
                    etag=read["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                )


def partition_of(bucket: int) -> int:
    """The logical partition (0 .. PARTITIONS - 1) of a 16-bit hash bucket."""
    return bucket * PARTITIONS // 65536


def scan_partitions(
    container: ContainerProxy,
    *,
    partition_keys: Sequence[str],
    where: str,
    parameters: list[dict[str, Any]],
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` items of ``partition_keys``, in order, resuming after ``cursor``.

    Each partition is one single-partition query (``c.pk = @pk`` is in the WHERE as well as
    ``partition_key=``, because the test server ignores the latter). The cursor is
    ``"<position>:<continuation token>"``: Cosmos DB's own token within the partition at that
    position of ``partition_keys``.
    """
    position, token = 0, None
    if cursor:
        head, _, rest = cursor.partition(":")
        position, token = int(head), rest or None
    query = (
        f"SELECT * FROM c WHERE c.pk = @pk AND ({where})"
        if where
        else ("SELECT * FROM c WHERE c.pk = @pk")
    )
    items: list[dict[str, Any]] = []
    with translate_errors():
        while position < len(partition_keys) and len(items) < limit:
            key = partition_keys[position]
            pages: Any = container.query_items(
                query,
                parameters=[{"name": "@pk", "value": key}, *parameters],
                partition_key=key,
                max_item_count=limit - len(items),
            ).by_page(token)
            page = next(pages, None)
            if page is not None:
                items.extend(page)
            token = pages.continuation_token if page is not None else None
            if token is None:
                position += 1
    if position >= len(partition_keys):
        return items, None
    return items, f"{position}:{token or ''}"


def read_or_none(
    container: ContainerProxy, item_id: str, partition_key: str
) -> dict[str, Any] | None:
    """The item (a point read), or ``None`` if there is none."""
    try:
        with translate_errors():
            item: dict[str, Any] = container.read_item(item_id, partition_key=partition_key)
    except NotFoundError:
        return None
    return item


def delete_if_present(container: ContainerProxy, item_id: str, partition_key: str) -> bool:
    """Delete the item; whether there was one."""
    try:
        with translate_errors():
            container.delete_item(item_id, partition_key=partition_key)
    except NotFoundError:
        return False
    return True


def query_all(
    container: ContainerProxy,
    query: str,
    parameters: Mapping[str, Any],
    *,
    partition_key: str | None = None,
) -> list[Any]:
    """Every item (or value) ``query`` selects, ``parameters`` given as ``{"@name": value}``:
    in one logical partition if ``partition_key`` names it, across them all otherwise."""
    where: dict[str, Any] = (
        {"enable_cross_partition_query": True}
        if partition_key is None
        else {"partition_key": partition_key}
    )
    with translate_errors():
        return list(
            container.query_items(
                query, parameters=[{"name": k, "value": v} for k, v in parameters.items()], **where
            )
        )


def first_value(result: Iterable[Any]) -> Any:
    """The one value of a ``SELECT VALUE COUNT(1)`` query (an iterable holding ``[n]``)."""
    return next(iter(result))


def retry_after(error: CosmosHttpResponseError) -> float | None:
    """Seconds from ``x-ms-retry-after-ms`` (or ``Retry-After``), if the service sent one."""
    return retry_after_from(getattr(error, "headers", None))


@contextmanager
def translate_errors() -> Iterator[None]:
    """Convert Cosmos DB SDK errors into the library's store errors, once."""
    try:
        yield
    except CosmosHttpResponseError as exc:
        status = exc.status_code
        message = f"Cosmos DB answered {status}"
        if status == 404:
            raise NotFoundError(message, cause=exc) from exc
        if status == 409:
            raise AlreadyExistsError(message, cause=exc) from exc
        if status == 412:
            raise ConcurrentUpdateError(message, cause=exc) from exc
        if status in _TRANSIENT_STATUS:
            raise StoreUnavailableError(message, cause=exc, retry_after=retry_after(exc)) from exc
        raise StoreError(message, cause=exc) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StoreUnavailableError(f"Cosmos DB unreachable: {exc}", cause=exc) from exc
    except AzureError as exc:
        raise StoreError(f"Cosmos DB error: {exc}", cause=exc) from exc
