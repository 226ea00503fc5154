"""Figures the reliability suites report: crash points tried, faults injected, executions...

A suite calls :func:`record` with counts; the root ``conftest.py`` prints every suite's
figures at the end of the run (section "reliability figures") and writes them as JSON to
``var/reliability-figures.json`` (or ``$FIELD_ENCRYPT_FIGURES``), so docs/reliability.md
quotes numbers a run printed, never estimates.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES: dict[str, dict[str, float]] = {}
_lock = threading.Lock()


def record(suite: str, **counts: float) -> None:
    """Add ``counts`` to ``suite``'s figures (numbers add up across calls)."""
    with _lock:
        figures = FIGURES.setdefault(suite, {})
        for name, value in counts.items():
            figures[name] = figures.get(name, 0) + value


def lines() -> list[str]:
    """One line per suite, names sorted."""
    out = []
    for suite in sorted(FIGURES):
        values = ", ".join(
            f"{k}={round(v, 3) if isinstance(v, float) and not v.is_integer() else int(v)}"
            for k, v in FIGURES[suite].items()
        )
        out.append(f"{suite}: {values}")
    return out


def write() -> Path | None:
    """Save the figures as JSON; the path written, or None when there are none."""
    if not FIGURES:
        return None
    path = Path(os.environ.get("FIELD_ENCRYPT_FIGURES", ROOT / "var" / "reliability-figures.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")
    return path
