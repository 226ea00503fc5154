"""The Cosmos DB implementations of :class:`NotesRepository` and :class:`WorkspaceDirectory`.

Container ``notes``, partition key ``/pk`` = one of 256 hash buckets of the note id (as the
generic document store does). Every call by note id (get, replace, delete) is then a point
read or write that needs nothing but the id, and an id is unique across the container (Cosmos
DB only enforces ids within a logical partition). A workspace's listing is a cross-partition
query ordered by ``sortKey`` (the SDK merges the partitions' sorted pages); partitioning by
workspace would make listings single-partition but every read by id a fan-out, and would
let two workspaces hold the same note id. Items::

    {"id": noteId, "pk": "<2 hex digits>", "workspaceId": ..., "title": ..., "body": ...,
     "tags": {"b64": ...} or [...], "tagIndex": ["bi1:...", ...], "dekId": ...,
     "revision": 3, "createdAt": ..., "updatedAt": ..., "deleting": false,
     "sortKey": "<createdAt>|<noteId>", "bucket": 0..65535}

``tags`` is one binary token sealing the list or, written before tags were encrypted, the
plaintext list; ``tagIndex`` (absent on a note never indexed) holds the tags' blind-index
values, queried with ``ARRAY_CONTAINS`` (the container's default indexing policy indexes
every path, array elements included) together with the workspace and ``sortKey``.

A stored field is a text token or plaintext (a JSON string), a binary token
(``{"b64": "..."}``) or ``null``. ``revision`` is NoteLett's counter; the compare-and-swap
itself is the ETag (read, check the revision, replace with ``If-Match``). Listings page by
``sortKey`` (newest first, keyset), rotation scans by ``id`` with ``bucket % n`` for shards.

Container ``directory``, partition key ``/pk`` = the item id, one item per workspace, user
and membership; ids are SHA-256 digests of the names, since Cosmos DB ids may not contain
``/ \\ ? #`` and names from an identity provider may.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from typing import Any, Unpack

from field_encrypt import AlreadyExistsError, ConcurrentUpdateError, NotFoundError
from field_encrypt.backends.cosmos.db import (
    ContainerStore,
    first_value,
    query_all,
    translate_errors,
)
from field_encrypt.backends.cosmos.documents import partition_key
from field_encrypt.backends.sharding import bucket_of, check_shard
from notelett.errors import InvalidCursorError
from notelett.repositories.base import (
    NoteChange,
    NotePage,
    NoteRecord,
    StoredValue,
    Workspace,
)

NOTES = "notes"
DIRECTORY = "directory"
_SORT_KEY = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\|[^|]{1,255}")


class CosmosNotesRepository(ContainerStore):
    """Notes in the ``notes`` container of the product's Cosmos DB database."""

    container_name = NOTES

    def insert(self, note: NoteRecord) -> NoteRecord:
        stored = dataclasses.replace(note, revision=1, deleting=False)
        with translate_errors():  # a taken id raises AlreadyExistsError
            self.container.create_item(_item(stored))
        return stored

    def get(self, note_id: str) -> NoteRecord:
        item = self._find(note_id)
        if item is None or item["deleting"]:
            raise NotFoundError(f"note {note_id} not found")
        return _record(item)

    def list_workspace(self, workspace_id: str, *, cursor: str | None, limit: int) -> NotePage:
        return self._page("", {}, workspace_id, cursor=cursor, limit=limit)

    def list_tagged(
        self, workspace_id: str, index_values: Sequence[str], *, cursor: str | None, limit: int
    ) -> NotePage:
        values = list(dict.fromkeys(index_values))
        if not values:
            return NotePage(notes=[], cursor=None)
        matches = " OR ".join(f"ARRAY_CONTAINS(c.tagIndex, @v{i})" for i in range(len(values)))
        parameters = {f"@v{i}": v for i, v in enumerate(values)}
        return self._page(f" AND ({matches})", parameters, workspace_id, cursor=cursor, limit=limit)

    def _page(
        self,
        where: str,
        parameters: dict[str, Any],
        workspace_id: str,
        *,
        cursor: str | None,
        limit: int,
    ) -> NotePage:
        """One listing page of a workspace's live notes matching ``where`` (added to the
        workspace's condition), newest first, after ``cursor`` (a ``sortKey``)."""
        where = f"c.workspaceId = @workspace AND c.deleting = false{where}"
        parameters = {"@workspace": workspace_id, "@n": limit + 1, **parameters}
        if cursor is not None:
            if not _SORT_KEY.fullmatch(cursor):
                raise InvalidCursorError()
            where += " AND c.sortKey < @before"
            parameters["@before"] = cursor
        items = self._query_items(
            f"SELECT TOP @n * FROM c WHERE {where} ORDER BY c.sortKey DESC",
            parameters,
        )
        more = len(items) > limit
        items = items[:limit]
        return NotePage(
            notes=[_record(i) for i in items],
            cursor=items[-1]["sortKey"] if more and items else None,
        )

    def replace(
        self, note_id: str, *, expected_revision: int, **change: Unpack[NoteChange]
    ) -> NoteRecord:
        item = self._find(note_id)
        if item is None or item["deleting"]:
            raise NotFoundError(f"note {note_id} not found")
        if item["revision"] != expected_revision:
            raise ConcurrentUpdateError(f"note {note_id} changed since it was read")
        current = _record(item)
        fields: dict[str, Any] = {**change, "revision": current.revision + 1}
        if change.get("tag_index") is None:
            fields["tag_index"] = current.tag_index  # kept as stored
        updated = dataclasses.replace(current, **fields)
        self._swap(item, _item(updated))
        return updated

    def mark_deleting(self, note_id: str, *, expected_revision: int | None) -> NoteRecord:
        item = self._find(note_id)
        if item is None or item["deleting"]:
            raise NotFoundError(f"note {note_id} not found")
        if expected_revision is not None and item["revision"] != expected_revision:
            raise ConcurrentUpdateError(f"note {note_id} changed since it was read")
        marked = dataclasses.replace(_record(item), deleting=True)
        self._swap(item, _item(marked))
        return marked

    def remove(self, note_id: str) -> bool:
        item = self._find(note_id)
        if item is None:
            return False
        return self._delete_item(note_id, item["pk"])

    def pending_deletes(self, *, limit: int) -> list[NoteRecord]:
        items = self._query_items(
            "SELECT TOP @n * FROM c WHERE c.deleting = true ORDER BY c.sortKey",
            {"@n": limit},
        )
        return [_record(i) for i in items]

    def scan(self, *, cursor: str | None, limit: int, shard: tuple[int, int] | None) -> NotePage:
        where = "c.deleting = false AND c.id > @after"
        parameters: dict[str, Any] = {"@after": cursor or "", "@n": limit}
        if shard is not None:
            index, count = check_shard(shard)
            where += " AND c.bucket % @count = @index"
            parameters |= {"@count": count, "@index": index}
        items = query_all(
            self.container, f"SELECT TOP @n * FROM c WHERE {where} ORDER BY c.id", parameters
        )
        return NotePage(
            notes=[_record(i) for i in items],
            cursor=items[-1]["id"] if len(items) == limit else None,
        )

    def count(self) -> int:
        with translate_errors():
            result = self.container.query_items(
                "SELECT VALUE COUNT(1) FROM c WHERE c.deleting = false",
                enable_cross_partition_query=True,
            )
            return int(first_value(result))

    def ping(self) -> None:
        with translate_errors():
            self.container.read()

    def check_writable(self) -> None:
        probe = {"id": "write-probe", "pk": "write-probe", "kind": "probe"}
        with translate_errors():
            self.database.container(DIRECTORY).upsert_item(probe)

    def _find(self, note_id: str) -> dict[str, Any] | None:
        """The note's item (marked for deletion or not), or ``None``: one point read."""
        return self._read_item(note_id, partition_key(note_id))

    def _swap(self, read: dict[str, Any], new: dict[str, Any]) -> None:
        """Replace ``read`` with ``new`` only if the item still has ``read``'s ETag."""
        try:
            self._write_over(read, new)
        except ConcurrentUpdateError:
            raise ConcurrentUpdateError(f"note {read['id']} changed since it was read") from None
        except NotFoundError:
            raise NotFoundError(f"note {read['id']} not found") from None


