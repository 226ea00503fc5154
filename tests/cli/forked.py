"""Run many CLI command lines, each in a process of its own, paying for the imports once.

``python -m tests.cli.forked OUT_DIR`` reads a JSON list of ``{"program", "args", "env",
"cwd"}`` on stdin and prints a JSON list of ``{"code", "stdout", "stderr"}``. It imports
both CLIs, then forks one child per command line; the child takes the command line's
environment, working directory and argv, points file descriptors 1 and 2 at files, and
calls the console script's own entry point (``field_encrypt.cli.entry``,
``notelett.script``). So each command runs in a real process of its own, through the real
entry point and error boundary, with its own exit code and output: only the start-up
imports are shared, which makes a table of hundreds of command lines affordable.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import field_encrypt.cli.main
import notelett.cli
from field_encrypt.cli.entry import encrypt_migrate, field_encrypt
from notelett.script import main as notelett

ENTRIES: dict[str, Callable[[], object]] = {
    "field-encrypt": field_encrypt,
    "encrypt-migrate": encrypt_migrate,
    "notelett": notelett,
}
CHILD_SECONDS = 120
PARALLEL = 3


def _child(job: dict[str, Any], out: Path) -> None:
    """In the forked child: become the command line, run it, exit with its code."""
    code = 1
    try:
        signal.alarm(CHILD_SECONDS)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        for fd, suffix in ((1, "out"), (2, "err")):
            target = os.open(out.with_suffix("." + suffix), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        sys.argv = [job["program"], *job["args"]]
        ENTRIES[job["program"]]()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - printed as the interpreter would: the table looks for it
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    out_dir = Path(sys.argv[1])
    jobs = json.load(sys.stdin)
    results: list[dict[str, Any]] = [{} for _ in jobs]
    running: dict[int, int] = {}
    pending = list(enumerate(jobs))
    while pending or running:
        while pending and len(running) < PARALLEL:
            index, job = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(job, out_dir / str(index))
            running[pid] = index
        pid, status = os.wait()
        index = running.pop(pid)
        files = out_dir / str(index)
        results[index] = {
            "code": os.waitstatus_to_exitcode(status),
            "stdout": files.with_suffix(".out").read_text(errors="replace"),
            "stderr": files.with_suffix(".err").read_text(errors="replace"),
        }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
