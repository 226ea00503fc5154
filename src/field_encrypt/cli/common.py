"""What every command module of the CLI shares: options, error handling, opening a product."""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

from field_encrypt.cli import output
from field_encrypt.cli.boundary import explain, version_callback
from field_encrypt.errors import ConfigurationError, FieldEncryptError

if TYPE_CHECKING:
    from field_encrypt.products import ProductRuntime

P = ParamSpec("P")
R = TypeVar("R")

ProductOpt = Annotated[
    str,
    typer.Option(
        "--product",
        help="The product: an installed name (notelett) or module:attribute.",
        envvar="FIELD_ENCRYPT_PRODUCT",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="JSON on stdout (and JSON log lines on stderr).")
]
VersionOpt = Annotated[
    bool,
    typer.Option(
        "--version",
        help="Print the installed version and exit.",
        is_eager=True,
        callback=version_callback,
    ),
]
MaxRpsOpt = Annotated[
    float | None,
    typer.Option("--max-rps", min=0.001, help="Provider calls per second at most."),
]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", min=1, help="Items per batch and per DB write.")
]
GateSampleOpt = Annotated[
    int, typer.Option("--sample", min=0, help="Documents the gate decrypts without the version.")
]
NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now",
        hidden=True,
        help="Tests and rehearsals: act as if it were this time (ISO 8601 or epoch seconds).",
    ),
]


def writable_output(path: Path | None) -> Path | None:
    """A flag's output file: checked before any work starts, so a run never fails at its end."""
    if path is None:
        return None
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a directory: name a file in it")
    if path.is_symlink() and not path.exists():
        raise typer.BadParameter(f"{path} is a symlink to nothing: name a regular file")
    parent = path.parent
    if not parent.is_dir():
        raise typer.BadParameter(
            f"the directory {parent} does not exist (or is not a directory): create it first"
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise typer.BadParameter(f"{path} is not writable by this user: choose another place")
    return path


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a library error into its exit code and a one-line reason on stderr."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except FieldEncryptError as exc:
            message, code = explain(exc)
            output.fail_line(message)
            raise typer.Exit(code) from None

    return run


@contextmanager
def opened(
    product_name: str, *, create: bool = False, watch: bool = False
) -> Iterator[ProductRuntime]:
    """The product's runtime from the environment's settings, closed afterwards.

    Nothing is created (no SQLite file, directory or keyring) unless ``create``: only
    ``field-encrypt init`` creates; every other command names what is missing. Only a
    long-running command passes ``watch`` (the scheduled ``rotate``): its runtime watches
    the key-state epoch on a thread (``field_encrypt.key_epoch``); a one-shot command
    starts none.
    """
    from field_encrypt.config import load_settings  # pydantic-settings: only when opening
    from field_encrypt.products import load_product

    product = load_product(product_name)
    try:
        runtime = product.open(load_settings(create_missing=create))
    except ConfigurationError as exc:  # make the library's hint a command to paste
        hint = str(exc).replace("--product PRODUCT", f"--product {product_name}")
        raise ConfigurationError(hint) from None
    if watch:
        from field_encrypt.runtime import start_background

        start_background(runtime, watch=True)  # closes the runtime if it fails
    try:
        yield runtime
    finally:
        runtime.close()


def iso(value: dt.datetime | float | str | None) -> str:
    """A time for a table cell: ISO 8601 to the second, ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float | int):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    return value.isoformat(timespec="seconds")


def parse_time(value: str, flag: str) -> dt.datetime:
    """An ISO 8601 time (UTC when it names no zone) or epoch seconds, for a flag."""
    try:
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{flag}: expected an ISO 8601 time, not {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def clock_from(now: str | None) -> tuple[Callable[[], float], bool]:
    """The wall clock, or (hidden ``--now``) one that starts at ``now`` and keeps moving."""
    if now is None:
        return time.time, False
    start = parse_time(now, "--now").timestamp()
    began = time.monotonic()
    return (lambda: start + (time.monotonic() - began)), True
