"""What the CLI shows: a rich progress bar on a terminal, JSON log lines otherwise.

Results go to stdout (a table, or one JSON document with ``--json``); progress, log
lines and the one-line reason for a failure go to stderr. Nothing here ever receives
key material: observers get counters, ids and error class names.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from field_encrypt import tracing

if TYPE_CHECKING:  # rich is imported where used: start-up stays fast
    from rich.console import Console
    from rich.progress import TaskID
    from rich.table import Table

    from field_encrypt.rotation import Counters, RunRecord


def stdout() -> Console:
    return _console(sys.stdout)


def stderr() -> Console:
    return _console(sys.stderr)


def _console(file: IO[str]) -> Console:
    """A console on ``file``; wide when it is not a terminal, so log files keep whole lines."""
    from rich.console import Console

    width = None if file.isatty() else 160
    return Console(file=file, highlight=False, soft_wrap=True, width=width)


def logger() -> JsonLines:
    """A logger writing one JSON object per line to the current stderr."""
    return JsonLines(sys.stderr)


class JsonLines:
    """One JSON object per log line: the fields given, then ``event``, ``trace_id`` (inside
    a span), ``level`` and an ISO-8601 UTC ``timestamp``, on ``file``, flushed.

    The lines structlog's ``JSONRenderer`` wrote here before, without importing structlog
    (about 0.1 s of every ``migrate`` when stderr is not a terminal).
    """

    def __init__(self, file: IO[str]) -> None:
        self.file = file

    def info(self, event: str, **fields: object) -> None:
        self._line("info", event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._line("warning", event, fields)

    def _line(self, level: str, event: str, fields: dict[str, object]) -> None:
        import datetime as dt

        line: dict[str, Any] = {**fields, "event": event}
        trace_id = tracing.trace_id()
        if trace_id is not None:  # inside a span (only when tracing is on)
            line["trace_id"] = trace_id
        line["level"] = level
        line["timestamp"] = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        print(json.dumps(line, default=repr), file=self.file, flush=True)


def live_terminal(json_mode: bool) -> bool:
    """Whether to draw a progress bar: stderr is a terminal and ``--json`` was not given."""
    return not json_mode and sys.stderr.isatty()


class LogObserver:
    """Run events as JSON log lines (``migrate`` when not on a terminal, or ``--json``)."""

    def __init__(self) -> None:
        self.log = logger()
        self.done = 0

    def run_started(self, run: RunRecord, *, shard: int, resumed: bool) -> None:
        self.done = sum(s.counters.matched for s in run.shards)
        self.log.info(
            "run_started",
            run_id=run.run_id,
            mode=run.plan.mode,
            from_version=run.plan.from_version,
            to_version=run.plan.to_version,
            shard=f"{shard + 1}/{run.plan.shards}",
            resumed=resumed,
            estimated_total=run.estimated_total,
        )

    def batch_done(self, delta: Counters) -> None:
        self.done += delta.matched
        if delta.matched or delta.failed:
            self.log.info("batch", done=self.done, **delta.as_dict())

    def event(self, name: str, fields: Mapping[str, object]) -> None:
        level = "warning" if name in ("retry", "conflict", "stopped", "lease_reclaimed") else "info"
        getattr(self.log, level)(name, **fields)


class ProgressObserver:
    """A live progress bar with rate and ETA on stderr (``migrate`` on a terminal)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=stderr(),
            transient=False,
        )
        self.task: TaskID | None = None
        self.console = stderr()

    def __enter__(self) -> ProgressObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def run_started(self, run: RunRecord, *, shard: int, resumed: bool) -> None:
        done = sum(s.counters.matched for s in run.shards)
        total = max(run.estimated_total, done)
        label = f"{run.plan.mode} {run.plan.from_version or '*'}→{run.plan.to_version or '-'}"
        if run.plan.shards > 1:
            label += f" shard {shard + 1}/{run.plan.shards}"
        if resumed:
            label += " (resumed)"
        if self.task is None:
            self.task = self.progress.add_task(label, total=total, completed=done, rate="0")
        else:
            self.progress.update(self.task, description=label)

    def batch_done(self, delta: Counters) -> None:
        if self.task is None:
            return
        self.progress.advance(self.task, delta.matched)
        task = self.progress.tasks[0]
        self.progress.update(self.task, rate=f"{task.speed or 0:,.0f}")

    def event(self, name: str, fields: Mapping[str, object]) -> None:
        if name in (
            "retry",
            "stopped",
            "settled",
            "keks_rewrapped",
            "kek_deleted",
            "kek_kept",
            "lease_reclaimed",
        ):
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            self.progress.console.print(f"[yellow]{name}[/] {detail}")


def emit_json(data: Any, out: IO[str] | None = None) -> None:
    """One JSON document on stdout."""
    print(json.dumps(data, indent=2, default=str), file=out or sys.stdout)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*(str(c) for c in row))
    return t


def text_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain table: the title, the column names over a rule, one line per row, columns
    padded to their widest cell (``(none)`` for no rows). For commands that must start fast
    (``status``): rich's console and table cost ~50 ms of CPU to import and render."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    body = [line(row) for row in cells] or ["(none)"]
    return "\n".join([title, line(columns), line(["-" * w for w in widths]), *body])


def fail_line(message: str) -> None:
    """The one-line reason a command failed, on stderr."""
    print(f"field-encrypt: {message}", file=sys.stderr)
