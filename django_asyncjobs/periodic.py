"""Periodic jobs: cron schedules declared in code (``@job(cron=...)``) or in settings.

Each schedule has a row in ``asyncjobs_periodic`` holding its next occurrence. A scheduler pass
locks the due rows (``FOR UPDATE SKIP LOCKED``), enqueues the occurrence's job and moves the row
to the next occurrence in the same transaction: an occurrence is enqueued exactly once, however
many schedulers run, and a restart resumes from the row. Occurrences come from
:class:`~django_asyncjobs.cron.Cron`, in the schedule's time zone; "now" is the database's clock.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connections, router, transaction

from .conf import raw_settings
from .cron import MAX_CATCH_UP, Cron
from .exceptions import JobNotRegistered
from .registry import JobDefinition, registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A :class:`Cron` bound to a job: one row of ``asyncjobs_periodic``."""

    key: str
    job_name: str
    cron: Cron


def schedules() -> list[Schedule]:
    """Return every schedule: ``@job(cron=...)`` ones and ``ASYNCJOBS["PERIODIC_JOBS"]``."""
    found: list[Schedule] = []
    for definition in registry:
        for index, cron in enumerate(definition.crons):
            key = definition.name if index == 0 else f"{definition.name}#{index}"
            found.append(Schedule(key=key, job_name=definition.name, cron=cron))
    for index, entry in enumerate(settings_entries()):
        cron = Cron(
            expression=entry.get("cron", ""),
            args=entry.get("args", ()),
            kwargs=entry.get("kwargs", {}),
            timezone=entry.get("timezone", "UTC"),
            missed=entry.get("missed", "once"),
            queue=entry.get("queue"),
            priority=entry.get("priority"),
        )
        key = entry.get("key") or f"settings:{index}:{entry.get('job')}"
        found.append(Schedule(key=str(key), job_name=str(entry.get("job")), cron=cron))
    return found


def settings_entries() -> list[dict[str, Any]]:
    """Return ``ASYNCJOBS["PERIODIC_JOBS"]`` (a list of dicts), or ``[]``."""
    raw = raw_settings()
    entries = raw.get("PERIODIC_JOBS", []) if isinstance(raw, Mapping) else []
    return [dict(e) for e in entries if isinstance(e, Mapping)]


#: The hint for a schedule whose cron expression (or time zone, or missed policy) is wrong.
CRON_HINT = "Cron expressions have five fields: minute hour day-of-month month day-of-week."


def problems() -> list[tuple[str, str]]:
    """Return ``(message, hint)`` per invalid schedule, for the system check.

    An unknown job name gets a hint about job names (the closest registered one, if any), a bad
    cron expression one about cron fields.
    """
    found: list[tuple[str, str]] = []
    for entry in settings_entries():
        name = entry.get("job")
        if name not in registry:
            found.append(
                (f'ASYNCJOBS["PERIODIC_JOBS"]: no job named {name!r}', _job_name_hint(name))
            )
    for schedule in schedules():
        problem = schedule.cron.problem()
        if problem:
            found.append((f"periodic job {schedule.key!r}: {problem}", CRON_HINT))
    return found


def _job_name_hint(name: object) -> str:
    close = difflib.get_close_matches(str(name), sorted(registry.names()), n=1)
    suggestion = f"Did you mean {close[0]!r}? " if close else ""
    return (
        f'{suggestion}"job" is a registered job\'s name: @job(name=...), or by default '
        '"module.function" (e.g. "myapp.jobs.send_report"); the jobs.py of an installed app is '
        "imported at start-up."
    )


def idle_schedules(now: dt.datetime | None = None) -> list[str]:
    """Return one message per valid schedule that has no occurrence after *now*."""
    moment = now or dt.datetime.now(dt.UTC)
    return [
        f"periodic job {schedule.key!r}: {schedule.cron.expression!r} never fires after "
        f"{moment:%Y-%m-%d %H:%M} UTC"
        for schedule in schedules()
        if schedule.cron.problem() is None and not schedule.cron.fires_after(moment)
    ]


