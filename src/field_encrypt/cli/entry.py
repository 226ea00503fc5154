"""The console scripts' entry points: they import nothing a plain install lacks.

``pip install field-encrypt`` (no extras) still installs the ``field-encrypt``,
``encrypt-migrate`` and ``notelett`` scripts; without the ``cli`` (or ``notelett``) extra
their frameworks are missing. :func:`launch` imports the CLI only when called and turns a
missing third-party module into one line naming the ``pip install`` to run (exit 3).
"""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

OWN_PACKAGES = ("field_encrypt", "notelett")
CONFIG_EXIT = 3  # ExitCode.CONFIG, not imported: exit_codes needs the CLI's dependencies


def launch(
    module: str, attribute: str, *, prog: str, extra: str, prefix: str | None = None
) -> NoReturn:
    """Run the typer app ``module:attribute`` as ``prog`` through the error boundary."""
    try:
        app = getattr(importlib.import_module(module), attribute)
        from field_encrypt.cli.boundary import run
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing in OWN_PACKAGES:
            raise
        print(
            f"{prefix or prog}: needs the {extra!r} extra (module {missing!r} is not installed): "
            f"pip install 'field-encrypt[{extra}]'",
            file=sys.stderr,
        )
        sys.exit(CONFIG_EXIT)
    run(app, prog=prog, prefix=prefix)


def field_encrypt() -> NoReturn:
    """``field-encrypt``."""
    launch("field_encrypt.cli.main", "app", prog="field-encrypt", extra="cli")


def encrypt_migrate() -> NoReturn:
    """``encrypt-migrate``."""
    launch(
        "field_encrypt.cli.main",
        "encrypt_migrate_app",
        prog="encrypt-migrate",
        extra="cli",
        prefix="field-encrypt",
    )
