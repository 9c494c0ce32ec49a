"""Why a job waits for a limit, and how many jobs each queue's limits hold back: what the
admin's job page, its queue overview and the ``asyncjobs`` command say.

The limits themselves are in :mod:`django_asyncjobs.limits` and enforced by the relay; this
module reads the same counts for people, through ``Job.objects``.
"""

from __future__ import annotations

from django.db import router

from .conf import get_settings
from .limits import Rate
from .models import Job
from .registry import registry
from .status import JobStatus


def name_rates() -> dict[str, Rate]:
    """Return the rate limits of the registered jobs, by job name."""
    return {d.name: d.rate_limit for d in registry if d.rate_limit is not None}


def _period(rate: Rate) -> str:
    return f"{rate.period_seconds:g} s"


def limits_summary(job: Job) -> str:
    """Return the limits that apply to *job*, in one line ("" when none does).

    >>> limits_summary(Job(name="x", queue="default", concurrency_key="x:acme",
    ...     concurrency_limit=2))
    "concurrency 2 per key 'x:acme'"
    """
    parts = []
    if job.concurrency_key is not None:
        parts.append(f"concurrency {job.concurrency_limit} per key {job.concurrency_key!r}")
    rate = name_rates().get(job.name)
    if rate is not None:
        parts.append(f"rate {rate} for job {job.name}")
    queue_rate = get_settings().queue_rates().get(job.queue)
    if queue_rate is not None:
        parts.append(f"rate {queue_rate} for queue {job.queue!r}")
    return "; ".join(parts)


def limit_note(job: Job, *, using: str | None = None) -> str | None:
    """Return why *job* waits for a limit, or ``None`` when no limit holds it now.

    Only a due, scheduled job (not blocked by dependencies) is held by a limit: the relay
    leaves it in PostgreSQL, unsent, until a slot or the rate window frees up. Reads the
    counts the relay reads, so it says what the next relay would find.

    Example::

        limit_note(job)
        # "waiting: concurrency limit: 2 of 2 jobs with key 'app.sync:acme' are queued or running"
    """
    if job.status != JobStatus.SCHEDULED or job.blocked:
        return None
    manager = Job.objects.db_manager(using or router.db_for_read(Job))
    if job.concurrency_key is not None and job.concurrency_limit is not None:
        active = manager.concurrency_usage([job.concurrency_key])[job.concurrency_key]
        if active >= job.concurrency_limit:
            return (
                f"waiting: concurrency limit: {active} of {job.concurrency_limit} jobs with key "
                f"{job.concurrency_key!r} are queued or running; it is sent when one ends"
            )
    windows = [
        (job.name, False, name_rates().get(job.name), f"job {job.name}"),
        (job.queue, True, get_settings().queue_rates().get(job.queue), f"queue {job.queue!r}"),
    ]
    for value, by_queue, rate, what in windows:
        if rate is None:
            continue
        used = manager.rate_usage([(value, by_queue, rate)])[value]
        if used >= rate.count:
            return (
                f"waiting: rate limit {rate} of {what}: {used} started in the last "
                f"{_period(rate)} or are about to start"
            )
    return None


def held_by_limits(*, using: str | None = None) -> dict[str, int]:
    """Return, per queue, how many due jobs a concurrency or rate limit holds back now.

    Example::

        held_by_limits()   # {"default": 12}
    """
    manager = Job.objects.db_manager(using or router.db_for_read(Job))
    return manager.held_counts(name_rates=name_rates(), queue_rates=get_settings().queue_rates())
