"""How a job's history reads to people: how often it ran, how long its run took, its timeline, and
which attempt its error is from.

The admin's job pages and ``manage.py asyncjobs show`` say these things the same way, from a job
row and its attempt history (oldest first). Pure: nothing here reads the database.

Two rules make the figures honest:

- A run is an attempt of the history. A job's duration is its latest attempt's, from start to end
  (to now while it runs), never the time until an operator cancelled it or marked it succeeded.
- An operator's retry starts the retry limit again (``attempts``) but not the history
  (``total_attempts``), so "how often did it run" and "how much of its retry limit is used" are
  two figures, shown both when they differ.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from .models import Job, JobAttempt
from .status import JobStatus


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """Return the time between two moments as "1.25 s", "3 min 4 s" or "-".

    >>> moment = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> duration(moment, moment + dt.timedelta(seconds=184))
    '3 min 4 s'
    """
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s"


#: Why a job may have run more often than its retry limit counts.
COUNTED_EXPLAINED = (
    "an operator's retry starts the count against the retry limit again, and the first "
    "interruptions by a shutdown do not count"
)


def times_run(job: Job) -> int:
    """Return how often *job* started, over its whole life.

    >>> times_run(Job(attempts=1, total_attempts=5))
    5
    """
    # max(): a row an older version wrote has no total (0); its attempts are all it knows.
    return max(job.total_attempts, job.attempts)


def attempts_summary(job: Job) -> str:
    """Return how often *job* ran and, when that differs, how much of its retry limit is used.

    "2 / 4": it ran twice, and may start 4 times. "5 (1 / 4 counted)": it ran 5 times, of which
    1 counts against the limit of 4, because an operator retried it (the limit starts again) or
    a shutdown interrupted it (the first interruptions give their attempt back).

    >>> attempts_summary(Job(attempts=1, total_attempts=5, max_retries=3))
    '5 (1 / 4 counted)'
    """
    counted = f"{job.attempts} / {job.max_retries + 1}"
    if times_run(job) == job.attempts:
        return counted
    return f"{times_run(job)} ({counted} counted)"


def latest_attempt(attempts: Sequence[JobAttempt]) -> JobAttempt | None:
    """Return the attempt that started last, from a history in start order."""
    return attempts[-1] if attempts else None


def run_duration(job: Job, attempts: Sequence[JobAttempt], *, now: dt.datetime) -> str:
    """Return how long *job*'s latest run took (or has taken until *now*, while it runs).

    "-" when it never ran, or when its latest attempt is still open while the job is not
    running (a worker about to record it).
    """
    latest = latest_attempt(attempts)
    if latest is None:
        return "-"
    end = latest.finished_at
    if end is None and job.status == JobStatus.RUNNING:
        end = now
    return duration(latest.started_at, end)


def ended_by_its_run(job: Job, attempts: Sequence[JobAttempt]) -> bool:
    """Return whether *job*'s ``finished_at`` is the end of its latest attempt.

    It is when a worker (or the reaper) recorded the outcome: the statement that ends the attempt
    stamps both with the same ``now()``. It is not when an operator or the scheduler ended the
    job without running it (cancel, mark as succeeded, a dependency that failed).
    """
    latest = latest_attempt(attempts)
    return (
        job.finished_at is not None and latest is not None and latest.finished_at == job.finished_at
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One moment of a job's timeline, and the time since the step before (when that means
    something)."""

    label: str
    moment: dt.datetime
    since_previous: dt.timedelta | None = None

    @property
    def after(self) -> str:
        """The time since the step before as " (+1.25 s)", or "" when none is shown.

        >>> moment = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        >>> Step(label="started", moment=moment, since_previous=dt.timedelta(seconds=2)).after
        ' (+2.00 s)'
        """
        if self.since_previous is None:
            return ""
        return f" (+{duration(self.moment - self.since_previous, self.moment)})"


def timeline(job: Job, attempts: Sequence[JobAttempt]) -> list[Step]:
    """Return the moments of *job*: created, enqueued, started, and how it ended, in time order.

    "started" is the start of the latest attempt, named by its number once there was more than
    one. The last step is "finished" (its time since "started" is the run's duration) when the
    latest attempt ended the job; otherwise it says what ended it ("cancelled", "marked as
    succeeded", "failed") and shows no time since the step before, which would count the wait
    for an operator, not the job's run.
    """
    started = "started"
    if job.total_attempts > 1:
        started = f"started attempt {job.total_attempts}"
    moments = [
        ("created", job.created_at),
        ("enqueued", job.enqueued_at),
        (started, job.started_at),
    ]
    steps: list[Step] = []
    previous: dt.datetime | None = None
    for label, moment in sorted(
        ((label, moment) for label, moment in moments if moment is not None),
        key=lambda pair: pair[1],
    ):
        since = moment - previous if previous is not None else None
        steps.append(Step(label=label, moment=moment, since_previous=since))
        previous = moment
    if job.finished_at is not None:
        if ended_by_its_run(job, attempts):
            since = job.finished_at - previous if previous is not None else None
            steps.append(Step(label="finished", moment=job.finished_at, since_previous=since))
        else:
            steps.append(Step(label=_ended_without_a_run(job), moment=job.finished_at))
    return steps


def _ended_without_a_run(job: Job) -> str:
    if job.status == JobStatus.SUCCEEDED and job.note:
        return "marked as succeeded"
    return str(job.status)


def error_origin(job: Job, attempts: Sequence[JobAttempt]) -> str:
    """Return which attempt *job*'s error (and traceback) is from, or "" when none is.

    A job keeps the error of its last failed attempt while it waits for, and runs, the next one:
    "from attempt 3 (failed); attempt 4 is running". A note of the scheduler or a worker that
    is not an attempt's error (a job waiting for a worker that knows its name) names none.
    """
    if not job.error:
        return ""
    source = next(
        (a for a in reversed(attempts) if a.finished_at is not None and a.error == job.error),
        None,
    )
    if source is None:
        return ""
    origin = f"from attempt {source.number} ({source.get_outcome_display()})"
    if job.status == JobStatus.RUNNING:
        return f"{origin}; attempt {job.total_attempts} is running"
    if job.status in (JobStatus.SCHEDULED, JobStatus.QUEUED):
        return f"{origin}; attempt {job.total_attempts + 1} has not started yet"
    return origin
