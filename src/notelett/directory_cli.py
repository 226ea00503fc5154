"""``notelett workspaces create|list`` and ``notelett members add|remove|list``.

They write the same directory the service reads on every request, so adding a member
grants access, and removing one revokes it, from that member's next request on (tokens
already issued included: membership is checked per request, not baked into tokens).
Exit codes: 0 done; 1 no such workspace, or not a member; 2 bad settings or usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

import field_encrypt
from notelett.backend import open_backend
from notelett.repositories.base import WorkspaceDirectory
from notelett.settings import load_notelett_settings

workspaces_app = typer.Typer(help="Create and list workspaces.", no_args_is_help=True)
members_app = typer.Typer(help="Add, remove and list a workspace's members.", no_args_is_help=True)

WorkspaceArg = Annotated[str, typer.Argument(help="The workspace id.")]
UserArg = Annotated[str, typer.Argument(help="The user id (a token's `sub`).")]


@contextmanager
def _directory() -> Iterator[WorkspaceDirectory]:
    try:
        backend = open_backend(field_encrypt.load_settings(), load_notelett_settings())
    except field_encrypt.ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        yield backend.directory
    finally:
        backend.close()


def _require_workspace(directory: WorkspaceDirectory, workspace_id: str) -> None:
    if not any(w.id == workspace_id for w in directory.list_workspaces()):
        typer.echo(
            f"no workspace {workspace_id!r}: create it with `notelett workspaces create`",
            err=True,
        )
        raise typer.Exit(1)


@workspaces_app.command("create")
def create_workspace(
    workspace: WorkspaceArg,
    name: Annotated[str | None, typer.Option(help="Display name (default: the id).")] = None,
) -> None:
    """Create a workspace (nothing changes if it exists)."""
    with _directory() as directory:
        directory.add_workspace(workspace, name=name or workspace)
    typer.echo(f"workspace {workspace}")


@workspaces_app.command("list")
def list_workspaces() -> None:
    """Print every workspace: id, a tab, its name."""
    with _directory() as directory:
        for workspace in directory.list_workspaces():
            typer.echo(f"{workspace.id}\t{workspace.name}")


@members_app.command("add")
def add_member(
    user: UserArg,
    workspace: WorkspaceArg,
    name: Annotated[str | None, typer.Option(help="The user's display name if new.")] = None,
) -> None:
    """Let a user into a workspace (the user is created if new)."""
    with _directory() as directory:
        _require_workspace(directory, workspace)
        directory.add_user(user, name=name or user)
        directory.add_member(user, workspace)
    typer.echo(f"{user} is a member of {workspace}")


@members_app.command("remove")
def remove_member(user: UserArg, workspace: WorkspaceArg) -> None:
    """Take a user out of a workspace: access ends with the user's next request."""
    with _directory() as directory:
        removed = directory.remove_member(user, workspace)
    if not removed:
        typer.echo(f"{user} is not a member of {workspace}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{user} removed from {workspace}")


@members_app.command("list")
def list_members(workspace: WorkspaceArg) -> None:
    """Print a workspace's members' user ids, one a line."""
    with _directory() as directory:
        _require_workspace(directory, workspace)
        for user in directory.list_members(workspace):
            typer.echo(user)
