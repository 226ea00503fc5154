"""Tag lookup on encrypted tags: an index lookup, against a plaintext-tag baseline, same run.

For each store (SQLite, PostgreSQL, the Cosmos DB emulator) a fresh NoteLett database is
filled with ``--notes`` notes (default 100,000) in 10 workspaces: title, body and tags
sealed (one DEK per ``--notes-per-dek`` notes, binary tokens), each distinct tag's
blind-index value in the store's tag index, written the way the repository writes them.
Beside them a **plaintext baseline** of the same size and shape: SQL, a table
``bench_plain_tags(workspace_id, tag, note_seq)`` with the same primary key as
``note_tags`` but the tag in clear; Cosmos DB, a container of the same items with the tags
in clear, queried with ``ARRAY_CONTAINS`` on them.

Tags: ``rare`` on every 1000th note (100 per 100k, about 10 per workspace), ``common`` on every
10th, and 0-2 of 500 other words. It then prints

* the query plan of the lookup (SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL
  ``EXPLAIN (ANALYZE, BUFFERS)``) and, on Cosmos DB, the request charge (RU) the server
  reports for one lookup (``x-ms-request-charge``; the emulator may report none);
* the latency of a first page (50 notes, one workspace) by tag: ``encrypted`` (the HMAC
  of the tag for each index-key version, then the repository's query on the tag index,
  raw rows), ``baseline`` (the same query on the plaintext baseline, raw rows), and
  ``service`` (what ``GET /api/notes/?tag=`` runs below HTTP: lookup, records, decrypting
  the page's 50 notes);
  median and p95 of ``--repeat`` lookups, interleaved so load hits all alike.

    .venv/bin/python bench/tag_lookup.py [--notes 100000] [--stores sqlite,postgres,cosmos]

PostgreSQL and Cosmos DB are throwaway servers started the way the tests start them
(tests/servers/), unless ``--postgres-url`` names a database. CI never runs this.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import field_encrypt
from field_encrypt.providers.local import LocalKeyProvider
from notelett import NoteLettSettings
from notelett.auth import Principal
from notelett.backend import Backend, open_backend
from notelett.binding import document_id, tags_to_store
from notelett.repositories.base import NoteRecord
from notelett.service import NotesService

WORKSPACES = [f"ws-{i}" for i in range(10)]
WORDS = [f"w{i:03d}" for i in range(500)]
USER = "bench"
MEK = "tag-bench-mek"


def tags_of(i: int, rng: random.Random) -> list[str]:
    tags = rng.sample(WORDS, rng.randint(0, 2))
    if i % 10 == 0:
        tags.append("common")
    if i % 1000 == 0:
        tags.append("rare")
    return tags


def seed_rows(backend: Backend, count: int, per_dek: int) -> Iterator[tuple[NoteRecord, list[str]]]:
    """Sealed notes with their index values (what the service writes), and their tags."""
    rng = random.Random(19)
    encryptor = backend.encryptor
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    dek_id = ""
    for i in range(count):
        if i % per_dek == 0:
            dek_id = encryptor.create_dek()
        workspace = rng.choice(WORKSPACES)
        note_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
        tags = tags_of(i, rng)
        sealed = encryptor.encrypt_document(
            "notes",
            document_id(workspace, note_id),
            {"title": f"note {i}", "body": "lorem ipsum " * 20, "tags": tags},
            dek_id=dek_id,
        )
        at = start + dt.timedelta(seconds=i)
        yield (
            NoteRecord(
                id=note_id,
                workspace_id=workspace,
                title=sealed["title"],
                body=sealed["body"],
                tags=tags_to_store(sealed["tags"]),
                dek_id=dek_id,
                revision=1,
                created_at=at,
                updated_at=at,
                tag_index=backend.tags.values(tags),
            ),
            tags,
        )


# -- per store: bulk load, the baseline lookup, the plan ---------------------------------------


def load_sqlite(backend: Backend, count: int, per_dek: int) -> None:
    database = backend.runtime.database
    database.execute(
        "CREATE TABLE bench_plain_tags (workspace_id TEXT NOT NULL, tag TEXT NOT NULL, "
        "note_seq INTEGER NOT NULL, PRIMARY KEY (workspace_id, tag, note_seq)) WITHOUT ROWID"
    )
    rows = seed_rows(backend, count, per_dek)
    for chunk in _chunks(rows, 5000):
        with database.transaction() as tx:
            for record, tags in chunk:
                seq = tx.execute(
                    "INSERT INTO notes (id, workspace_id, title, body, tags, dek_id, revision, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
                    (
                        record.id,
                        record.workspace_id,
                        record.title,
                        record.body,
                        record.tags,
                        record.dek_id,
                        record.created_at.timestamp(),
                        record.updated_at.timestamp(),
                    ),
                ).lastrowid
                tx.executemany(
                    "INSERT INTO note_tags VALUES (?, ?, ?)",
                    [(record.workspace_id, v, seq) for v in record.tag_index or ()],
                )
                tx.executemany(
                    "INSERT OR IGNORE INTO bench_plain_tags VALUES (?, ?, ?)",
                    [(record.workspace_id, t, seq) for t in tags],
                )
    database.execute("ANALYZE")


Lookups = tuple[Callable[[str, str], int], Callable[[str, str], int], Callable[[str], str]]
"""A store's encrypted lookup and baseline lookup (raw rows, alike) and its plan printer."""