def _definition(schedule: Schedule) -> JobDefinition[Any, Any]:
    return registry.get(schedule.job_name)


def enqueue_due(*, using: str | None = None) -> int:
    """Enqueue the job of every due occurrence exactly once; return how many jobs.

    Creates rows for new schedules (their first occurrence is the next one from now), then, per
    due row locked with SKIP LOCKED, enqueues and advances the row in one transaction.
    """
    from .models import PeriodicSchedule

    alias = using or router.db_for_write(PeriodicSchedule)
    valid = [s for s in schedules() if s.cron.problem() is None and _known(s)]
    if not valid:
        return 0
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT now()")
        (now,) = cursor.fetchone()
    by_key = {s.key: s for s in valid}
    existing = set(
        PeriodicSchedule.objects.using(alias).filter(key__in=by_key).values_list("key", flat=True)
    )
    new = [
        PeriodicSchedule(
            key=s.key,
            name=s.job_name,
            cron=s.cron.expression,
            timezone=s.cron.timezone,
            next_run_at=s.cron.next_after(now),
        )
        for s in valid
        if s.key not in existing
    ]
    if new:
        PeriodicSchedule.objects.using(alias).bulk_create(new, ignore_conflicts=True)
    enqueued = 0
    with transaction.atomic(using=alias):
        due = (
            PeriodicSchedule.objects.using(alias)
            .select_for_update(skip_locked=True)
            .filter(key__in=by_key, next_run_at__lte=now)
        )
        for row in due:
            enqueued += _run_row(row, by_key[row.key], now=now)
    return enqueued


def _known(schedule: Schedule) -> bool:
    try:
        _definition(schedule)
    except JobNotRegistered:
        return False
    return True


def _run_row(row: Any, schedule: Schedule, *, now: dt.datetime) -> int:
    cron = schedule.cron
    if row.cron != cron.expression or row.timezone != cron.timezone:
        # The schedule changed in code: start over from now, running nothing missed.
        row.cron, row.timezone = cron.expression, cron.timezone
        row.next_run_at = cron.next_after(now)
        row.save(update_fields=["cron", "timezone", "next_run_at", "updated_at"])
        return 0
    occurrences = [row.next_run_at, *cron.occurrences(row.next_run_at, now)]
    if cron.missed == "once":
        occurrences = occurrences[-1:]
    elif cron.missed == "skip":
        occurrences = occurrences[-1:] if len(occurrences) == 1 else []
    else:
        occurrences = occurrences[-MAX_CATCH_UP:]
    definition = _definition(schedule)
    bound = definition.using(queue=cron.queue, priority=cron.priority)
    # The occurrence is part of the unique key: the database refuses a second job for it.
    jobs = bound.delay_many(
        [(cron.args, cron.kwargs) for _ in occurrences],
        unique_keys=[f"periodic:{schedule.key}@{o.isoformat()}"[:255] for o in occurrences],
    )
    for occurrence, job in zip(occurrences, jobs, strict=True):
        logger.info(
            "periodic job enqueued schedule=%s occurrence=%s id=%s",
            schedule.key,
            occurrence.isoformat(),
            job.id,
        )
    if occurrences:
        row.last_run_at = occurrences[-1]
        row.last_job_id = jobs[-1].id
    row.next_run_at = cron.next_after(now)
    row.save(update_fields=["last_run_at", "last_job_id", "next_run_at", "updated_at"])
    return len(jobs)


def seconds_until_next(*, using: str | None = None) -> float | None:
    """Return how long until the next occurrence of a current schedule (0 if due), or None."""
    from .models import PeriodicSchedule

    keys = [s.key for s in schedules()]
    if not keys:
        return None
    alias = using or router.db_for_write(PeriodicSchedule)
    table = connections[alias].ops.quote_name(PeriodicSchedule._meta.db_table)
    with connections[alias].cursor() as cursor:
        cursor.execute(
            f"SELECT EXTRACT(EPOCH FROM (min(next_run_at) - now())) FROM {table} "
            f"WHERE key = ANY(%s)",
            [keys],
        )
        (seconds,) = cursor.fetchone()
    return None if seconds is None else max(0.0, float(seconds))
