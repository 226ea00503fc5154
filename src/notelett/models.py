"""The API's request and response schemas (what the OpenAPI document shows).

Requests forbid unknown fields and are strict about types (no ``1`` for ``"1"``); the
JSON names are camelCase. Responses carry plaintext values only: never a token, a
wrapped DEK, a dekId or a key name.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

TITLE_MAX_CHARS = 1_000
BODY_MAX_CHARS = 100_000
TAGS_MAX = 32
TAG_MAX_CHARS = 64
LIST_DEFAULT_LIMIT = 50
LIST_MAX_LIMIT = 200

Tag = Annotated[str, StringConstraints(min_length=1, max_length=TAG_MAX_CHARS)]
WorkspaceId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class NoteCreate(_Request):
    """A new note. ``workspaceId`` is fixed for the note's life."""

    workspace_id: WorkspaceId = Field(alias="workspaceId")
    title: str = Field(max_length=TITLE_MAX_CHARS)
    body: str = Field(max_length=BODY_MAX_CHARS)
    tags: list[Tag] = Field(default_factory=list, max_length=TAGS_MAX)


class NoteUpdate(_Request):
    """A full replacement of a note's content. ``workspaceId`` cannot be changed."""

    title: str = Field(max_length=TITLE_MAX_CHARS)
    body: str = Field(max_length=BODY_MAX_CHARS)
    tags: list[Tag] = Field(default_factory=list, max_length=TAGS_MAX)


class NoteOut(_Response):
    """A note, decrypted. ``revision`` is also sent as the ETag ``"<revision>"``."""

    id: str
    workspace_id: str = Field(alias="workspaceId")
    title: str
    body: str
    tags: list[str]
    revision: int
    created_at: dt.datetime = Field(alias="createdAt")
    updated_at: dt.datetime = Field(alias="updatedAt")


class NoteErrorOut(_Response):
    """A note on the page that could not be served: its id and why, never its content."""

    id: str
    code: Literal["note_unreadable"] = Field(
        description="`note_unreadable`: the note failed to decrypt (tampered, or its DEK "
        "is missing); logged with its dekId and counted in `notelett_decrypt_failures_total`."
    )


class NoteListOut(_Response):
    """One page of a workspace's notes, newest first. A note that fails to decrypt does not
    fail the page: it is left out of ``items`` and named in ``errors``."""

    items: list[NoteOut]
    errors: list[NoteErrorOut] = Field(
        default_factory=list,
        description="Notes of this page that could not be served (empty when all were).",
    )
    next_cursor: str | None = Field(
        alias="nextCursor", description="Pass as `cursor` for the next page; null on the last."
    )


class ErrorDetail(_Response):
    code: str = Field(description="A stable machine-readable code, e.g. `not_found`.")
    message: str
    correlation_id: str | None = Field(
        default=None,
        alias="correlationId",
        description="Server errors only: quote it to operators (also in `X-Request-ID`).",
    )
    details: list[dict[str, object]] | None = Field(
        default=None, description="Validation errors only: which input was wrong and why."
    )


class ErrorOut(_Response):
    """Every error answer has this shape."""

    error: ErrorDetail


class HealthOut(_Response):
    status: Literal["ok"]


class CheckOut(_Response):
    name: str
    status: Literal["ok", "fail"]
    detail: str


class ReadinessOut(_Response):
    """One line per dependency check: ``ok`` and ``degraded`` (the key provider does not
    answer but cached DEKs still serve) answer 200, ``fail`` 503."""

    status: Literal["ok", "degraded", "fail"]
    checks: list[CheckOut]
