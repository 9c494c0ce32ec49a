"""The JSON log format: one object per line, the job's fields, and what ``use_json_format``
changes."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections.abc import Iterator

import pytest
from django.core.management.base import OutputWrapper

from django_asyncjobs.context import JobContext, running
from django_asyncjobs.logs import JsonFormatter, use_json_format
from django_asyncjobs.management.commands._logformat import _JsonOutput

JOB_ID = "6f1c0f3e-0000-4000-8000-000000000001"
FIELDS: dict[str, object] = {
    "job_id": JOB_ID,
    "job_name": "app.jobs.send",
    "queue": "default",
    "attempt": 2,
    "worker": "web-1:42",
}


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(
        "django_asyncjobs.worker", logging.INFO, __file__, 1, message, args, None
    )
    made.__dict__.update(extra)
    return made


def test_a_record_about_a_job_carries_its_fields() -> None:
    line = JsonFormatter().format(record("job started id=%s", FIELDS["job_id"], **FIELDS))
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "INFO" and data["logger"] == "django_asyncjobs.worker"
    assert data["message"] == f"job started id={FIELDS['job_id']}"
    assert data["time"].endswith("Z") and "T" in data["time"]
    assert {key: data[key] for key in FIELDS} == FIELDS


def test_other_records_have_no_job_fields_and_keep_their_traceback() -> None:
    try:
        raise RuntimeError("multi\nline")
    except RuntimeError:
        failed = record("cannot claim jobs count=%d", 3)
        failed.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(failed))
    assert not set(FIELDS) & data.keys()
    assert data["message"] == "cannot claim jobs count=3"
    assert "RuntimeError: multi\nline" in data["exception"]


def test_the_jobs_own_lines_get_the_running_jobs_fields() -> None:
    context = JobContext(
        id=uuid.UUID(JOB_ID),
        name="app.jobs.send",
        attempt=2,
        queue="default",
        worker="web-1:42",
        lease_token=uuid.uuid4(),
    )
    with running(context):
        data = json.loads(JsonFormatter().format(record("sending")))
    assert {key: data[key] for key in FIELDS} == FIELDS


@pytest.fixture
def logging_state() -> Iterator[logging.Handler]:
    """A handler on a logger of the test's own; the handlers' formatters restored afterwards."""
    handler = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger("tests.unit.json_format")
    logger.addHandler(handler)
    saved = {
        h: h.formatter
        for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
    }
    last_resort = logging.lastResort
    yield handler
    logger.removeHandler(handler)
    for h, formatter in saved.items():
        h.setFormatter(formatter)
    logging.lastResort = last_resort


def test_use_json_format_switches_configured_handlers_and_the_last_resort(
    logging_state: logging.Handler,
) -> None:
    use_json_format()
    assert isinstance(logging_state.formatter, JsonFormatter)
    assert logging.lastResort is not None
    assert isinstance(logging.lastResort.formatter, JsonFormatter)
    assert logging.lastResort.level == logging.WARNING


def test_a_commands_own_output_becomes_json_lines() -> None:
    out = io.StringIO()
    wrapped = _JsonOutput(OutputWrapper(out), level="WARNING", logger="django_asyncjobs.commands.x")
    wrapped.write("runworker: warning: no job uses queue 'x'")
    wrapped.write("CommandError: two\nlines")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "runworker: warning: no job uses queue 'x'"
    assert first["level"] == "WARNING" and first["logger"] == "django_asyncjobs.commands.x"
    assert second["message"] == "CommandError: two\nlines"
