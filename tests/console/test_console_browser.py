"""The console in a real browser: Debian's Chromium, headless, driven by Playwright's Python API.

The page loads and shows the seeded versions and counts; a rewrap started from the CLI in
another process is followed to completion without a reload; the gate's reason shows; a
tampered audit chain (a raw SQL edit) shows as broken. Each state is screenshotted into the
test's temporary directory (its path is printed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import create_version
from tests.cli.helpers import PRODUCT, ROOT
from tests.conftest import require
from tests.support.seed import seed

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DOCUMENTS = 400
WAIT_MS = 30_000

pytestmark = pytest.mark.slow


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "field_encrypt.cli", *args]


@pytest.fixture
def console_url(env: dict[str, str], runtime: ProductRuntime, tmp_path: Path) -> Iterator[str]:
    """``field-encrypt console --port 0`` in its own process, on the seeded sample product."""
    seed(runtime, DOCUMENTS)
    create_version(runtime)  # recorded in the audit trail, as keys create does
    log = tmp_path / "console.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            _command("console", "--product", PRODUCT, "--port", "0"),
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"on (http://127\.0\.0\.1:\d+/)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 130, log.read_text()  # stopped by Ctrl-C (SIGINT)
    assert "Traceback" not in log.read_text()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), never a browser Playwright would download."""
    require(
        shutil.which("chromium") is not None,
        "needs Debian's chromium (scripts/install-system-deps)",
    )
    require(importlib.util.find_spec("playwright") is not None, "needs playwright (the dev extra)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def test_the_console_follows_a_rewrap_and_shows_the_gate_and_a_broken_chain(
    env: dict[str, str], console_url: str, browser: Any, tmp_path: Path
) -> None:
    """Seeded counts, a CLI rewrap followed live to completion (no reload), the gate's
    reason, a filter, keyboard focus, and a tampered chain shown broken."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(console_url)

    # 1. Loaded: the seeded versions and their counts, the chart, the gate's reason.
    v1 = page.locator('#versions-table tr[data-version="1"]')
    v1.locator("td.num", has_text=str(DOCUMENTS)).wait_for(timeout=WAIT_MS)
    assert "enabled" in v1.inner_text()
    assert "current" in page.locator('#versions-table tr[data-version="2"]').inner_text()
    assert page.locator("#versions-chart svg g.bar").count() == 2
    gate = page.locator('#gate-list article[data-version="1"] .reason')
    gate.filter(has_text=f"{DOCUMENTS} DEKs still wrapped under it").wait_for(timeout=WAIT_MS)
    page.evaluate("window.__sameDocument = 'yes'")
    page.keyboard.press("Tab")  # the keyboard reaches the skip link first
    assert page.evaluate("document.activeElement.className") == "skip"
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(shots / "1-loaded.png"), full_page=True)

    # 2. A rewrap from the CLI, in another process, followed without a reload.
    with (tmp_path / "migrate.log").open("w") as out:
        migrate = subprocess.Popen(
            _command("migrate", "--product", PRODUCT, "--mode", "rewrap-deks",
                     "--batch-size", "20", "--max-rps", "80"),
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        page.locator('#runs-table tr[data-state="in flight"]').wait_for(timeout=WAIT_MS)
        row = page.locator('#runs-table tr[data-state="in flight"]')
        partway = re.compile(rf"^(?!{DOCUMENTS} )[1-9][0-9]* / {DOCUMENTS}$")
        row.locator("span.count", has_text=partway).wait_for(timeout=WAIT_MS)  # some progress
        assert "rewrap-deks" in row.inner_text() and "lease held by" in row.inner_text()
        page.screenshot(path=str(shots / "2-rewrap-in-flight.png"), full_page=True)
        done = page.locator('#runs-table tr[data-state="completed"]')
        done.wait_for(timeout=WAIT_MS * 2)
    finally:
        assert migrate.wait(timeout=120) == 0, (tmp_path / "migrate.log").read_text()
    assert f"{DOCUMENTS} / {DOCUMENTS}" in done.inner_text()
    v1.locator("td.num", has_text=re.compile(r"^0$")).wait_for(timeout=WAIT_MS)
    assert page.evaluate("window.__sameDocument") == "yes"  # never reloaded

    # 3. The gate now waits for the soak only; its reason says so in words and numbers.
    gate.filter(has_text="h of soak left", has_not_text="DEKs still").wait_for(timeout=WAIT_MS)
    assert "cannot be retired yet: 24.0 h of soak left" in gate.inner_text()
    facts = page.locator('#gate-list article[data-version="1"] dl').inner_text()
    assert re.search(r"DEKs left\s+0", facts) and "until" in facts
    page.screenshot(path=str(shots / "3-rewrap-completed.png"), full_page=True)

    # 4. The audit filter, then a tampered chain shown broken.
    page.select_option("#audit-type", "run.completed")
    page.locator("#audit-table tbody tr td", has_text="run.completed").first.wait_for()
    types = page.locator("#audit-table tbody td:nth-child(3)")
    deadline = time.monotonic() + WAIT_MS / 1000
    while set(types.all_inner_texts()) != {"run.completed"}:  # the filter redraws the table
        assert time.monotonic() < deadline, types.all_inner_texts()
        page.wait_for_timeout(100)
    chain = page.locator("#chain")
    assert chain.get_attribute("data-intact") == "true" and "Chain intact" in chain.inner_text()
    db = sqlite3.connect(env["FIELD_ENCRYPT_DATABASE"], isolation_level=None)
    (text,) = db.execute("SELECT event FROM actiontrail WHERE seq = 1").fetchone()
    event = json.loads(text)
    event["data"]["forged"] = True  # an edit made behind the trail's back
    db.execute("UPDATE actiontrail SET event = ? WHERE seq = 1", (json.dumps(event),))
    db.close()
    page.locator('#chain[data-intact="false"]').wait_for(timeout=WAIT_MS)
    assert "Chain BROKEN at event 1" in chain.inner_text()
    page.screenshot(path=str(shots / "4-chain-broken.png"), full_page=True)

    assert page.evaluate("window.__sameDocument") == "yes"
    assert errors == []
    print(page.inner_text("body"))  # the secret scan reads what the page showed
    print(f"console screenshots in {shots}")
