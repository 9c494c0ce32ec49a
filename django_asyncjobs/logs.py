"""Structured logging: the job fields of a log record, and one JSON object per line.

Log records about a job carry its fields as attributes (``extra=job_fields(job)``): ``job_id``,
``job_name``, ``queue``, ``attempt`` and ``worker``. The text format shows them in the message
as ``key=value`` as before; :class:`JsonFormatter` (``--log-format json`` of the long-running
commands) writes them as fields of their own. A record logged by a job's own code while it runs
gets the fields of that job too (from :func:`~django_asyncjobs.current_job`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from .context import current_job

if TYPE_CHECKING:
    from .models import Job

#: The values of ``--log-format``.
LOG_FORMATS = ("text", "json")

#: The attributes of a record about a job, in the order a JSON line shows them.
JOB_FIELDS = ("job_id", "job_name", "queue", "attempt", "worker")


def job_fields(job: Job) -> dict[str, Any]:
    """Return the fields of a log record about *job*, for ``extra=``.

    Example::

        logger.info("job started name=%s id=%s", job.name, job.id, extra=job_fields(job))
    """
    return {
        "job_id": str(job.id),
        "job_name": job.name,
        "queue": job.queue,
        "attempt": job.total_attempts,
        "worker": job.worker,
    }


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line.

    Keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``,
    ``process``, then the job's fields when the record concerns a job, and ``exception`` (the
    formatted traceback) when it carries one.

    Example line::

        {"time": "2026-12-01T18:30:00.123Z", "level": "INFO",
         "logger": "django_asyncjobs.worker", "message": "job succeeded ...", "process": 4242,
         "job_id": "6f1c...", "job_name": "app.jobs.send", "queue": "default", "attempt": 1,
         "worker": "web-1:4242"}
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return *record* as a JSON line (no newline)."""
        stamp = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        data: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        fields = {name: getattr(record, name) for name in JOB_FIELDS if hasattr(record, name)}
        if not fields:
            # The job's own code logging while it runs (the context is the job thread's). Its
            # attempt is current_job().attempt, the count against the retry limit.
            context = current_job()
            if context is not None:
                fields = {
                    "job_id": str(context.id),
                    "job_name": context.name,
                    "queue": context.queue,
                    "attempt": context.attempt,
                    "worker": context.worker,
                }
        data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def use_json_format() -> None:
    """Switch every configured log handler, and Python's last-resort handler, to JSON.

    Handlers of the root logger and of every logger the project configured keep their
    destination, level and filters; only their format changes. Records no handler takes, which
    Python prints on stderr from WARNING up (``logging.lastResort``), come out as JSON too.
    Worker processes forked afterwards (``runworker --processes``) inherit all of it.
    """
    formatter = JsonFormatter()
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            handler.setFormatter(formatter)
    last_resort = logging.StreamHandler(sys.stderr)
    last_resort.setLevel(logging.WARNING)
    last_resort.setFormatter(formatter)
    logging.lastResort = last_resort


def json_line(message: str, *, level: str, logger: str) -> str:
    """Return what a command prints itself (its start-up line, a warning) as a JSON line.

    >>> json_line("runworker: pid 42", level="INFO", logger="runworker")  # doctest: +ELLIPSIS
    '{"time": "...", "level": "INFO", "logger": "runworker", "message": "runworker: pid 42", ...}'
    """
    record = logging.LogRecord(logger, logging.getLevelName(level), "", 0, message, None, None)
    return JsonFormatter().format(record)