class CosmosWorkspaceDirectory(ContainerStore):
    """Workspaces, users and memberships in the ``directory`` container."""

    container_name = DIRECTORY

    def is_member(self, user_id: str, workspace_id: str) -> bool:
        key = _key("member", user_id, workspace_id)
        return self._read_item(key, key) is not None

    def add_workspace(self, workspace_id: str, *, name: str) -> None:
        self._add(
            _key("workspace", workspace_id), kind="workspace", workspaceId=workspace_id, name=name
        )

    def add_user(self, user_id: str, *, name: str) -> None:
        self._add(_key("user", user_id), kind="user", userId=user_id, name=name)

    def add_member(self, user_id: str, workspace_id: str) -> None:
        self._add(
            _key("member", user_id, workspace_id),
            kind="member",
            userId=user_id,
            workspaceId=workspace_id,
        )

    def remove_member(self, user_id: str, workspace_id: str) -> bool:
        key = _key("member", user_id, workspace_id)
        return self._delete_item(key, key)

    def list_workspaces(self) -> list[Workspace]:
        items = self._query("SELECT c.workspaceId, c.name FROM c WHERE c.kind = 'workspace'")
        found = [Workspace(id=i["workspaceId"], name=i["name"]) for i in items]
        return sorted(found, key=lambda w: w.id)

    def list_members(self, workspace_id: str) -> list[str]:
        items = self._query(
            "SELECT c.userId FROM c WHERE c.kind = 'member' AND c.workspaceId = @w",
            {"@w": workspace_id},
        )
        return sorted(i["userId"] for i in items)

    def _query(self, query: str, parameters: dict[str, Any] | None = None) -> list[Any]:
        return self._query_items(query, parameters or {})

    def _add(self, key: str, **fields: str) -> None:
        try:
            with translate_errors():
                self.container.create_item({"id": key, "pk": key, **fields})
        except AlreadyExistsError:
            pass  # a no-op if it exists


