"""Jobs as JSON, and the checks of a job submitted over HTTP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.utils.dateparse import parse_datetime

from ..conf import get_settings, queue_name_error
from ..models import Job, QueueState
from ..queues import paused_queues
from ..registry import JobDefinition, registry
from ..timebounds import timestamp_error

SUBMIT_FIELDS = {"name", "args", "kwargs", "delay", "run_at", "priority", "queue"}
#: The longest delay the API accepts (ten years): a larger one is a mistake, and would not fit
#: a timedelta anyway.
MAX_DELAY_SECONDS = 10 * 365 * 24 * 3600


def job_json(job: Job, *, paused: Mapping[str, QueueState] | None = None) -> dict[str, Any]:
    """Return the public JSON form of *job*.

    ``queue_paused`` is the pause of the job's queue (``None`` when it is not paused): a
    scheduled or queued job of a paused queue waits until it is resumed. *paused* is
    :func:`~django_asyncjobs.queues.paused_queues` read once for a page of jobs; without it,
    it is read for this job.
    """
    if paused is None:
        paused = paused_queues()
    state = paused.get(job.queue)

    def iso(moment: dt.datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "id": str(job.id),
        "name": job.name,
        "status": job.status,
        "queue": job.queue,
        "priority": job.priority,
        "args": job.args,
        "kwargs": job.kwargs,
        "attempts": job.attempts,
        "total_attempts": job.total_attempts,
        "max_retries": job.max_retries,
        "run_at": iso(job.run_at),
        "created_at": iso(job.created_at),
        "enqueued_at": iso(job.enqueued_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "error": job.error,
        "note": job.note,
        "cancel_requested_at": iso(job.cancel_requested_at),
        "cancel_requested_by": job.cancel_requested_by,
        "progress": job.progress,
        "queue_paused": state.as_json() if state else None,
    }


def exposed(name: str) -> JobDefinition[Any, Any] | None:
    """Return the definition of *name* if the API may create it."""
    if name not in registry:
        return None
    definition = registry.get(name)
    if definition.api or name in get_settings().api_jobs:
        return definition
    return None


def check_submission(data: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Return ``(cleaned, errors)`` for a POSTed job; *errors* maps field names to messages."""
    errors: dict[str, str] = {}
    if not isinstance(data, dict):
        return {}, {"body": "must be a JSON object"}
    for key in sorted(set(data) - SUBMIT_FIELDS):
        errors[key] = "unknown field"
    name = data.get("name")
    definition = exposed(name) if isinstance(name, str) else None
    if not isinstance(name, str) or not name:
        errors["name"] = "required: the name of a job"
    elif definition is None:
        errors["name"] = f"no job named {name!r} may be created over the API"
    args = data.get("args", [])
    if not isinstance(args, list):
        errors["args"] = "must be a JSON array"
    kwargs = data.get("kwargs", {})
    if not isinstance(kwargs, dict):
        errors["kwargs"] = "must be a JSON object"
    run_after: dt.timedelta | dt.datetime | None = None
    if "delay" in data and "run_at" in data:
        errors["delay"] = "give delay or run_at, not both"
    elif "delay" in data:
        delay = data["delay"]
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not 0 <= delay <= MAX_DELAY_SECONDS
        ):
            errors["delay"] = f"must be a number of seconds from 0 to {MAX_DELAY_SECONDS}"
        else:
            run_after = dt.timedelta(seconds=delay)
    elif "run_at" in data:
        try:
            moment = parse_datetime(data["run_at"]) if isinstance(data["run_at"], str) else None
        except ValueError:  # well formed but impossible, e.g. 12:99 or an offset of +99:00
            moment = None
        if moment is None or moment.tzinfo is None:
            errors["run_at"] = "must be an ISO 8601 date and time with a time zone"
        elif out_of_range := timestamp_error(moment, field="run_at"):
            # 9999-12-31T23:59:59-05:00 is the year 10000 in UTC: no row may hold it.
            errors["run_at"] = out_of_range
        else:
            run_after = moment
    priority = data.get("priority")
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) >= 2**31
    ):
        errors["priority"] = "must be an integer that fits in 32 bits"
    queue = data.get("queue")
    if queue is not None:
        problem = queue_name_error(queue)
        if problem:
            errors["queue"] = problem
    cleaned = {
        "definition": definition,
        "args": args,
        "kwargs": kwargs,
        "run_after": run_after,
        "priority": priority,
        "queue": queue,
    }
    return cleaned, errors
