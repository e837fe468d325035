"""Logging: structlog, one event per line; JSON, console, or straight into the journal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# syslog priorities, as the journal wants them
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2, "exception": 3}


def resolve_format(fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if os.environ.get("JOURNAL_STREAM"):
        # Started by systemd with stderr going to the journal: send structured fields instead of text.
        return "journal"
    return "console" if sys.stderr.isatty() else "json"


class JournalRenderer:
    """Sends each event to the journal with its fields as journal fields; returns nothing to print."""

    def __init__(self) -> None:
        from systemd import journal

        self._send = journal.send

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> str:
        msg = str(event.pop("event", ""))
        level = str(event.pop("level", method))
        fields = {"PRIORITY": str(_PRIORITY.get(level, 6)), "SYSLOG_IDENTIFIER": "telemetryd", "EVENT": msg}
        for k, v in event.items():
            key = "".join(c if c.isalnum() else "_" for c in str(k)).upper().lstrip("_")
            if key and key not in ("MESSAGE", "PRIORITY"):
                fields[key] = str(v)
        self._send(msg if not fields.get("DETAIL") else f"{msg}: {fields['DETAIL']}", **fields)
        raise structlog.DropEvent


def configure(fmt: str = "auto", level: str = "info") -> str:
    fmt = resolve_format(fmt)
    wanted = fmt
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "journal":
        try:
            processors.append(JournalRenderer())
        except ImportError:
            fmt = "json"
    if fmt == "json":
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    elif fmt == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    if wanted != fmt:
        # systemd-python is an extra (README.md, "Without libsystemd"); under systemd the JSON lines
        # still reach the journal through stderr, as plain messages without journal fields.
        get_logger().warning(
            "journal_logging_unavailable",
            using=fmt,
            hint="install systemd-python (pip install 'telemetryd[systemd]') for journal fields",
        )
    return fmt


def get_logger() -> Any:
    return structlog.get_logger("telemetryd")
