"""Run the ``field-encrypt`` CLI as real processes, cheaply, for the kill -9 suites.

A process that imports the CLI costs half a second before it does anything; the crash
suites start hundreds. So the processes are forked from a multiprocessing *forkserver*
that has imported the CLI and the sample product once: each one is still a separate OS
process with its own memory, database connections and environment, running the same
entry point as ``field-encrypt ARGS``, and SIGKILL ends it as it would end the real
command. Its stdout and stderr are captured to files.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_context: Any = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(
    ["field_encrypt.cli.main", "tests.support.sample_product", "tests.reliability.processes"]
)


@dataclass(frozen=True, slots=True)
class Finished:
    """How a CLI process ended: its exit code (negative: killed by that signal) and output."""

    returncode: int
    stdout: str
    stderr: str


def _child(argv: list[str], environ: dict[str, str], out: str, err: str) -> None:
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(ROOT)
    from field_encrypt.cli.main import app

    code: Any = 0
    try:
        app(args=argv, prog_name="field-encrypt")
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


def _call_child(target: str, args: tuple[Any, ...], environ: dict[str, str], err: str) -> None:
    fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(ROOT)
    import importlib

    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(*args)
    sys.stderr.flush()
    os._exit(0)


def call(target: str, *args: Any, env: dict[str, str], timeout: float = 120.0) -> Finished:
    """``module:function(*args)`` in its own process with ``env`` added (for a library call
    no CLI command makes, killed as a command would be); how it ended (no stdout)."""
    workdir = Path(tempfile.mkdtemp(prefix="fe-call-"))
    (workdir / "stdout").touch()
    process = _context.Process(
        target=_call_child,
        args=(target, args, {**os.environ, **env}, str(workdir / "stderr")),
    )
    process.start()
    return finish(process, workdir, timeout)


def start(*argv: str, env: dict[str, str]) -> tuple[Any, Path]:
    """Start ``field-encrypt ARGV`` with ``env`` added to this environment; (process, dir)."""
    workdir = Path(tempfile.mkdtemp(prefix="fe-cli-"))
    process = _context.Process(
        target=_child,
        args=(
            list(argv),
            {**os.environ, **env},
            str(workdir / "stdout"),
            str(workdir / "stderr"),
        ),
    )
    process.start()
    return process, workdir


def finish(process: Any, workdir: Path, timeout: float = 120.0) -> Finished:
    """Wait for a process from :func:`start`; its exit code and output."""
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
        raise AssertionError(f"field-encrypt did not finish within {timeout}s")
    result = Finished(
        returncode=process.exitcode,
        stdout=(workdir / "stdout").read_text(errors="replace"),
        stderr=(workdir / "stderr").read_text(errors="replace"),
    )
    for name in ("stdout", "stderr"):
        (workdir / name).unlink()
    workdir.rmdir()
    return result


def run(*argv: str, env: dict[str, str], timeout: float = 120.0) -> Finished:
    """``field-encrypt ARGV`` to the end (or its death)."""
    process, workdir = start(*argv, env=env)
    return finish(process, workdir, timeout)
