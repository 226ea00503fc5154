"""docs/cli.md documents every command, flag and exit code the CLI has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.cli.main import app

DOCS = Path(__file__).resolve().parents[2] / "docs"


def commands() -> Iterator[tuple[str, Any]]:
    """Every leaf command as ``("keys disable", command)``."""

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return walk(typer.main.get_command(app), [])


def test_every_command_and_flag_is_in_cli_md() -> None:
    """Each command has its own heading, and each of its flags appears in the document."""
    text = (DOCS / "cli.md").read_text()
    headings = set(re.findall(r"^## `([^`]+)`", text, flags=re.M))
    found = dict(commands())
    assert set(found) == headings
    for name, cmd in found.items():
        section = text.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        for param in cmd.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in section, f"{opt} of {name} is not documented"


def test_every_exit_code_is_in_cli_md() -> None:
    """The exit-code table lists each code with its name."""
    text = (DOCS / "cli.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\| {code.value} \| `{code.name}` \|", text, flags=re.M), code


def test_every_audit_event_type_is_in_audit_md() -> None:
    """docs/audit.md has a row for each event type, by its short name."""
    from field_encrypt.audit import EVENT_TYPES, TYPE_PREFIX

    text = (DOCS / "audit.md").read_text()
    for event_type in EVENT_TYPES:
        short = event_type.removeprefix(TYPE_PREFIX)
        assert re.search(rf"^\| `{re.escape(short)}` \|", text, flags=re.M), short
