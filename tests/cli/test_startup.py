"""What ``field-encrypt`` imports to start: only what the command needs (start-up time).

Timing is a benchmark's job (bench/cli_startup.py); these tests pin the imports that made
start-up slow, so a module-level import added somewhere cannot bring them back unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import ROOT

NEVER_AT_START = ("sqlalchemy", "psycopg", "azure", "boto3", "botocore", "pkcs11", "fastapi")


def _probed(args: list[str], env: dict[str, str], *, before: str = "", after: str) -> Any:
    """Run ``field-encrypt ARGS`` in a fresh interpreter: ``before`` runs first, then the
    command (which must succeed); what ``after``, a JSON-able expression, then says."""
    code = (
        f"import json, sys\n{before}"
        f"sys.argv = ['field-encrypt', *{args!r}]\n"
        "from field_encrypt.cli.entry import field_encrypt as main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"print(json.dumps({after}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def _modules_after(args: list[str], env: dict[str, str]) -> set[str]:
    """The top-level packages loaded by ``field-encrypt ARGS`` (and the engine's, the
    backends', urllib's and http's modules by name)."""
    loaded = _probed(
        args,
        env,
        after="sorted({m.split('.')[0] for m in sys.modules} | {m for m in sys.modules "
        "if m.startswith(('field_encrypt.rotation.', 'field_encrypt.backends.', 'urllib.', "
        "'http.'))})",
    )
    return set(loaded)


def test_help_imports_no_sdk_database_driver_or_settings() -> None:
    """``field-encrypt --help`` loads no SDK, no SQL toolkit, no pydantic, rich or structlog."""
    loaded = _modules_after(["--help"], {})
    assert "typer" in loaded  # the probe saw the CLI run
    heavy = {*NEVER_AT_START, "pydantic", "pydantic_settings", "rich", "structlog", "cryptography"}
    assert loaded & heavy == set()


def test_status_on_sqlite_loads_neither_the_engine_nor_the_web_stack(env: dict[str, str]) -> None:
    """``status`` on SQLite with the local keyring loads no SDK, FastAPI, JWT, structlog,
    prometheus-client (its provider calls are counted only if something reads them),
    pydantic-settings, rich or HTTP client, and of the rotation engine only the ledger."""
    _modules_after(["init", "--product", "notelett"], env)  # status creates nothing
    loaded = _modules_after(["status", "--product", "notelett"], env)  # its table, not --json
    assert "field_encrypt.backends.sqlite.ledger" in loaded  # the probe saw status run
    assert loaded & {*NEVER_AT_START, "jwt", "starlette", "structlog", "prometheus_client"} == set()
    # the settings are read without pydantic-settings (and the asyncio and dotenv it imports),
    # the table is printed without rich, the audit trail sends nothing (no urllib.request),
    # and the runs' report needs none of the key-version commands
    assert loaded & {"pydantic_settings", "asyncio", "dotenv", "rich"} == set()
    assert {"urllib.request", "http.client", "field_encrypt.rotation.keys"} & loaded == set()
    engine = {"migrate", "run", "rewrap", "reencrypt", "docwalk", "compromise", "schedule"}
    engine.add("ratelimit")  # the lazy rewrapper's, loaded only with FIELD_ENCRYPT_LAZY_REWRAP
    assert {f"field_encrypt.rotation.{m}" for m in engine} & loaded == set()


def test_status_scans_no_entry_points_nor_loads_the_notes_service(env: dict[str, str]) -> None:
    """``status`` reads no installed distribution's entry points: the settings models are
    built without pydantic plugins (whose first use scans every distribution for them) and
    the product is a built-in one; nor does it load the notes service, the audit trail's
    delivery or the rotation lifecycle (its stages), which it does not use."""
    _modules_after(["init", "--product", "notelett"], env)
    before = (
        "import importlib.metadata\n"
        "scans = []\n"
        "original_entry_points = importlib.metadata.entry_points\n"
        "def entry_points(**selection):\n"
        "    scans.append(sorted(selection.items()))\n"
        "    return original_entry_points(**selection)\n"
        "importlib.metadata.entry_points = entry_points\n"
    )
    after = (
        "{'scans': scans, 'loaded': sorted(m for m in sys.modules if m.startswith("
        "('notelett.', 'field_encrypt.audit', 'field_encrypt.backends.sql', "
        "'field_encrypt.rotation.')))}"
    )
    seen = _probed(["status", "--product", "notelett"], env, before=before, after=after)
    assert "field_encrypt.backends.sql.ledger" in seen["loaded"]  # the probe saw status run
    assert seen["scans"] == []
    unused = {
        "notelett.service",
        "field_encrypt.audit_delivery",
        "field_encrypt.rotation.lifecycle",
    }
    assert unused & set(seen["loaded"]) == set()


def _threads_started(args: list[str], env: dict[str, str]) -> list[str]:
    """The names of the threads ``field-encrypt ARGS`` started."""
    before = (
        "import threading\n"
        "started = []\n"
        "original = threading.Thread.start\n"
        "def start(self):\n"
        "    started.append(self.name)\n"
        "    original(self)\n"
        "threading.Thread.start = start\n"
    )
    return list(_probed(args, env, before=before, after="started"))


WATCHER = "field-encrypt-key-epoch-"


def test_one_shot_commands_start_no_key_state_watcher(env: dict[str, str]) -> None:
    """``keys list``, ``status`` and ``rotate --status`` read and exit: none starts the
    key-state watcher's polling thread (it keeps a DEK cache fresh, and a one-shot command
    has none worth keeping); the scheduled ``rotate``, which runs for hours, does start it
    (which also shows the probe sees the thread)."""
    _threads_started(["init", "--product", "notelett"], env)
    for args in (["keys", "list"], ["status"], ["rotate", "--status"]):
        started = _threads_started([*args, "--product", "notelett"], env)
        assert [n for n in started if n.startswith(WATCHER)] == [], args
    rotating = _threads_started(["rotate", "--product", "notelett"], env)
    assert f"{WATCHER}notelett" in rotating


def test_built_in_products_are_the_distributions_entry_points() -> None:
    """The products found without scanning entry points (``BUILT_IN``) are exactly the ones
    this distribution registers, with the same targets, so the two cannot drift apart."""
    from importlib.metadata import entry_points

    from field_encrypt.products import BUILT_IN, ENTRY_POINT_GROUP

    registered = {
        ep.name: ep.value
        for ep in entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.dist.name == "field-encrypt"
    }
    assert registered == BUILT_IN


def test_a_third_party_product_is_still_found_by_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A product another package registers under ``field_encrypt.products`` loads by name;
    an unknown name lists the installed products, the built-in one among them."""
    (tmp_path / "acme_product.py").write_text(
        "from field_encrypt.products import Product\n"
        "product = Product(name='acme', collections={'orders': ['card']}, open=print)\n"
    )
    info = tmp_path / "acme_product-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-product\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[field_encrypt.products]\nacme = acme_product:product\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    from field_encrypt.errors import ConfigurationError
    from field_encrypt.products import load_product

    assert load_product("acme").collections == {"orders": ["card"]}
    assert load_product("notelett").name == "notelett"
    with pytest.raises(ConfigurationError, match=r"unknown product 'nosuch'") as refused:
        load_product("nosuch")
    listed = str(refused.value).partition("installed products: ")[2].split(", ")
    assert {"acme", "notelett"} <= set(listed)