def sqlite_lookups(backend: Backend) -> Lookups:
    from notelett.repositories.sqlite import tagged_query

    database = backend.runtime.database
    baseline_sql = tagged_query(1, table="bench_plain_tags", column="tag")

    def encrypted(workspace: str, tag: str) -> int:
        values = backend.tags.lookup(tag)
        return len(database.query(tagged_query(len(values)), (workspace, *values, 2**63 - 1, 51)))

    def baseline(workspace: str, tag: str) -> int:
        return len(database.query(baseline_sql, (workspace, tag, 2**63 - 1, 51)))

    def plan(tag: str) -> str:
        values = backend.tags.lookup(tag)
        lines = []
        for title, sql, params in (
            ("encrypted", tagged_query(len(values)), (WORKSPACES[0], *values, 2**63 - 1, 51)),
            ("baseline", baseline_sql, (WORKSPACES[0], tag, 2**63 - 1, 51)),
        ):
            rows = database.query(f"EXPLAIN QUERY PLAN {sql}", params)
            lines.append(f"  {title}: " + "; ".join(str(r[-1]) for r in rows))
        return "\n".join(lines)

    return encrypted, baseline, plan


def load_postgres(backend: Backend, count: int, per_dek: int) -> None:
    database = backend.runtime.database
    database.query(
        "CREATE TABLE bench_plain_tags (workspace_id text NOT NULL, tag text NOT NULL, "
        "note_seq bigint NOT NULL, PRIMARY KEY (workspace_id, tag, note_seq))"
    )
    seq = 0
    for chunk in _chunks(seed_rows(backend, count, per_dek), 5000):
        notes, index, plain = [], [], []
        for record, tags in chunk:
            seq += 1
            notes.append(
                (
                    seq,
                    record.id,
                    record.workspace_id,
                    record.title,
                    record.body,
                    record.tags,
                    record.dek_id,
                    record.created_at,
                    record.updated_at,
                )
            )
            index += [(record.workspace_id, v, seq) for v in record.tag_index or ()]
            plain += [(record.workspace_id, t, seq) for t in set(tags)]
        with database.transaction() as conn:
            cursor = conn.connection.driver_connection.cursor()
            cursor.executemany(
                "INSERT INTO notes (seq, id, workspace_id, title, body, tags, tags_token, dek_id, "
                "revision, created_at, updated_at) OVERRIDING SYSTEM VALUE "
                "VALUES (%s, %s, %s, %s, %s, '{}', %s, %s, 1, %s, %s)",
                notes,
            )
            cursor.executemany("INSERT INTO note_tags VALUES (%s, %s, %s)", index)
            cursor.executemany("INSERT INTO bench_plain_tags VALUES (%s, %s, %s)", plain)
    database.query(
        "SELECT setval(pg_get_serial_sequence('notes', 'seq'), (SELECT max(seq) FROM notes))"
    )
    database.query("ANALYZE")


