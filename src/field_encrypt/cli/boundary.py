"""The one error boundary of the CLIs: however a command ends, one line and an exit code.

``field-encrypt``, ``encrypt-migrate`` and ``notelett`` run their typer app through
:func:`run`, which runs it with click's standalone mode off and turns each way a
command can end into one line on stderr (``PROG: what is wrong; what to do``) and the
exit code of ``docs/cli.md``::

    FieldEncryptError (the library's tree)   exit_codes.exit_code_for (3 config, 6, 7...)
    click usage error (flag, value, path)    2, click's message and where the help is
    OSError that names a file                3, the path and the system's reason
    other OSError (a broken pipe aside)      7, the system's reason
    KeyboardInterrupt                        130
    anything else: a bug                     1, its class and where it was raised

No traceback is printed unless ``FIELD_ENCRYPT_TRACEBACK=1`` asks for one (for a bug
report); the message of an unexpected exception is left out too, since it is not ours to
vouch for (it could quote data).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import typer

from field_encrypt.cli.exit_codes import ExitCode, exit_code_for
from field_encrypt.cli.metavars import tidy_help
from field_encrypt.errors import FieldEncryptError, KeyProviderError, StoreError
from field_encrypt.rotation import RetryBudgetExhausted

TRACEBACK_VARIABLE = "FIELD_ENCRYPT_TRACEBACK"


EXTRA_OF = {
    "rich": "cli",
    "structlog": "cli",
    "typer": "cli",
    "fastapi": "notelett",
    "jwt": "notelett",
    "uvicorn": "notelett",
    "starlette": "console",
    "prometheus_client": "metrics",
    "opentelemetry": "otel",
    "sqlalchemy": "postgres",
    "psycopg": "postgres",
    "azure": "akv",
    "boto3": "aws-kms",
    "botocore": "aws-kms",
    "pkcs11": "pkcs11",
}
"""The extra that brings each optional top-level module (azure: akv or cosmos both do)."""


def run(
    app: typer.Typer, *, prog: str, prefix: str | None = None, args: list[str] | None = None
) -> NoReturn:
    """Run ``app`` as the program ``prog`` and exit with the code its outcome calls for.

    Failure lines start with ``prefix:`` (default ``prog``; ``encrypt-migrate`` says
    ``field-encrypt:``, as its commands' own lines do).
    """
    command = tidy_help(typer.main.get_command(app))
    sys.exit(outcome(command, prog=prog, prefix=prefix or prog, args=args))


def outcome(command: Any, *, prog: str, prefix: str, args: list[str] | None = None) -> int:
    """Run the click ``command``; the exit code, after one line on stderr for any failure."""
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except typer.TyperException as exc:  # click's errors: usage, a bad value or path
        if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments: the help was shown
            return ExitCode.USAGE
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return fail(prefix, exc.format_message() + where, ExitCode.USAGE)
    except typer.Abort:
        return fail(prefix, "aborted", ExitCode.INTERNAL)
    except FieldEncryptError as exc:
        return fail(prefix, *explain(exc))
    except KeyboardInterrupt:
        return fail(prefix, "interrupted", 130)
    except ModuleNotFoundError as exc:  # a command's lazily imported dependency
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing in ("field_encrypt", "notelett"):
            return _bug(prefix, exc)
        extra = EXTRA_OF.get(missing, "all")
        return fail(
            prefix,
            f"needs the {extra!r} extra (module {missing!r} is not installed): "
            f"pip install 'field-encrypt[{extra}]'",
            ExitCode.CONFIG,
        )
    except OSError as exc:
        return _os_error(prefix, exc)
    except Exception as exc:  # noqa: BLE001 - the top of the stack: a bug, named in one line
        return _bug(prefix, exc)
    return result if isinstance(result, int) else ExitCode.OK


def fail(prog: str, message: str, code: int) -> int:
    """Print ``PROG: message`` as one line on stderr; ``code``."""
    one_line = " ".join(message.split())
    print(f"{prog}: {one_line}", file=sys.stderr)
    return code


def explain(exc: FieldEncryptError) -> tuple[str, int]:
    """The line and exit code for a library error that ended a command.

    A provider or database that did not answer gets what to do after what failed.
    """
    code = exit_code_for(exc)
    message = str(exc)
    if isinstance(exc, StoreError | KeyProviderError | RetryBudgetExhausted) and code == (
        ExitCode.UNAVAILABLE
    ):
        message += (
            ": check that it is running and reachable with the configured settings "
            "(FIELD_ENCRYPT_DATABASE, the key provider's), then run the same command again"
        )
    return message, code


def _os_error(prog: str, exc: OSError) -> int:
    if exc.errno == errno.EPIPE:  # stdout closed early (`| head`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.INTERNAL
    reason = exc.strerror or type(exc).__name__
    if exc.filename is not None:
        path = Path(os.fsdecode(exc.filename))
        return fail(
            prog,
            f"{path}: {reason} (check that the path exists and this user may use it)",
            ExitCode.CONFIG,
        )
    return fail(prog, f"unavailable: {reason}", ExitCode.UNAVAILABLE)


def _bug(prog: str, exc: BaseException) -> int:
    if os.environ.get(TRACEBACK_VARIABLE) == "1":
        traceback.print_exception(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return fail(
        prog,
        f"internal error (a bug): {type(exc).__name__}{where}; please report it, with the "
        f"output of the same command run with {TRACEBACK_VARIABLE}=1",
        ExitCode.INTERNAL,
    )


def version_callback(value: bool) -> bool:
    """``--version``: print the installed version and exit 0."""
    if value:
        from field_encrypt import __version__

        typer.echo(f"field-encrypt {__version__}")
        raise typer.Exit(ExitCode.OK)
    return value
