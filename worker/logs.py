"""Logging for the command line: ``--log-level`` and ``--log-format text|json`` (one JSON object
a line, as the S3 trigger writes its decisions), and where progress lines go."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

LEVELS = ("debug", "info", "warning", "error")


class JsonFormatter(logging.Formatter):
    """``{"t": ISO time, "level", "logger", "msg"}`` (+ ``"exc"``), one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        rec = {"t": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            rec["exc"] = self.formatException(record.exc_info)
        return json.dumps(rec)


def add_log_args(p, level: str = "warning") -> None:
    """``--log-level`` and ``--log-format`` (presentation only: they never change an item's id)."""
    g = p.add_argument_group("logging")
    g.add_argument("--log-level", choices=LEVELS, help=f"least severe messages shown (default: {level})")
    g.add_argument("--log-format", choices=("text", "json"),
                   help="text (default), or json: one JSON object a line on stderr, progress included")
    p.set_defaults(default_log_level=level)


def setup_logging_from(args) -> None:
    """:func:`setup_logging` from parsed :func:`add_log_args` options; an embedding program (or
    a test harness) that configured logging keeps its handlers unless an option was given."""
    level, fmt = args.log_level or args.default_log_level, args.log_format or "text"
    setup_logging(level, fmt, force=bool(args.log_level or args.log_format))


def setup_logging(level: str = "warning", fmt: str = "text", stream=None, force: bool = True) -> None:
    """Configure the root logger for a command-line run; ``json`` also turns progress lines into
    log records (``worker.progress``). With ``force`` false, logging that is already configured
    is left alone."""
    from worker import progress

    progress.AS_LOG = fmt == "json"
    if logging.getLogger().handlers and not force:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