def postgres_lookups(backend: Backend) -> Lookups:
    from notelett.repositories.postgres import tagged_params, tagged_query

    database = backend.runtime.database
    baseline_sql = tagged_query(1, table="bench_plain_tags", column="tag")
    top = 2**63 - 1

    def encrypted(workspace: str, tag: str) -> int:
        values = backend.tags.lookup(tag)
        params = tagged_params(workspace, values, before=top, limit=51)
        return len(database.query(tagged_query(len(values)), params))

    def baseline(workspace: str, tag: str) -> int:
        params = tagged_params(workspace, [tag], before=top, limit=51)
        return len(database.query(baseline_sql, params))

    def plan(tag: str) -> str:
        values = backend.tags.lookup(tag)
        lines = []
        for title, sql, params in (
            (
                "encrypted",
                tagged_query(len(values)),
                tagged_params(WORKSPACES[0], values, before=top, limit=51),
            ),
            ("baseline", baseline_sql, tagged_params(WORKSPACES[0], [tag], before=top, limit=51)),
        ):
            rows = database.query(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params)
            lines.append(f"  {title}:\n" + "\n".join(f"    {r[0]}" for r in rows))
        return "\n".join(lines)

    return encrypted, baseline, plan


def load_cosmos(backend: Backend, count: int, per_dek: int) -> None:
    notes = backend.notes
    plain = backend.runtime.database.container("bench_plain_notes")

    def write(row: tuple[NoteRecord, list[str]]) -> None:
        record, tags = row
        notes.insert(record)
        plain.create_item(
            {
                "id": record.id,
                "pk": record.id[:2],
                "workspaceId": record.workspace_id,
                "tags": tags,
                "deleting": False,
                "sortKey": f"{record.created_at.isoformat()}|{record.id}",
            }
        )

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for chunk in _chunks(seed_rows(backend, count, per_dek), 2000):
            list(pool.map(write, chunk))


def cosmos_lookups(backend: Backend) -> Lookups:
    plain = backend.runtime.database.container("bench_plain_notes")
    notes = backend.notes.container  # type: ignore[attr-defined]

    def encrypted(workspace: str, tag: str) -> int:
        values = backend.tags.lookup(tag)
        matches = " OR ".join(f"ARRAY_CONTAINS(c.tagIndex, @v{i})" for i in range(len(values)))
        items = notes.query_items(
            "SELECT TOP 51 * FROM c WHERE c.workspaceId = @w AND c.deleting = false "
            f"AND ({matches}) ORDER BY c.sortKey DESC",
            parameters=[
                {"name": "@w", "value": workspace},
                *({"name": f"@v{i}", "value": v} for i, v in enumerate(values)),
            ],
            enable_cross_partition_query=True,
        )
        return len(list(items))

    def baseline(workspace: str, tag: str) -> int:
        items = plain.query_items(
            "SELECT TOP 51 * FROM c WHERE c.workspaceId = @w AND c.deleting = false "
            "AND ARRAY_CONTAINS(c.tags, @t) ORDER BY c.sortKey DESC",
            parameters=[{"name": "@w", "value": workspace}, {"name": "@t", "value": tag}],
            enable_cross_partition_query=True,
        )
        return len(list(items))

    def charge(container: Any, run: Callable[[], object]) -> str:
        run()
        headers = container.client_connection.last_response_headers or {}
        return str(headers.get("x-ms-request-charge", "not reported"))

    def plan(tag: str) -> str:
        encrypted_ru = charge(notes, lambda: encrypted(WORKSPACES[0], tag))
        plain_ru = charge(plain, lambda: baseline(WORKSPACES[0], tag))
        return (
            "  request charge (RU, the query's last request): "
            f"encrypted {encrypted_ru}, baseline {plain_ru}"
        )

    return encrypted, baseline, plan


# -- the run -------------------------------------------------------------------------------------


