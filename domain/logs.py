"""The log format of every process (API, worker, beat): one JSON object per line, or a readable
line for `m2m dev` on a terminal, carrying the request id or the job and run id of each line.

The standard library's logging, with one formatter, rather than structlog: Granian, uvicorn, Celery,
SQLAlchemy and Litestar all log through it, so one formatter on the root handler formats every
line of the process, theirs included, with no second pipeline and no extra dependency.
"""

from __future__ import annotations

import json
import logging
import logging.config
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

from sqlalchemy.exc import DBAPIError

# The request being answered, set by the API for the whole of its handling: every line logged
# meanwhile, by any module, carries it.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


class RequestOrigin:
    """Where the request being answered came from: its client address (domain/ratelimit.py
    client_address), filled in once a route reads it (authentication, the exchange routes) and
    recorded by the audit trail. One mutable object per request: a dependency resolved in a
    task of its own still fills in the request's."""

    __slots__ = ("address",)

    def __init__(self) -> None:
        self.address: str | None = None


current_request_origin: ContextVar[RequestOrigin | None] = ContextVar(
    "current_request_origin", default=None
)
# The job run a line belongs to: set by domain.job_runs.run_job.
current_job: ContextVar[str | None] = ContextVar("current_job", default=None)
current_run: ContextVar[str | None] = ContextVar("current_run", default=None)

# Attributes every LogRecord has; anything else was passed in `extra` and is logged as a field
# (but uvicorn's copy of the message with terminal colours).
_STANDARD: Final = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}

# What the standard traceback prints between two chained exceptions.
_CAUSE: Final = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT: Final = "\nDuring handling of the above exception, another exception occurred:\n\n"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """What a line says besides its time, level, logger and message: the request or job it
    belongs to, and the record's `extra` fields."""
    fields: dict[str, Any] = {}
    request_id = current_request_id.get()
    if request_id is not None:
        fields["request_id"] = request_id
    job = current_job.get()
    if job is not None:
        fields["job"] = job
        fields["run_id"] = current_run.get()
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    return fields


def exception_text(exc_info: ExcInfo) -> str:
    """The traceback, down to the first database error and not below it: the driver's own
    error chained beneath repeats values of the statement (PostgreSQL's "DETAIL: Key (...)=(...)
    already exists"), which SQLAlchemy's error leaves out (its parameters are hidden)."""
    error = exc_info[1]
    if error is None:
        return ""
    blocks: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = "".join(
            traceback.format_exception(type(current), current, current.__traceback__, chain=False)
        )
        following: BaseException | None = None
        if not isinstance(current, DBAPIError):
            if current.__cause__ is not None:
                following = current.__cause__
                text = _CAUSE + text
            elif current.__context__ is not None and not current.__suppress_context__:
                following = current.__context__
                text = _CONTEXT + text
        blocks.append(text)
        current = following
    return "".join(reversed(blocks)).rstrip("\n")


# One encoder for every line: `json.dumps(..., default=str)` builds a new one per call.
_JSON_LINE: Final = json.JSONEncoder(default=str)


def lean_log_records() -> None:
    """Stop the standard library from filling in what no line of ours shows: the thread, the
    process and its name, and the caller's file and line (a walk up the stack). Every record
    costs less, the access line of each request included; the lines are unchanged."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the documented switch for the caller lookup


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the context fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["error"] = exception_text(record.exc_info)
        return _JSON_LINE.encode(entry)


class ReadableFormatter(logging.Formatter):
    """A line for a person at a terminal (`m2m dev`): the same content as the JSON one."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{moment} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += "  [" + " ".join(f"{key}={value}" for key, value in fields.items()) + "]"
        if record.exc_info:
            line += "\n" + exception_text(record.exc_info)
        return line


def log_config(*, readable: bool = False) -> dict[str, Any]:
    """The logging configuration of a process (Granian takes it as its `log_dictconfig`, uvicorn
    as its `log_config`): every line through one handler on stderr, JSON unless `readable`."""
    formatter = ReadableFormatter if readable else JsonFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"m2m": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "m2m",
                "stream": "ext://sys.stderr",
            }
        },
        # The servers' loggers lose the handlers of their own configuration: their lines leave
        # through the root's handler, like every other line. (The access lines are the app's:
        # api/request_ids.py.)
        "loggers": {
            "_granian": {"handlers": [], "propagate": True, "level": "INFO"},
            "granian.access": {"handlers": [], "propagate": True},
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
        },
        "root": {"handlers": ["stderr"], "level": "INFO"},
    }


def configure_logging(*, readable: bool = False) -> None:
    """Give this process the service's log format, before anything logs."""
    lean_log_records()
    logging.config.dictConfig(log_config(readable=readable))
