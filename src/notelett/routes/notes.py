"""``/api/notes``: create, list, read, replace and delete notes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from notelett.deps import CurrentUser, Cursors, Service, WriteSlot
from notelett.models import (
    LIST_DEFAULT_LIMIT,
    LIST_MAX_LIMIT,
    TAG_MAX_CHARS,
    ErrorOut,
    NoteCreate,
    NoteErrorOut,
    NoteListOut,
    NoteOut,
    NoteUpdate,
)
from notelett.service import Note, NoteContent

router = APIRouter(prefix="/api/notes", tags=["notes"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed JSON or an invalid cursor",
        401: "Missing or invalid bearer token",
        404: "No such note or workspace, or not one of yours (the same answer)",
        412: "If-Match does not match the note's current ETag",
        413: "Request body above the size limit",
        422: "Input of the wrong shape: unknown field, wrong type, out of range",
        428: "If-Match is required",
        500: "A note failed to decrypt (see correlationId)",
        503: "Encryption keys or the database temporarily unavailable (read-only, locked, "
        "full or gone), or no write slot freed in time; see Retry-After",
    }
    return {code: {"model": ErrorOut, "description": descriptions[code]} for code in codes}


_COMMON = (401, 500, 503)

_ETAG = {
    "ETag": {"description": "The note's revision, as a strong ETag", "schema": {"type": "string"}}
}
_LOCATION = {"Location": {"description": "The new note's path", "schema": {"type": "string"}}}


def _with(success: int, headers: dict[str, Any], *codes: int) -> dict[int | str, dict[str, Any]]:
    """The error responses ``codes`` plus the headers of the ``success`` response."""
    return {success: {"headers": headers}, **_errors(*codes)}


def _out(note: Note) -> NoteOut:
    return NoteOut(
        id=note.id,
        workspaceId=note.workspace_id,
        title=note.title,
        body=note.body,
        tags=list(note.tags),
        revision=note.revision,
        createdAt=note.created_at,
        updatedAt=note.updated_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=_with(201, {**_ETAG, **_LOCATION}, 400, 404, 413, 422, *_COMMON),
    summary="Create a note",
    operation_id="createNote",
    dependencies=[WriteSlot],
)
def create_note(
    payload: NoteCreate, user: CurrentUser, service: Service, response: Response
) -> NoteOut:
    note = service.create(
        user,
        payload.workspace_id,
        NoteContent(title=payload.title, body=payload.body, tags=tuple(payload.tags)),
    )
    response.headers["ETag"] = note.etag
    response.headers["Location"] = f"/api/notes/{note.id}"
    return _out(note)


@router.get(
    "",
    responses=_errors(400, 404, 422, *_COMMON),
    summary="List a workspace's notes, optionally those with a tag",
    operation_id="listNotes",
)
def list_notes(
    user: CurrentUser,
    service: Service,
    cursors: Cursors,
    workspace_id: Annotated[str, Query(alias="workspaceId", min_length=1, max_length=128)],
    limit: Annotated[int, Query(ge=1, le=LIST_MAX_LIMIT)] = LIST_DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    tag: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=TAG_MAX_CHARS,
            description="Only notes with this tag (exact match; Unicode NFC, leading and "
            "trailing spaces ignored), found through the tags' blind index.",
        ),
    ] = None,
) -> NoteListOut:
    position = cursors.decode(workspace_id, cursor)
    page = service.list(user, workspace_id, cursor=position, limit=limit, tag=tag)
    return NoteListOut(
        items=[_out(n) for n in page.notes],
        errors=[NoteErrorOut(id=u.id, code=u.code) for u in page.unreadable],
        nextCursor=cursors.encode(workspace_id, page.cursor),
    )


@router.get(
    "/{note_id}",
    responses=_with(200, _ETAG, 404, *_COMMON),
    summary="Read a note",
    operation_id="getNote",
)
def get_note(note_id: str, user: CurrentUser, service: Service, response: Response) -> NoteOut:
    note = service.get(user, note_id)
    response.headers["ETag"] = note.etag
    return _out(note)


@router.put(
    "/{note_id}",
    responses=_with(200, _ETAG, 400, 404, 412, 413, 422, 428, *_COMMON),
    summary="Replace a note's content (If-Match required)",
    operation_id="replaceNote",
    dependencies=[WriteSlot],
)
def replace_note(
    note_id: str,
    payload: NoteUpdate,
    user: CurrentUser,
    service: Service,
    response: Response,
    if_match: Annotated[str | None, Header(description="The note's current ETag.")] = None,
) -> NoteOut:
    note = service.update(
        user,
        note_id,
        NoteContent(title=payload.title, body=payload.body, tags=tuple(payload.tags)),
        if_match=if_match,
    )
    response.headers["ETag"] = note.etag
    return _out(note)


@router.delete(
    "/{note_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_errors(404, 412, *_COMMON),
    summary="Delete a note, crypto-shredding its DEK",
    operation_id="deleteNote",
    dependencies=[WriteSlot],
)
def delete_note(
    note_id: str,
    user: CurrentUser,
    service: Service,
    if_match: Annotated[str | None, Header(description="Optional: the note's ETag.")] = None,
) -> Response:
    service.delete(user, note_id, if_match=if_match)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
