"""Reading NoteLett's notes over HTTP while a rotation runs, and after it.

Shared by the rotation suites that keep live ``notelett serve`` processes busy during the
runbook (``tests/service/test_rotation.py``, ``tests/integration/test_runbook_stacks.py``):
wait until a process wraps under a new MEK version, a reader (and optional writer) thread,
and reading every note back one by one and through the listings.
"""

from __future__ import annotations

import threading
import time

import httpx

from tests.service.conftest import auth

USER = "carol"
"""Member of both workspaces (``tests/service/conftest.py``): reads every note."""


def wait_for_version(base_url: str, version: str, *, timeout: float = 30.0) -> None:
    """Runbook step 2: poll readiness until the running process canaries under ``version``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        checks = httpx.get(base_url + "/api/diagnostics/readiness").json()["checks"]
        check = next(c for c in checks if c["name"] == "key_provider")
        if check["status"] == "ok" and check["detail"].endswith(f"version {version}"):
            return
        time.sleep(0.05)  # polling another process's state
    raise AssertionError(f"the service never picked up MEK version {version}")


class NoteTraffic(threading.Thread):
    """Reads every note of ``expected`` in a loop until stopped, and, with ``write_to``, writes
    one new note to that workspace each round (kept in ``written``); every failure is kept."""

    def __init__(
        self, base_url: str, expected: dict[str, str], *, write_to: str | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.base_url, self.expected, self.write_to = base_url, dict(expected), write_to
        self.written: dict[str, str] = {}
        self.stop = threading.Event()
        self.reads = 0
        self.failures: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=auth(USER), timeout=30) as http:
            while not self.stop.is_set():
                for note_id, title in self.expected.items():
                    got = http.get(f"/api/notes/{note_id}")
                    self.reads += 1
                    answer = got.json() if got.status_code == 200 else {}
                    if (answer.get("title"), answer.get("body")) != (title, title):
                        self.failures.append(f"{note_id}: {got.status_code} {got.text[:200]}")
                if self.write_to is not None:
                    self._write(http, self.write_to)

    def _write(self, http: httpx.Client, workspace: str) -> None:
        title = f"during #{len(self.written)}"
        created = http.post(
            "/api/notes", json={"workspaceId": workspace, "title": title, "body": title}
        )
        if created.status_code != 201:
            self.failures.append(f"create: {created.status_code} {created.text[:200]}")
        else:
            self.written[created.json()["id"]] = title

    def finish(self, *, timeout: float = 60.0) -> None:
        """Stop the loop and wait for the thread."""
        self.stop.set()
        self.join(timeout=timeout)


def read_each(base_url: str, expected: dict[str, str]) -> None:
    """Every note of ``expected`` reads back, one by one, with its title as title and body
    (what these suites write)."""
    with httpx.Client(base_url=base_url, headers=auth(USER), timeout=30) as http:
        for note_id, title in expected.items():
            got = http.get(f"/api/notes/{note_id}")
            assert got.status_code == 200, (note_id, got.text)
            assert (got.json()["title"], got.json()["body"]) == (title, title), got.text


def read_all(base_url: str, expected: dict[str, str]) -> None:
    """Every note one by one, and the listings of both workspaces (all their pages) hold
    exactly ``expected``."""
    read_each(base_url, expected)
    listed: dict[str, str] = {}
    with httpx.Client(base_url=base_url, headers=auth(USER), timeout=30) as http:
        for workspace in ("ws-a", "ws-b"):
            cursor = None
            while True:
                params = {"workspaceId": workspace, "limit": 100}
                if cursor:
                    params["cursor"] = cursor
                page = http.get("/api/notes/", params=params)
                assert page.status_code == 200, page.text
                assert page.json()["errors"] == [], page.text
                listed.update((n["id"], n["title"]) for n in page.json()["items"])
                cursor = page.json().get("nextCursor")
                if not cursor:
                    break
    assert listed == expected