def measure(backend: Backend, store: str, count: int, repeat: int, per_dek: int) -> None:
    loaders = {"sqlite": load_sqlite, "postgres": load_postgres, "cosmos": load_cosmos}
    lookups = {"sqlite": sqlite_lookups, "postgres": postgres_lookups, "cosmos": cosmos_lookups}
    directory = backend.directory
    directory.add_user(USER, name="Bench")
    for workspace in WORKSPACES:
        directory.add_workspace(workspace, name=workspace)
        directory.add_member(USER, workspace)
    started = time.perf_counter()
    loaders[store](backend, count, per_dek)
    print(f"\n== {store}: {count:,} notes loaded in {time.perf_counter() - started:.0f} s")
    encrypted, baseline, plan = lookups[store](backend)
    service = NotesService(
        encryptor=backend.encryptor,
        notes=backend.notes,
        directory=backend.directory,
        tags=backend.tags,
    )
    principal = Principal(user_id=USER)
    for tag in ("rare", "common"):
        print(f"-- tag {tag!r}: query plan")
        print(plan(tag))
        times: dict[str, list[float]] = {"encrypted": [], "baseline": [], "service": []}
        found: dict[str, int] = {}

        def served(workspace: str, tag: str = tag) -> int:
            page = service.list(principal, workspace, cursor=None, limit=50, tag=tag)
            assert not page.unreadable
            return len(page.notes)

        runs: dict[str, Callable[[str], int]] = {
            "encrypted": lambda w, tag=tag: encrypted(w, tag),  # type: ignore[misc]
            "baseline": lambda w, tag=tag: baseline(w, tag),  # type: ignore[misc]
            "service": served,
        }
        for name, run in runs.items():  # warm-up: caches, plans, DEKs
            found[name] = run(WORKSPACES[0])
        for i in range(repeat):
            workspace = WORKSPACES[i % len(WORKSPACES)]
            order = list(runs.items())
            random.Random(i).shuffle(order)
            for name, run in order:
                t0 = time.perf_counter()
                run(workspace)
                times[name].append((time.perf_counter() - t0) * 1000)
        print(f"-- tag {tag!r}: first page, {repeat} lookups each (ms)")
        for name, samples in times.items():
            samples.sort()
            p95 = samples[int(len(samples) * 0.95) - 1]
            print(
                f"  {name:<10} median {statistics.median(samples):8.3f}  p95 {p95:8.3f}  "
                f"(page of {min(found[name], 50)})"
            )
        ratio = statistics.median(times["encrypted"]) / statistics.median(times["baseline"])
        print(f"  encrypted / baseline (median): {ratio:.2f}x")


@contextmanager
def database_url(store: str, scratch: Path, args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """The database URL of ``store`` and the Cosmos DB key ("" elsewhere)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.servers
    if store == "sqlite":
        yield str(scratch / "notelett.db"), ""
    elif store == "postgres":
        if args.postgres_url:
            yield args.postgres_url, ""
            return
        from tests.servers.postgres import PostgresServer

        with PostgresServer() as server:
            yield server.create_database("tag_bench"), ""
    else:
        from tests.backends import cosmos_url_for
        from tests.servers.cosmos import CosmosServer

        with CosmosServer() as server:
            yield cosmos_url_for(server, "tag_bench"), server.key


def _chunks(rows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run(store: str, url: str, key: str, scratch: Path, args: argparse.Namespace) -> None:
    encryption = field_encrypt.load_settings(
        environ={},
        keyring=str(scratch / "keyring.json"),
        mek_name=MEK,
        **({"cosmos_key": key} if key else {}),
    )
    provider = LocalKeyProvider(encryption.keyring, mek_name=MEK, refresh_seconds=0)
    settings = NoteLettSettings(database=url, jwt_secret="x" * 64)  # type: ignore[arg-type]
    backend = open_backend(encryption, settings, provider=provider)
    try:
        measure(backend, store, args.notes, args.repeat, args.notes_per_dek)
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=100_000)
    parser.add_argument("--stores", default="sqlite,postgres,cosmos")
    parser.add_argument("--repeat", type=int, default=200, help="lookups per kind and tag")
    parser.add_argument("--notes-per-dek", type=int, default=100)
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for store in args.stores.split(","):
        with (
            tempfile.TemporaryDirectory(prefix="tag-bench-") as scratch,
            database_url(store, Path(scratch), args) as (url, key),
        ):
            run(store, url, key, Path(scratch), args)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
