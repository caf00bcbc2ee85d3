"""Log lines for the API and the workers: one JSON object per line (the default), or plain text.

A JSON line holds ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message``, the
ids of what the line is about (``job_id``, ``book_id``, ``voice_id``) when there is one, and
``exception`` (the formatted traceback) when the record carries one. The ids come from a
:mod:`contextvars` context: the worker sets it around each task (Celery's ``task_prerun`` /
``task_postrun``), the API around each request whose URL names a job, book or voice. A call's own
``extra={"job_id": ...}`` wins over the context.

Settings (``ECHO_LOG_FORMAT``, ``ECHO_LOG_LEVEL``) are read by the settings modules, never here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ID_FIELDS = ("job_id", "book_id", "voice_id")

_EMPTY: Mapping[str, str] = {}
_context: ContextVar[Mapping[str, str]] = ContextVar("echo_log_context", default=_EMPTY)


def ids_from(mapping: Mapping[str, Any] | None) -> dict[str, str]:
    """The ids in ``mapping`` (a task's kwargs, a URL's arguments) that log lines should carry."""
    return {k: str(mapping[k]) for k in ID_FIELDS if mapping and mapping.get(k)}


def current() -> Mapping[str, str]:
    return _context.get()


def set_context(**fields: str) -> None:
    """Replace the context of this thread/task with ``fields`` (empty values dropped)."""
    _context.set({k: v for k, v in fields.items() if v})


def clear() -> None:
    _context.set(_EMPTY)


@contextlib.contextmanager
def context(**fields: str) -> Iterator[None]:
    """Add ``fields`` to the context for a block, then restore what was there."""
    token: Token[Mapping[str, str]] = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


def _ids(record: logging.LogRecord) -> dict[str, str]:
    ids = dict(_context.get())
    for key in ID_FIELDS:
        value = record.__dict__.get(key)
        if value:
            ids[key] = str(value)
    return ids


def _utc(created: float) -> str:
    """``2026-11-25T09:14:03.512Z``"""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages and tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_ids(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger [job_id=…] message`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(echo_ids)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = _ids(record)
        record.echo_ids = "".join(f" [{k}={v}]" for k, v in ids.items())
        return super().format(record)


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def handler(fmt: str = "json", stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with our formatter, marked so that :func:`configure` replaces
    it instead of adding a second one (``logging.config.dictConfig`` may build it: ``"()"`` factory)."""
    made = logging.StreamHandler(stream or sys.stderr)
    made.setFormatter(formatter(fmt))
    made._echo_handler = True  # type: ignore[attr-defined]
    return made


def configured() -> bool:
    """Whether the root logger already writes through a handler of ours (e.g. gunicorn's dictConfig)."""
    return any(getattr(h, "_echo_handler", False) for h in logging.getLogger().handlers)


def configure(fmt: str = "json", level: str | int = "INFO", *, stream: IO[str] | None = None) -> logging.Handler:
    """Send the root logger's records to one handler of ours at ``level``; earlier handlers of ours go
    (calling it again reconfigures, it never doubles lines). Other handlers stay."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_echo_handler", False)]:
        root.removeHandler(old)
    made = handler(fmt, stream)
    root.addHandler(made)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)  # warnings become lines of their own (logger py.warnings), not raw stderr
    return made


def dict_config(fmt: str, level: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` mapping with the root on our handler, for gunicorn's
    ``logconfig_dict``: its own loggers (``gunicorn.error``, ``gunicorn.access``) then write through it."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {},
        "handlers": {"echo": {"()": "jobs.logs.handler", "fmt": fmt}},
        "root": {"level": level.upper(), "handlers": ["echo"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }
