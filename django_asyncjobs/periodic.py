"""Periodic jobs: cron schedules declared in code (``@job(cron=...)``) or in settings.

Each schedule has a row in ``asyncjobs_periodic`` holding its next occurrence. A scheduler pass
locks the due rows (``FOR UPDATE SKIP LOCKED``), enqueues the occurrence's job and moves the row
to the next occurrence in the same transaction: an occurrence is enqueued exactly once, however
many schedulers run, and a restart resumes from the row. Occurrences are computed with croniter
in the schedule's time zone; "now" is the database's clock.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

from croniter import CroniterBadDateError, croniter
from django.db import connections, router, transaction

from .conf import raw_settings
from .exceptions import JobNotRegistered
from .timebounds import LATEST_TIMESTAMP

if TYPE_CHECKING:
    from .registry import JobDefinition

logger = logging.getLogger(__name__)

#: What happens to occurrences missed while no scheduler ran: run the latest one once (default),
#: run each of them (at most MAX_CATCH_UP), or skip them.
MISSED_POLICIES = ("once", "all", "skip")
MAX_CATCH_UP = 100


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron schedule for a job, with the arguments each occurrence gets.

    >>> @job(cron=Cron("0 3 * * *", kwargs={"full": True}, timezone="Europe/Paris"))
    ... def backup(full: bool = False) -> None: ...

    ``@job(cron="*/5 * * * *")`` is ``Cron("*/5 * * * *")``. *missed*: ``"once"`` (default)
    runs one occurrence for all those missed while no scheduler ran, ``"all"`` runs each (at
    most 100), ``"skip"`` runs none of them.
    """

    expression: str
    _: KW_ONLY
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    missed: str = "once"
    queue: str | None = None
    priority: int | None = None

    def problem(self) -> str | None:
        """Return what is wrong with this schedule, or ``None``."""
        if not isinstance(self.expression, str) or not croniter.is_valid(self.expression):
            return f"{self.expression!r} is not a valid cron expression (e.g. '*/5 * * * *')"
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            return f"{self.timezone!r} is not a known time zone (e.g. 'Europe/Paris')"
        if self.missed not in MISSED_POLICIES:
            return f"missed={self.missed!r} must be one of {MISSED_POLICIES}"
        return None

    def occurrences(self, after: dt.datetime, until: dt.datetime) -> Iterator[dt.datetime]:
        """Yield occurrences in ``(after, until]``, as aware datetimes."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        found = croniter(self.expression, after.astimezone(zone)).all_next(dt.datetime)
        while True:
            try:
                occurrence = next(found)
            except (StopIteration, CroniterBadDateError):  # the schedule has no more
                return
            if occurrence > until:
                return
            yield occurrence

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """Return the first occurrence after *moment*; ``LATEST_TIMESTAMP`` when there is none.

        A valid expression can have no occurrence (``0 0 30 2 *``, or a year field that has
        passed): its schedule then waits for ever instead of failing every scheduler pass, and
        the system check warns about it (asyncjobs.W002).
        """
        zone = zoneinfo.ZoneInfo(self.timezone)
        try:
            occurrence: dt.datetime = croniter(self.expression, moment.astimezone(zone)).get_next(
                dt.datetime
            )
        except CroniterBadDateError:
            return LATEST_TIMESTAMP
        return min(occurrence, LATEST_TIMESTAMP)

    def fires_after(self, moment: dt.datetime) -> bool:
        """Return whether the schedule has an occurrence after *moment*.

        >>> Cron("0 0 30 2 *").fires_after(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        False
        """
        return self.next_after(moment) < LATEST_TIMESTAMP


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A :class:`Cron` bound to a job: one row of ``asyncjobs_periodic``."""

    key: str
    job_name: str
    cron: Cron


def as_crons(value: str | Cron | Sequence[str | Cron] | None) -> tuple[Cron, ...]:
    """Normalise the ``cron=`` argument of ``@job``."""
    if value is None:
        return ()
    if isinstance(value, str | Cron):
        value = [value]
    crons = tuple(Cron(expression=v) if isinstance(v, str) else v for v in value)
    for cron in crons:
        if not isinstance(cron, Cron):
            raise TypeError(f"cron takes expressions or Cron(...) objects, not {cron!r}")
    return crons


def schedules() -> list[Schedule]:
    """Return every schedule: ``@job(cron=...)`` ones and ``ASYNCJOBS["PERIODIC_JOBS"]``."""
    from .registry import registry

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


def problems() -> list[str]:
    """Return one message per invalid schedule, for the system check."""
    from .registry import registry

    found: list[str] = []
    for entry in settings_entries():
        if entry.get("job") not in registry:
            found.append(f'ASYNCJOBS["PERIODIC_JOBS"]: no job named {entry.get("job")!r}')
    for schedule in schedules():
        problem = schedule.cron.problem()
        if problem:
            found.append(f"periodic job {schedule.key!r}: {problem}")
    return found


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
    from .registry import registry

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