def _key(kind: str, *names: str) -> str:
    return f"{kind}-" + hashlib.sha256("\0".join(names).encode()).hexdigest()[:40]


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _encode(value: StoredValue) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b64": base64.b64encode(bytes(value)).decode()}
    return value


def _decode(value: Any) -> StoredValue:
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return value  # type: ignore[no-any-return]


def _item(note: NoteRecord) -> dict[str, Any]:
    created = _time(note.created_at)
    return {
        "id": note.id,
        "pk": partition_key(note.id),
        "workspaceId": note.workspace_id,
        "title": _encode(note.title),
        "body": _encode(note.body),
        "tags": _encode(note.tags) if isinstance(note.tags, bytes) else list(note.tags),
        "dekId": note.dek_id,
        "revision": note.revision,
        "createdAt": created,
        "updatedAt": _time(note.updated_at),
        "deleting": note.deleting,
        "sortKey": f"{created}|{note.id}",
        "bucket": bucket_of(note.id),
        **({"tagIndex": list(note.tag_index)} if note.tag_index is not None else {}),
    }


def _record(item: dict[str, Any]) -> NoteRecord:
    return NoteRecord(
        id=item["id"],
        workspace_id=item["workspaceId"],
        title=_decode(item["title"]),
        body=_decode(item["body"]),
        tags=_decode(item["tags"]) if isinstance(item["tags"], dict) else tuple(item["tags"]),  # type: ignore[arg-type]
        dek_id=item["dekId"],
        revision=int(item["revision"]),
        created_at=dt.datetime.fromisoformat(item["createdAt"]).replace(tzinfo=dt.UTC),
        updated_at=dt.datetime.fromisoformat(item["updatedAt"]).replace(tzinfo=dt.UTC),
        deleting=bool(item["deleting"]),
        tag_index=tuple(item["tagIndex"]) if "tagIndex" in item else None,
    )
