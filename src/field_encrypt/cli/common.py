"""What every command module of the CLI shares: options, error handling, opening a product."""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

from field_encrypt.cli import output
from field_encrypt.cli.exit_codes import exit_code_for
from field_encrypt.errors import FieldEncryptError

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
NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now",
        hidden=True,
        help="Tests and rehearsals: act as if it were this time (ISO 8601 or epoch seconds).",
    ),
]


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a library error into its exit code and a one-line reason on stderr."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except FieldEncryptError as exc:
            output.fail_line(str(exc))
            raise typer.Exit(exit_code_for(exc)) from None

    return run


@contextmanager
def opened(product_name: str) -> Iterator[ProductRuntime]:
    """The product's runtime from the environment's settings, closed afterwards."""
    from field_encrypt.config import load_settings  # pydantic-settings: only when opening
    from field_encrypt.products import load_product

    product = load_product(product_name)
    runtime = product.open(load_settings())
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
