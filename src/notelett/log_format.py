"""The service's log lines: one JSON object per line (structlog), with the request id.

Every stdlib logger (NoteLett's, the library's, uvicorn's) goes through one root handler
whose structlog ``ProcessorFormatter`` renders ``{"timestamp", "level", "logger",
"event", "request_id", ...}``. ``request_id`` is bound by
:class:`notelett.middleware.RequestIdMiddleware` for the duration of each request
(structlog's context variables, which follow the request into worker threads), so every
line logged while serving a request names it. ``text`` renders the same fields for a
terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["json", "text"]


def log_handler(fmt: LogFormat = "json", *, stream: TextIO | None = None) -> logging.Handler:
    """A handler rendering stdlib records as JSON (or text) lines with the bound context."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    return handler


def configure_logging(level: str, fmt: LogFormat = "json") -> None:
    """Send every logger's records, at ``level`` and above, to stderr as ``fmt`` lines."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(log_handler(fmt))
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
