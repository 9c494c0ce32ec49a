"""The ``Job`` row: one per enqueued job, the single source of truth about it.

State changes never go through ``job.save()``: each one is a conditional UPDATE in
:mod:`django_asyncjobs.queries`, reached through ``Job.objects``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import django
from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .fields import BoundedDateTimeField, UUIDArrayField
from .queries import JobManager, ProcessManager, QueueStateManager
from .status import FINAL_STATUSES, JobStatus
from .timebounds import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

__all__ = [
    "FINAL_STATUSES",
    "AttemptOutcome",
    "Job",
    "JobAttempt",
    "JobStatus",
    "PeriodicSchedule",
    "Process",
    "ProcessKind",
    "QueueState",
    "RegisteredJob",
]


class Job(models.Model):
    """One job: what to run, with which arguments, and what happened.

    Example::

        from myapp.jobs import add

        job = add.delay(2, 3)
        job.status            # 'scheduled'
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(_("name"), max_length=255, help_text=_("Registered job name."))
    args = models.JSONField(_("args"), default=list, blank=True)
    kwargs = models.JSONField(_("kwargs"), default=dict, blank=True)
    queue = models.CharField(_("queue"), max_length=80)
    priority = models.IntegerField(_("priority"), default=0, help_text=_("Higher runs first."))
    status = models.CharField(
        _("status"), max_length=16, choices=JobStatus.choices, default=JobStatus.SCHEDULED
    )
    run_at = BoundedDateTimeField(_("run at"), help_text=_("Not sent to a worker before this."))
    attempts = models.PositiveIntegerField(
        _("attempts"),
        default=0,
        help_text=_(
            "Attempts counted against the retry limit: an operator's retry starts again from 0, "
            "and a free interruption gives its attempt back."
        ),
    )
    # Never reset: an operator's retry gives a job a fresh retry budget (``attempts``), not a
    # fresh history, so the attempts of the history are numbered on.
    total_attempts = models.PositiveIntegerField(
        _("total attempts"),
        default=0,
        help_text=_(
            "Times the job started, over its whole life; the number of its latest attempt."
        ),
    )
    interruptions = models.PositiveIntegerField(
        _("interruptions"),
        default=0,
        help_text=_("Times a worker's graceful shutdown handed the running job back."),
    )
    max_retries = models.PositiveIntegerField(_("max retries"), default=3)
    # On the row, not only on the job definition: a scheduler that does not know the job's name
    # (a rolling deploy) must still never run an at-most-once job twice.
    at_most_once = models.BooleanField(
        _("at most once"),
        default=False,
        help_text=_("Never run again after an attempt that may have partly run."),
    )
    refused_deliveries = models.PositiveIntegerField(
        _("refused deliveries"),
        default=0,
        help_text=_("Times a worker received the job but could not run it (name not registered)."),
    )
    timeout = models.FloatField(
        _("timeout"), null=True, blank=True, help_text=_("Seconds an attempt may run.")
    )
    result = models.JSONField(_("result"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True, default="")
    traceback = models.TextField(_("traceback"), blank=True, default="")
    note = models.TextField(
        _("note"),
        blank=True,
        default="",
        help_text=_("What an operator said when they settled the job by hand (mark as succeeded)."),
    )
    progress = models.JSONField(
        _("progress"),
        null=True,
        blank=True,
        help_text=_("What the running job last reported: done, total, message, at."),
    )
    created_at = models.DateTimeField(_("created at"))
    enqueued_at = models.DateTimeField(_("enqueued at"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("heartbeat at"), null=True, blank=True)
    worker = models.CharField(_("worker"), max_length=255, blank=True, default="")
    # A request, not a status: a running job stays running until its worker stops it.
    cancel_requested_at = models.DateTimeField(
        _("cancel requested at"),
        null=True,
        blank=True,
        help_text=_("When an operator asked to cancel the job."),
    )
    cancel_requested_by = models.CharField(
        _("cancel requested by"),
        max_length=255,
        blank=True,
        default="",
        help_text=_("Who asked to cancel the job: an admin user, an API user, or a CLI operator."),
    )
    task_backend = models.CharField(
        _("task backend"),
        max_length=100,
        blank=True,
        default="",
        help_text=_("Alias of the Django Tasks backend that enqueued it (empty for @job)."),
    )
    # NULL, not "": jobs without a key must never conflict with each other.
    unique_key = models.CharField(  # noqa: DJ001
        _("unique key"),
        max_length=255,
        null=True,
        blank=True,
        help_text=_("While a job with this key is scheduled, queued or running, no second one."),
    )
    # NULL when the job has no concurrency limit. Computed from the arguments at enqueue, so
    # that the relay counts jobs of one key without running the job's code.
    concurrency_key = models.CharField(  # noqa: DJ001
        _("concurrency key"),
        max_length=255,
        null=True,
        blank=True,
        help_text=_("Jobs with this key share the concurrency limit (one per customer, ...)."),
    )
    concurrency_limit = models.PositiveIntegerField(
        _("concurrency limit"),
        null=True,
        blank=True,
        help_text=_("Most jobs with the same concurrency key queued or running at once."),
    )
    depends_on = UUIDArrayField(
        verbose_name=_("depends on"),
        default=list,
        blank=True,
        help_text=_("Jobs that must succeed before this one runs."),
    )
    blocked = models.BooleanField(
        _("blocked"), default=False, help_text=_("Waiting for its dependencies to succeed.")
    )
    # The caller's W3C trace context headers ({"traceparent": ..., "tracestate": ...}) as
    # django_asyncjobs.tracing propagates them: a JSON object, the carrier OpenTelemetry's
    # propagators read and write, so that one column holds both headers (and any a later
    # propagator adds) without parsing.
    trace_context = models.JSONField(
        _("trace context"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("The OpenTelemetry trace context of the code that enqueued the job."),
    )
    # Fencing tokens: a message is only good for the dispatch that sent it, and a worker's writes
    # only count while it holds the lease it got when it claimed the job.
    dispatch_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_token = models.UUIDField(null=True, blank=True, editable=False)

    objects = JobManager()

    class Meta:
        db_table = "asyncjobs_job"
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        ordering = ["-created_at"]
        constraints = [
            # delay() of a unique job returns the active one instead of inserting: enforced here,
            # so that concurrent callers cannot race past each other.
            models.UniqueConstraint(
                fields=["unique_key"],
                condition=models.Q(status__in=["scheduled", "queued", "running"]),
                name="asyncjobs_unique_active",
            ),
            # What Python can read back in any time zone; raw SQL and asyncjobs_enqueue() too.
            models.CheckConstraint(
                name="asyncjobs_run_at_in_range",
                **{  # type: ignore[arg-type]
                    "condition" if django.VERSION >= (5, 1) else "check": models.Q(
                        run_at__gte=EARLIEST_TIMESTAMP, run_at__lte=LATEST_TIMESTAMP
                    )
                },
            ),
        ]
        permissions = [
            ("retry_job", "Can retry jobs"),
            ("cancel_job", "Can cancel jobs"),
            ("mark_succeeded_job", "Can mark jobs as succeeded"),
            ("run_again_job", "Can run jobs again as new jobs"),
        ]
        indexes = [
            # The scheduler's relay: due scheduled jobs of one queue, highest priority first
            # (and the loose index scan that finds the queues with due jobs).
            models.Index(
                "queue",
                models.F("priority").desc(),
                "run_at",
                name="asyncjobs_relay_idx",
                condition=models.Q(status="scheduled", blocked=False),
            ),
            # The relay's count of queued and running jobs of one concurrency key.
            models.Index(
                fields=["concurrency_key"],
                name="asyncjobs_concurrency_idx",
                condition=models.Q(status__in=["queued", "running"], concurrency_key__isnull=False),
            ),
            # The scheduler's "when is the next job due" and the admin's due filter.
            models.Index(
                fields=["run_at"],
                name="asyncjobs_next_due_idx",
                condition=models.Q(status="scheduled", blocked=False),
            ),
            # The reaper's scan of running jobs by heartbeat.
            models.Index(
                fields=["heartbeat_at"],
                name="asyncjobs_running_idx",
                condition=models.Q(status="running"),
            ),
            # The scheduler's search for queued jobs whose message was lost.
            models.Index(
                fields=["enqueued_at"],
                name="asyncjobs_queued_idx",
                condition=models.Q(status="queued"),
            ),
            # The scheduler's pass over blocked jobs (release or cancel them): without it every
            # pass would scan the table; the GIN index below cannot serve "WHERE blocked".
            models.Index(
                fields=["status"],
                name="asyncjobs_blocked_idx",
                condition=models.Q(blocked=True),
            ),
            # (Dependents of a job, while they wait for it, are found through a GIN index on
            # depends_on WHERE blocked, created in migration 0004: Django's GinIndex needs
            # django.contrib.postgres in INSTALLED_APPS.)
            # Purge and retention: finished jobs by age.
            models.Index(
                fields=["finished_at"],
                name="asyncjobs_finished_idx",
                condition=models.Q(status__in=["succeeded", "failed", "cancelled"]),
            ),
            # Admin and commands: list by status / name / queue, newest first.
            models.Index(fields=["status", "-created_at"], name="asyncjobs_status_idx"),
            models.Index(fields=["name", "-created_at"], name="asyncjobs_name_idx"),
            models.Index(fields=["queue", "-created_at"], name="asyncjobs_queue_idx"),
            models.Index(fields=["-created_at"], name="asyncjobs_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        """Return whether the job has reached a status it never leaves on its own."""
        return self.status in FINAL_STATUSES

    @property
    def cancel_requested(self) -> bool:
        """Return whether an operator asked to cancel the job (read by the retry decision)."""
        return self.cancel_requested_at is not None


class PeriodicSchedule(models.Model):
    """The state of one periodic schedule: its next occurrence, and the last one enqueued.

    Rows are created by the scheduler from ``@job(cron=...)`` and ``ASYNCJOBS["PERIODIC_JOBS"]``;
    the scheduler advances ``next_run_at`` in the transaction that enqueues the occurrence.
    """

    key = models.CharField(_("key"), max_length=255, unique=True)
    name = models.CharField(_("job name"), max_length=255)
    cron = models.CharField(_("cron"), max_length=120)
    timezone = models.CharField(_("time zone"), max_length=64, default="UTC")
    last_run_at = models.DateTimeField(_("last run at"), null=True, blank=True)
    last_job_id = models.UUIDField(_("last job"), null=True, blank=True)
    next_run_at = models.DateTimeField(_("next run at"))
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        db_table = "asyncjobs_periodic"
        verbose_name = _("periodic schedule")
        verbose_name_plural = _("periodic schedules")
        ordering = ["key"]
        indexes = [models.Index(fields=["next_run_at"], name="asyncjobs_periodic_next_idx")]

    def __str__(self) -> str:
        return f"{self.key} ({self.cron} {self.timezone})"


class RegisteredJob(models.Model):
    """A job name some scheduler or worker has registered: what SQL enqueueing checks against.

    ``asyncjobs_enqueue()`` (the SQL function) refuses names missing here once the table holds
    any; runschedulers write their registry at start.
    """

    name = models.CharField(_("name"), max_length=255, primary_key=True)
    seen_at = models.DateTimeField(_("last seen at"))
    # What asyncjobs_enqueue() copies onto the rows it inserts, as delay() does from the code.
    at_most_once = models.BooleanField(_("at most once"), default=False)

    class Meta:
        db_table = "asyncjobs_registered"
        verbose_name = _("registered job name")
        verbose_name_plural = _("registered job names")

    def __str__(self) -> str:
        return self.name


class QueueState(models.Model):
    """An operator's pause of one queue, kept until it is resumed (restarts included).

    While ``paused``, the scheduler sends none of the queue's jobs and workers start none: a
    message already in SQS puts its job back to ``scheduled``. Jobs stay ``scheduled`` and are
    sent when the queue is resumed. Rows change only through ``QueueState.objects.pause()`` and
    ``resume()`` (or :mod:`django_asyncjobs.queues`); a queue without a row is not paused.

    Example::

        QueueState.objects.pause("emails", by="alice", reason="mail provider down")
        QueueState.objects.resume("emails", by="alice")
    """

    name = models.CharField(_("queue"), max_length=80, primary_key=True)
    paused = models.BooleanField(_("paused"), default=False)
    paused_at = models.DateTimeField(_("paused at"), null=True, blank=True)
    paused_by = models.CharField(_("paused by"), max_length=255, blank=True, default="")
    reason = models.TextField(_("reason"), blank=True, default="")
    # Kept after a resume, with the pause it ended: an operator who finds a queue draining a
    # backlog can see who let it go, and when.
    resumed_at = models.DateTimeField(_("resumed at"), null=True, blank=True)
    resumed_by = models.CharField(_("resumed by"), max_length=255, blank=True, default="")

    objects = QueueStateManager()

    class Meta:
        db_table = "asyncjobs_queue_state"
        verbose_name = _("queue state")
        verbose_name_plural = _("queue states")
        ordering = ["name"]
        # Rows change only through pause() and resume(): add/change/delete would be misleading.
        default_permissions = ()
        permissions = [("pause_queue", "Can pause and resume queues")]

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """Say whether the queue is paused, since when, by whom and why, in one line.

        >>> import datetime as dt
        >>> QueueState(name="emails", paused=True, paused_by="alice", reason="SMTP down",
        ...     paused_at=dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.UTC)).describe()
        "queue 'emails' is paused since 2026-05-01 09:30:00 UTC by alice: SMTP down"
        """
        if not self.paused:
            if self.resumed_at is None:
                return f"queue {self.name!r} is not paused"
            return (
                f"queue {self.name!r} is not paused (resumed {_moment(self.resumed_at)}"
                f"{_by(self.resumed_by)})"
            )
        note = f"queue {self.name!r} is paused since {_moment(self.paused_at)}{_by(self.paused_by)}"
        return f"{note}: {self.reason}" if self.reason else note

    def as_json(self) -> dict[str, str | None]:
        """Return the pause as JSON (the HTTP API's and ``asyncjobs list --json``'s form)."""
        return {
            "since": self.paused_at.isoformat() if self.paused_at else None,
            "by": self.paused_by,
            "reason": self.reason,
            "message": self.describe(),
        }


def _moment(moment: dt.datetime | None) -> str:
    """Return *moment* in the current time zone, to the second, with the zone's name."""
    if moment is None:
        return "an unknown time"
    if settings.USE_TZ and timezone.is_aware(moment):
        moment = timezone.localtime(moment)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").rstrip()


def _by(who: str) -> str:
    return f" by {who}" if who else ""


class AttemptOutcome(models.TextChoices):
    """How one attempt ended (empty while it runs)."""

    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    TIMED_OUT = "timed out", _("timed out")
    LOST = "lost", _("worker lost")
    INTERRUPTED = "interrupted", _("interrupted")
    CANCELLED = "cancelled", _("cancelled")


class JobAttempt(models.Model):
    """One attempt of a job: which worker, when, and how it ended.

    Written by the same statements that claim a job and record its outcome, so a retried job's
    earlier failures stay visible after the row itself moved on.
    """

    # No index of its own: asyncjobs_attempt_job_idx (job, started_at) serves every lookup by
    # job, the cascade of a purge included, and each claim writes one index entry fewer.
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="attempt_history", db_index=False
    )
    number = models.PositiveIntegerField(_("attempt"))
    worker = models.CharField(_("worker"), max_length=255)
    started_at = models.DateTimeField(_("started at"))
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    outcome = models.CharField(
        _("outcome"), max_length=16, choices=AttemptOutcome.choices, blank=True, default=""
    )
    error = models.TextField(_("error"), blank=True, default="")
    traceback = models.TextField(_("traceback"), blank=True, default="")

    class Meta:
        db_table = "asyncjobs_attempt"
        verbose_name = _("attempt")
        verbose_name_plural = _("attempts")
        ordering = ["started_at"]
        indexes = [
            models.Index(fields=["job", "started_at"], name="asyncjobs_attempt_job_idx"),
            # The relay's count of recent starts for rate limits.
            models.Index(fields=["started_at"], name="asyncjobs_attempt_start_idx"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.job_id} ({self.outcome or 'running'})"


class ProcessKind(models.TextChoices):
    """What a registered process does."""

    WORKER = "worker", _("worker")
    SCHEDULER = "scheduler", _("scheduler")


class Process(models.Model):
    """A running ``runworker`` worker process or ``runscheduler``: who consumes, who relays.

    Each one writes its row when it starts, stamps ``heartbeat_at`` as it goes, and deletes the
    row when it stops cleanly. A row whose heartbeat is older than ``STALE_AFTER_SECONDS`` is a
    dead process (killed, or its machine lost); the scheduler deletes such rows a day later.
    The jobs a process runs now are the running jobs whose ``worker`` is its ``name``: they
    are read from the job rows, never copied here. Rows change through
    :class:`~django_asyncjobs.queries.ProcessManager`.

    Example::

        Process.objects.live().filter(kind=ProcessKind.SCHEDULER).exists()
    """

    # Chosen by the process, so that registering again (after a failed write, or after its
    # row was pruned) is the same idempotent statement as a heartbeat.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(_("kind"), max_length=16, choices=ProcessKind.choices)
    name = models.CharField(
        _("name"), max_length=255, help_text=_("How job rows name it (host:pid for workers).")
    )
    host = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("pid"))
    queues = models.JSONField(
        _("queues"),
        default=list,
        blank=True,
        help_text=_("Queue names and glob patterns a worker consumes, highest priority first."),
    )
    concurrency = models.PositiveIntegerField(
        _("concurrency"), null=True, blank=True, help_text=_("Jobs a worker runs at once.")
    )
    version = models.CharField(
        _("version"), max_length=40, help_text=_("The django-asyncjobs version it runs.")
    )
    started_at = models.DateTimeField(_("started at"))
    heartbeat_at = models.DateTimeField(_("heartbeat at"))

    objects = ProcessManager()

    if TYPE_CHECKING:
        # Only on rows of ``Process.objects.get_queryset().with_state()``.
        alive: bool
        running_jobs: list[dict[str, Any]]

    class Meta:
        db_table = "asyncjobs_process"
        verbose_name = _("process")
        verbose_name_plural = _("processes")
        ordering = ["kind", "host", "pid"]
        indexes = [
            # "Is a scheduler alive", "which workers are alive", and pruning the dead.
            models.Index(fields=["kind", "heartbeat_at"], name="asyncjobs_process_beat_idx")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"
