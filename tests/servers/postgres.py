"""A throwaway PostgreSQL cluster on loopback, for integration tests and benchmarks.

What is real: the PostgreSQL server binaries of this machine (Debian's ``postgresql``
package; ``scripts/install-system-deps`` installs it). ``initdb`` creates a fresh cluster in a
temporary directory and ``pg_ctl`` runs it, listening on 127.0.0.1 only, on an ephemeral port,
with its unix socket inside the same temporary directory.

What was adapted for tests: trust authentication for the ``postgres`` role, and durability
switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``), so a cluster is ready in
about a second and writes are fast. Data survives ``stop()``/``start()`` (a clean shutdown
checkpoints), but not a machine crash, which tests never need.

The server refuses to run as root, so when this process is root the temporary directory is
given to the ``postgres`` OS user and ``initdb``/``pg_ctl`` run through ``runuser``; as any
other user they run directly. Administrative SQL goes through ``psql``, so the harness itself
needs no Python database driver.

    with PostgresServer() as pg:
        engine = sqlalchemy.create_engine(pg.url)
        pg.stop(); pg.start()           # same port, same data directory
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

__all__ = ["PostgresServer", "PostgresServerError", "find_bindir"]

HOST = "127.0.0.1"
OS_USER = "postgres"
SUPERUSER = "postgres"
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_TEST_SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

ShutdownMode = Literal["smart", "fast", "immediate"]


class PostgresServerError(RuntimeError):
    """The cluster could not be created, started, stopped or queried; the message says why."""


def find_bindir() -> Path:
    """Return the directory holding ``initdb`` and ``pg_ctl``: ``pg_config --bindir``, else the
    newest ``/usr/lib/postgresql/*/bin``."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and (bindir / "initdb").is_file():
            return bindir
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        raise PostgresServerError(
            "PostgreSQL server binaries not found; run scripts/install-system-deps"
        )
    newest = max(candidates, key=lambda path: int(Path(path).parent.parent.name))
    return Path(newest).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory; a context manager that removes it on exit."""

    def __init__(self, *, settings: dict[str, str] | None = None, base_dir: Path | None = None):
        """``settings`` are extra ``postgresql.conf`` lines (values as PostgreSQL writes them,
        strings single-quoted); ``base_dir`` is where the temporary directory is made."""
        self._bindir = find_bindir()
        self._extra_settings = dict(settings or {})
        self._base_dir = base_dir
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            try:
                pwd.getpwnam(OS_USER)
            except KeyError:
                raise PostgresServerError(f"running as root needs an OS user {OS_USER!r}") from None
        self._root: Path | None = None
        self._port: int | None = None
        self._running = False

    # -- addresses ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresServerError("the cluster has not been created yet")
        return self._port

    @property
    def dsn(self) -> str:
        """libpq URI of the ``postgres`` database, e.g. ``postgresql://postgres@127.0.0.1:PORT/postgres``."""
        return self.dsn_for("postgres")

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of the ``postgres`` database."""
        return self.url_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    @property
    def root(self) -> Path:
        if self._root is None:
            raise PostgresServerError("the cluster has not been created yet")
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def is_running(self) -> bool:
        return self._running

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self._create()
            self._start_on_a_free_port()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the server again on the same port and data directory (after ``stop()``)."""
        if self._running:
            return
        self._pg_ctl("start", f"--log={self.log_path}", "--timeout=30")
        self._running = True

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Stop the server; ``mode="immediate"`` is a crash-like stop (recovery on next start)."""
        if not self._running:
            return
        self._pg_ctl("stop", f"--mode={mode}", "--timeout=30")
        self._running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server if it runs and delete the temporary directory."""
        try:
            if self._running:
                self.stop("immediate")
        finally:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None

    # -- administration -------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create database ``name`` (lower-case identifier) and return its DSN."""
        self._check_database_name(name)
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def terminate_backends(self, dbname: str) -> int:
        """Terminate every session connected to ``dbname`` (``pg_terminate_backend``); return
        how many were terminated."""
        self._check_database_name(dbname)
        output = self.psql(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        )
        return int(output.strip())

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` through ``psql`` (unaligned, tuples only) and return its output."""
        result = subprocess.run(
            [
                str(self._bindir / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set=ON_ERROR_STOP=1",
                f"--dbname={self.dsn_for(dbname)}",
                f"--command={sql}",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
        if result.returncode != 0:
            raise PostgresServerError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _check_database_name(name: str) -> None:
        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name must match {_DATABASE_NAME.pattern}: {name!r}")

    def _create(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="fe-pg-", dir=self._base_dir))
        self.socket_dir.mkdir()
        if self._as_postgres:
            for path in (self._root, self.socket_dir):
                shutil.chown(path, user=OS_USER, group=OS_USER)
        self._run(
            "initdb",
            f"--pgdata={self.data_dir}",
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        )

    def _start_on_a_free_port(self, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            self._port = _free_port()
            self._write_settings()
            try:
                self.start()
                return
            except PostgresServerError:
                lost_the_port = "Address already in use" in self._log_tail()
                if attempt == attempts or not lost_the_port:
                    raise

    def _write_settings(self) -> None:
        settings = {
            **_TEST_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            **self._extra_settings,
        }
        # postgresql.conf takes the last value given for a setting, so ours win over initdb's
        # and a rewrite (new port) overrides an earlier one.
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# field-encrypt test server\n" + lines)

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run("pg_ctl", action, f"--pgdata={self.data_dir}", "--wait", "--silent", *args)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bindir / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", OS_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            raise PostgresServerError(
                f"{shlex.join(command)} failed ({result.returncode}): "
                f"{result.stderr.strip()}\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""
