"""Coverage-guided fuzzing (atheris) of every HTTP input of NoteLett, in process.

    .venv/bin/python -m tests.fuzz.fuzz_http -max_total_time=60 [-runs=N]

Each input is turned into one ASGI request to the real app (``create_app`` on a seeded
SQLite file and local keyring): method, path (every route template, with real, foreign,
missing and fuzzed ids), query string, headers (a valid token for the owner, one for a
member of another workspace, garbage, none; ``If-Match``, ``Content-Type`` and
``Content-Length`` from the input) and body (a JSON object assembled from fuzzed parts, or
raw bytes). Every answer must be well formed: a known status, and a JSON body of the
``Error`` shape or a success (``204`` empty). A 500 is allowed only as the documented
decryption error (logged as such); any other 500, a malformed answer or an exception
escaping the app is a crash. libFuzzer prints ``Done N runs`` at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["notelett"]):
    import notelett.app  # noqa: F401 - instrumented before anything imports it

from field_encrypt import load_settings
from notelett import NoteLettSettings, create_app
from notelett.auth import mint_dev_token
from notelett.backend import open_backend
from notelett.service import NoteContent, NotesService

# test_fuzz.py passes its tmp_path (libFuzzer ends the process with C exit(), so Python's
# atexit never runs to clean up); a person fuzzing by hand gets a fresh directory.
_tmp = Path(os.environ.get("FUZZ_WORKDIR") or tempfile.mkdtemp(prefix="fuzz-http-"))
_settings = NoteLettSettings(
    database=str(_tmp / "notelett.db"),
    jwt_secret="fuzz-secret-3e8a1f6c9b2d7e4a0c5f8b1d6e3a9c2f7b4d",  # type: ignore[arg-type]
    max_body_bytes=4096,
)
_encryption = load_settings({}, keyring=str(_tmp / "keyring.json"), mek_name="fuzz")
_backend = open_backend(_encryption, _settings)
for _ws in ("ws-a", "ws-b"):
    _backend.directory.add_workspace(_ws, name=_ws)
for _user, _ws in (("alice", "ws-a"), ("bob", "ws-b")):
    _backend.directory.add_user(_user, name=_user)
    _backend.directory.add_member(_user, _ws)
_service = NotesService(
    encryptor=_backend.encryptor, notes=_backend.notes, directory=_backend.directory
)
from notelett.auth import Principal  # noqa: E402

NOTES = [
    _service.create(
        Principal(user_id="alice"), "ws-a", NoteContent(title="t", body="b", tags=())
    ).id
    for _ in range(3)
]
FOREIGN = _service.create(
    Principal(user_id="bob"), "ws-b", NoteContent(title="x", body="y", tags=())
).id
TOKENS = [
    None,
    "Bearer " + mint_dev_token(_settings, user_id="alice"),
    "Bearer " + mint_dev_token(_settings, user_id="bob"),
    "Bearer " + mint_dev_token(_settings, user_id="alice", workspaces=["ws-b"]),
    "Bearer not-a-token",
    "Basic YWxpY2U6cGFzcw==",
]
APP = create_app(_settings, backend=_backend)
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
STATUSES = {200, 201, 204, 307, 308, 400, 401, 404, 405, 412, 413, 422, 428, 503}
_loop = asyncio.new_event_loop()


class _DecryptionLog(logging.Handler):
    """Counts the documented decryption-error log lines (the one allowed 500)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.decryption_errors = 0
        self.unexpected = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "failed to decrypt" in record.getMessage():
            self.decryption_errors += 1
        else:
            self.unexpected += 1
            sys.stderr.write(logging.Formatter().format(record) + "\n")  # what went wrong


_log = _DecryptionLog()
logging.getLogger("notelett").addHandler(_log)
logging.getLogger("notelett").propagate = False


def _path(fdp: atheris.FuzzedDataProvider) -> str:
    choice = fdp.ConsumeIntInRange(0, 7)
    note = [*NOTES, FOREIGN, "0" * 32, fdp.ConsumeUnicodeNoSurrogates(40)][
        fdp.ConsumeIntInRange(0, 5)
    ]
    return [
        "/api/notes",
        "/api/notes/",
        f"/api/notes/{note}",
        "/health",
        "/api/diagnostics/readiness",
        "/openapi.json",
        "/" + fdp.ConsumeUnicodeNoSurrogates(30),
        f"/api/notes/{note}/{fdp.ConsumeUnicodeNoSurrogates(10)}",
    ][choice]


def _json_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    kind = fdp.ConsumeIntInRange(0, 7 if depth < 2 else 4)
    if kind == 0:
        return fdp.ConsumeUnicodeNoSurrogates(20)
    if kind == 1:
        return fdp.ConsumeInt(8)
    if kind == 2:
        return fdp.ConsumeRegularFloat()
    if kind == 3:
        return fdp.ConsumeBool()
    if kind == 4:
        return None
    if kind == 5:
        return [_json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    keys = ["title", "body", "tags", "workspaceId", fdp.ConsumeUnicodeNoSurrogates(8)]
    return {
        keys[fdp.ConsumeIntInRange(0, 4)]: _json_value(fdp, depth + 1)
        for _ in range(fdp.ConsumeIntInRange(0, 5))
    }


def _request(data: bytes) -> tuple[dict[str, Any], bytes]:
    fdp = atheris.FuzzedDataProvider(data)
    method = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
    path = _path(fdp)
    query = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 60))
    if fdp.ConsumeBool():
        query = (
            b"workspaceId="
            + [b"ws-a", b"ws-b", b"ws-none"][fdp.ConsumeIntInRange(0, 2)]
            + (b"&" + query if query else b"")
        )
    headers: list[tuple[bytes, bytes]] = [(b"host", b"fuzz")]
    token = TOKENS[fdp.ConsumeIntInRange(0, len(TOKENS) - 1)]
    if token is not None:
        headers.append((b"authorization", token.encode()))
    if fdp.ConsumeBool():
        headers.append((b"if-match", fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 12))))
    if fdp.ConsumeBool():
        body = json.dumps(_json_value(fdp)).encode()
    else:
        body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    if fdp.ConsumeBool():
        headers.append((b"content-type", b"application/json"))
    if fdp.ConsumeBool():
        headers.append((b"content-length", str(len(body)).encode()))
    elif fdp.ConsumeBool():
        headers.append((b"content-length", fdp.ConsumeBytes(6)))
    raw_path = path.encode("utf-8", "surrogatepass")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 4016),
    }
    return scope, body


async def _call(scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, str], bytes]:
    sent = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(0)
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await APP(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], headers, content


def target(data: bytes) -> None:
    scope, body = _request(data)
    before = _log.unexpected
    status, headers, content = _loop.run_until_complete(_call(scope, body))
    where = f"{scope['method']} {scope['path']!r} -> {status}"
    if status not in STATUSES and not (status == 500 and _log.unexpected == before):
        raise AssertionError(f"unexpected answer {where}: {content[:300]!r}")
    if _log.unexpected != before:
        raise AssertionError(f"an unexpected server error was logged for {where}")
    if status in (307, 308):  # a trailing-slash redirect: no body, a Location to follow
        assert headers.get("location"), where
        return
    if status == 204 or scope["method"] == "HEAD":
        return
    if scope["path"] == "/openapi.json" and status == 200:
        return
    assert headers.get("content-type", "").startswith("application/json"), where
    answer = json.loads(content)
    if status >= 400:
        error = answer["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), where
        if status == 500:
            assert error["code"] == "internal_error" and "correlationId" in error, where


def main() -> None:
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
