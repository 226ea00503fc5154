"""The ``notelett`` console script: imports the CLI only once it knows the extra is there."""

from __future__ import annotations

from typing import NoReturn

from field_encrypt.cli.entry import launch


def main() -> NoReturn:
    """``notelett``: missing the ``notelett`` extra is one line naming the ``pip install``."""
    launch("notelett.cli", "app", prog="notelett", extra="notelett")
