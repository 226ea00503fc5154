"""The ``notelett`` command: ``serve``, ``token``, ``seed``, ``purge``, ``rebind``, and the directory's
``workspaces`` and ``members`` (:mod:`notelett.directory_cli`).

Settings come from the environment (``NOTELETT_*`` and ``FIELD_ENCRYPT_*``); with none
set everything lives under ``var/`` in the current directory.
"""

from __future__ import annotations

from typing import Annotated

import typer

import field_encrypt
from field_encrypt.cli.common import VersionOpt
from notelett.auth import mint_dev_token
from notelett.backend import open_backend
from notelett.directory_cli import members_app, workspaces_app
from notelett.log_format import LogFormat, configure_logging
from notelett.seed import seed as seed_notes
from notelett.service import NotesService
from notelett.settings import load_notelett_settings

app = typer.Typer(
    name="notelett",
    help="NoteLett: a notes API with field-level envelope encryption.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(members_app, name="members")


@app.callback()
def _root(version: VersionOpt = False) -> None:
    """NoteLett: a notes API with field-level envelope encryption."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [NOTELETT_HOST].")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port [NOTELETT_PORT, 4016].", min=1, max=65535)
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    log_format: Annotated[
        LogFormat, typer.Option(help="json: one JSON object per line; text: for a terminal.")
    ] = "json",
) -> None:
    """Serve the API with uvicorn (in the foreground)."""
    import uvicorn

    from notelett.app import create_app
    from notelett.http_server import uvicorn_options

    configure_logging(log_level, log_format)
    settings = load_notelett_settings()
    application = create_app(settings)
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_level=log_level,
        access_log=access_log,
        log_config=None,  # keep configure_logging's JSON handler
        **uvicorn_options(settings),
    )


@app.command()
def token(
    user: Annotated[str, typer.Option(help="The token's subject (a user id).")],
    workspace: Annotated[
        list[str] | None,
        typer.Option(help="Narrow the token to this workspace (repeatable)."),
    ] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.", min=1)] = 3600,
) -> None:
    """Print an HS256 development token."""
    typer.echo(
        mint_dev_token(
            load_notelett_settings(), user_id=user, workspaces=workspace, ttl_seconds=ttl
        )
    )


@app.command()
def seed(
    notes: Annotated[int, typer.Option(help="How many notes to create.", min=0)] = 200,
    workspaces: Annotated[int, typer.Option(help="How many workspaces.", min=1)] = 3,
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Create notes only if there are none yet.")
    ] = False,
    host: Annotated[str, typer.Option(help="Host for the printed curl line.")] = "127.0.0.1",
) -> None:
    """Fill a demo database; print a development token and a curl line that reads a note."""
    settings = load_notelett_settings()
    backend = open_backend(field_encrypt.load_settings(), settings)
    try:
        result = seed_notes(backend, notes=notes, workspaces=workspaces, if_empty=if_empty)
    finally:
        backend.close()
    bearer = mint_dev_token(settings, user_id=result.user, ttl_seconds=12 * 3600)
    base = f"http://{host}:{settings.port}"
    typer.echo(f"seeded {result.created} notes in workspaces {', '.join(result.workspaces)}")
    typer.echo(f"user: {result.user} (member of every seeded workspace)")
    typer.echo(f"token: {bearer}")
    if result.sample_note:
        typer.echo(
            f"curl -s -H 'Authorization: Bearer {bearer}' {base}/api/notes/{result.sample_note}"
        )
    typer.echo(
        f"curl -s -H 'Authorization: Bearer {bearer}' "
        f"'{base}/api/notes/?workspaceId={result.workspaces[0]}&limit=5'"
    )


@app.command()
def purge() -> None:
    """Finish note deletes that a crash interrupted (the server also does this at start-up)."""
    backend = open_backend(field_encrypt.load_settings(), load_notelett_settings())
    try:
        service = NotesService(
            encryptor=backend.encryptor,
            notes=backend.notes,
            directory=backend.directory,
            dek_version=backend.dek_version,
        )
        typer.echo(f"completed {service.finish_deletes()} interrupted deletes")
    finally:
        backend.close()


@app.command()
def rebind(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be re-sealed; write nothing.")
    ] = False,
) -> None:
    """Re-seal notes bound the legacy way (before fields were bound to their workspace)."""
    from notelett.binding import rebind as rebind_notes

    backend = open_backend(field_encrypt.load_settings(), load_notelett_settings())
    try:
        report = rebind_notes(backend.encryptor, backend.notes, dry_run=dry_run)
    finally:
        backend.close()
    verb = "would re-seal" if dry_run else "re-sealed"
    typer.echo(
        f"scanned {report.scanned} notes: {verb} {report.rebound}, already bound "
        f"{report.already_bound}, plaintext {report.plaintext}, failed {len(report.failed)}"
    )
    if report.failed:
        typer.echo(
            f"{len(report.failed)} notes open under neither binding (tampered, or their DEK "
            f"is gone), first: {', '.join(report.failed[:10])}; see the log for their dekIds",
            err=True,
        )
        raise typer.Exit(1)
