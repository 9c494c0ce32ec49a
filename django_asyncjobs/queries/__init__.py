"""Every state transition of a job, each one conditional SQL statement that reports what it did.

This module is the only place that changes a job's status. Each transition names the status (and,
for workers, the lease) it expects, so a transition that lost a race changes nothing and says so.
Times come from the database's ``now()``, never from the clock of the calling machine.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, OperationalError, connections, models, router, transaction
from django.db.models.functions import Now

from .. import signals
from ..fields import BoundedDateTimeField
from ..status import FINAL_STATUSES, JobStatus
from ..timebounds import EARLIEST_TIMESTAMP, LATEST_SQL, LATEST_TIMESTAMP, clamp_sql

if TYPE_CHECKING:
    from ..execution import Outcome
    from ..models import Job
    from ..retry import Backoff

logger = logging.getLogger(__name__)

#: LISTEN/NOTIFY channel that wakes the scheduler when jobs are written.
NOTIFY_CHANNEL = "asyncjobs"
#: Statuses of a job that holds its unique key.
ACTIVE_STATUSES = (JobStatus.SCHEDULED.value, JobStatus.QUEUED.value, JobStatus.RUNNING.value)
_ACTIVE_SQL = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)
_LOCK_NOT_AVAILABLE = "55P03"
#: How the error of a job waiting for a worker that knows its name begins; the claim that
#: finally starts the job clears such a note (and only such a note).
WAITING_NOTE_PREFIX = "Waiting: "


@dataclass(frozen=True, slots=True, kw_only=True)
class DueJob:
    """A job the scheduler has locked and stamped ``queued``, ready to be sent."""

    id: uuid.UUID
    name: str
    queue: str
    priority: int
    dispatch_token: uuid.UUID


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayResult:
    """What one relay pass did: jobs sent, and jobs put back because their send failed."""

    sent: int
    put_back: int


class ClaimOutcome(Enum):
    """Why a claim did or did not give the worker a job to run."""

    CLAIMED = "claimed"
    #: The message is stale or not ours: done, cancelled, re-dispatched, or an unknown id.
    NOT_CLAIMABLE = "not claimable"
    #: The job's name is not registered in this worker; a newer worker may know it.
    NOT_REGISTERED = "not registered"
    #: The row is still locked (the scheduler has not committed yet); try again shortly.
    BUSY = "busy"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    """The outcome of :meth:`JobManager.claim`; ``job`` is set only when ``CLAIMED``."""

    outcome: ClaimOutcome
    reason: str = ""
    job: Job | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OverdueJob:
    """A running job that outlived its timeout (plus slack): its worker process must be ended."""

    job_id: uuid.UUID
    worker: str
    timeout_seconds: float


#: The attempt history (models.JobAttempt), written by the statements that claim and finish.
ATTEMPT_TABLE = "asyncjobs_attempt"
_CLOSE_ATTEMPT_SQL = f"""
    closed AS (
        UPDATE {ATTEMPT_TABLE} AS a
        SET finished_at = now(), outcome = %s, error = %s, traceback = changed.traceback
        FROM changed WHERE a.job_id = changed.id AND a.finished_at IS NULL
    )"""


#: True while one of the job ids in ``{depends_on}`` has not succeeded, or has no row at all (it
#: was deleted): a missing dependency must never count as a succeeded one. One parameter: the
#: succeeded status.
_UNMET_DEPENDENCY_SQL = """EXISTS (
    SELECT 1 FROM unnest({depends_on}) AS dep(id) WHERE NOT EXISTS (
        SELECT 1 FROM {table} AS d WHERE d.id = dep.id AND d.status = %s))"""


def attempt_outcome(error: str) -> str:
    """Return the attempt outcome an error text records: timed out, lost, or failed."""
    if error.startswith("JobTimeout"):
        return "timed out"
    if error.startswith("WorkerLost"):
        return "lost"
    return "failed"


def uuid_prefix_range(text: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """Return the smallest and largest UUID starting with *text* (4+ hex digits), else None.

    >>> uuid_prefix_range("6f87d6b4")[0]
    UUID('6f87d6b4-0000-0000-0000-000000000000')
    """
    digits = text.replace("-", "").lower()
    if not 4 <= len(digits) <= 32:
        return None
    if any(c not in "0123456789abcdef" for c in digits):
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


def _table(model: type[models.Model]) -> str:
    return connections[router.db_for_write(model)].ops.quote_name(model._meta.db_table)


def _columns(model: type[models.Model], *, prefix: str = "") -> str:
    """Return the select list of every column of *model*, for raw() statements.

    ``run_at`` is clamped as :class:`~django_asyncjobs.fields.BoundedDateTimeField` clamps it
    for the ORM, so cancelling or retrying a row stored outside the range still works.
    """
    return ", ".join(
        f"{clamp_sql(f'{prefix}{f.column}')} AS {f.column}"
        if isinstance(f, BoundedDateTimeField)
        else f"{prefix}{f.column}"
        for f in model._meta.concrete_fields
    )


#: No delay is longer than this: from any storable time it ends past the latest one.
_LONGEST_DELAY_SECONDS = (LATEST_TIMESTAMP - EARLIEST_TIMESTAMP).total_seconds()


def storable_delay_seconds(seconds: float) -> float:
    """Return *seconds* as a delay PostgreSQL can add to ``now()``: NaN and negatives are 0,
    and anything longer than the whole storable range is cut to that range.

    Multiplying an interval by 1e300 fails ("interval out of range") before a ``LEAST()``
    around the sum could cap it, so the cap is applied here as well.

    >>> storable_delay_seconds(float("inf")) == _LONGEST_DELAY_SECONDS
    True
    """
    if not seconds > 0:  # also NaN
        return 0.0
    return min(float(seconds), _LONGEST_DELAY_SECONDS)


class JobQuerySet(models.QuerySet["Job"]):
    """Read-side helpers for jobs."""

    def with_id_prefix(self, prefix: str) -> JobQuerySet:
        """Return jobs whose id starts with *prefix* (4+ hex digits), by a primary-key range.

        >>> Job.objects.get_queryset().with_id_prefix("6f87d6b4")
        """
        bounds = uuid_prefix_range(prefix)
        if bounds is None:
            raise ValueError(f"{prefix!r} is not a job id or an id prefix of 4+ hex digits")
        return self.filter(id__gte=bounds[0], id__lte=bounds[1])

    def due(self) -> JobQuerySet:
        """Return scheduled jobs whose ``run_at`` has passed, by the database's clock."""
        return self.filter(status=JobStatus.SCHEDULED, run_at__lte=Now())


class JobManager(models.Manager["Job"]):
    """``Job.objects``: queries plus every state transition of a job."""

    def get_queryset(self) -> JobQuerySet:
        return JobQuerySet(self.model, using=self._db)

    def due(self) -> JobQuerySet:
        """Return scheduled jobs that are due now."""
        return self.get_queryset().due()

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def _db_alias(self) -> str:
        return self._db or router.db_for_write(self.model)

    def _returning(self, sql: str, params: Sequence[Any]) -> Job | None:
        """Run a statement ending in ``RETURNING <all columns>`` and return the row as a Job."""
        rows = self._returning_many(sql, params)
        return rows[0] if rows else None

    def _returning_many(self, sql: str, params: Sequence[Any]) -> list[Job]:
        """Run a statement ending in ``RETURNING <all columns>`` and return the rows as Jobs."""
        return list(self.model._default_manager.raw(sql, params).using(self._db_alias))

    # -- enqueue ---------------------------------------------------------------------------------

    def enqueue(
        self,
        *,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        queue: str,
        priority: int,
        max_retries: int,
        timeout_seconds: float | None,
        run_after: dt.timedelta | dt.datetime | None = None,
        unique_key: str | None = None,
        depends_on: Sequence[uuid.UUID] = (),
        at_most_once: bool = False,
        task_backend: str = "",
    ) -> Job:
        """Insert one ``scheduled`` job and NOTIFY the scheduler, in one statement.

        See :meth:`enqueue_many`; with a *unique_key* that an active job holds, that job is
        returned instead.
        """
        (job,) = self.enqueue_many(
            name=name,
            arguments=[(args, kwargs)],
            unique_keys=[unique_key],
            queue=queue,
            priority=priority,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            run_after=run_after,
            depends_on=depends_on,
            at_most_once=at_most_once,
            task_backend=task_backend,
        )
        return job

    def enqueue_many(
        self,
        *,
        name: str,
        arguments: Sequence[tuple[list[Any], dict[str, Any]]],
        queue: str,
        priority: int,
        max_retries: int,
        timeout_seconds: float | None,
        run_after: dt.timedelta | dt.datetime | None = None,
        unique_keys: Sequence[str | None] | None = None,
        depends_on: Sequence[uuid.UUID] = (),
        at_most_once: bool = False,
        task_backend: str = "",
    ) -> list[Job]:
        """Insert ``scheduled`` jobs, one per ``(args, kwargs)``, with one statement and one NOTIFY.

        The statement joins the caller's transaction: the jobs exist, and the scheduler wakes, only
        if that transaction commits. Nothing here talks to SQS. Arguments must already be checked
        (see :func:`django_asyncjobs.payload.check_arguments`). A job whose unique key an active
        (scheduled, queued or running) job holds is not inserted: that job is returned in its
        place. Jobs with *depends_on* stay ``scheduled`` and blocked until every dependency has
        succeeded; a dependency that does not exist raises :class:`ValueError`. *at_most_once* is
        stored on the rows, so that every rescue path reads the policy without the job's code.
        """
        keys = list(unique_keys) if unique_keys is not None else [None] * len(arguments)
        if len(keys) != len(arguments):
            raise ValueError("unique_keys must have one entry per job")
        dependencies = list(dict.fromkeys(depends_on))
        if dependencies:
            self._check_dependencies(dependencies)
        jobs: dict[int, Job] = {}
        pending = list(range(len(arguments)))
        for _ in range(3):
            inserted = self._insert(
                name=name,
                rows=[(arguments[i][0], arguments[i][1], keys[i]) for i in pending],
                queue=queue,
                priority=priority,
                max_retries=max_retries,
                timeout_seconds=timeout_seconds,
                run_after=run_after,
                depends_on=dependencies,
                at_most_once=at_most_once,
                task_backend=task_backend,
            )
            for position, job in zip(pending, inserted, strict=True):
                if job is not None:
                    jobs[position] = job
            pending = [i for i in pending if i not in jobs]
            if not pending:
                break
            active = {
                job.unique_key: job
                for job in self.filter(
                    unique_key__in={keys[i] for i in pending}, status__in=ACTIVE_STATUSES
                )
            }
            for i in pending:
                if keys[i] in active:
                    jobs[i] = active[keys[i]]
            # A key whose active job finished meanwhile is free again: insert once more.
            pending = [i for i in pending if i not in jobs]
            if not pending:
                break
        if pending:
            raise RuntimeError(f"could not enqueue {len(pending)} unique jobs; keys kept changing")
        if dependencies:
            self.cancel_orphans()
        return [jobs[i] for i in range(len(arguments))]

    def _check_dependencies(self, dependencies: list[uuid.UUID]) -> None:
        found = set(self.filter(id__in=dependencies).values_list("id", flat=True))
        missing = [str(d) for d in dependencies if d not in found]
        if missing:
            raise ValueError(f"depends_on names jobs that do not exist: {', '.join(missing)}")

    def _insert(
        self,
        *,
        name: str,
        rows: list[tuple[list[Any], dict[str, Any], str | None]],
        queue: str,
        priority: int,
        max_retries: int,
        timeout_seconds: float | None,
        run_after: dt.timedelta | dt.datetime | None,
        depends_on: list[uuid.UUID],
        at_most_once: bool,
        task_backend: str,
    ) -> list[Job | None]:
        """Insert *rows*; return the new jobs in order, ``None`` where a unique key was taken."""
        run_at_params: list[Any]
        if isinstance(run_after, dt.datetime):
            run_at_sql, run_at_params = "%s", [run_after]
        elif isinstance(run_after, dt.timedelta):
            run_at_sql = "now() + %s * interval '1 second'"
            run_at_params = [run_after.total_seconds()]
        else:
            run_at_sql, run_at_params = "now()", []
        table = _table(self.model)
        if depends_on:
            # A dependency deleted since _check_dependencies() keeps the job blocked (and
            # cancel_orphans() then cancels it); it never counts as succeeded.
            blocked_sql = _UNMET_DEPENDENCY_SQL.format(table=table, depends_on="%s::uuid[]")
            blocked_params: list[Any] = [depends_on, JobStatus.SUCCEEDED.value]
        else:
            blocked_sql, blocked_params = "false", []
        ids = [uuid.uuid4() for _ in rows]
        sql = f"""
            WITH inserted AS (
                INSERT INTO {table} (
                    id, name, args, kwargs, queue, priority, status, run_at, attempts,
                    interruptions, max_retries, at_most_once, refused_deliveries, timeout, error,
                    traceback, created_at, worker, task_backend, unique_key, depends_on, blocked
                )
                SELECT r.id, %s, r.a::jsonb, r.k::jsonb, %s, %s, %s, {run_at_sql}, 0,
                    0, %s, %s, 0, %s, '', '', now(), '', %s,
                    r.unique_key, %s::uuid[], {blocked_sql}
                FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[])
                    WITH ORDINALITY AS r(id, a, k, unique_key, n)
                ORDER BY r.n
                ON CONFLICT (unique_key) WHERE status IN ({_ACTIVE_SQL}) DO NOTHING
                RETURNING id, created_at, run_at, blocked
            )
            -- One row: created_at, run_at and blocked are the same for every row (now() is the
            -- transaction's time), and a large batch should not parse them a million times.
            SELECT array_agg(id), max(created_at), max(run_at), bool_or(blocked),
                (SELECT pg_notify(%s, '') FROM inserted LIMIT 1) FROM inserted
        """
        params = [
            name,
            queue,
            priority,
            JobStatus.SCHEDULED.value,
            *run_at_params,
            max_retries,
            at_most_once,
            timeout_seconds,
            task_backend,
            depends_on,
            *blocked_params,
            ids,
            [json.dumps(args) for args, _, _ in rows],
            [json.dumps(kwargs) for _, kwargs, _ in rows],
            [key for _, _, key in rows],
            NOTIFY_CHANNEL,
        ]
        with connections[self._db_alias].cursor() as cursor:
            cursor.execute(sql, params)
            inserted_ids, created_at, run_at, blocked, _ = cursor.fetchone()
        stored = set(inserted_ids or ())
        # Model.from_db with every field in order takes Django's fast positional path.
        fields = self._field_names()
        common = {
            "name": name,
            "queue": queue,
            "priority": priority,
            "status": JobStatus.SCHEDULED.value,
            "run_at": run_at,
            "attempts": 0,
            "interruptions": 0,
            "max_retries": max_retries,
            "at_most_once": at_most_once,
            "refused_deliveries": 0,
            "timeout": timeout_seconds,
            "task_backend": task_backend,
            "created_at": created_at,
            "depends_on": depends_on,
            "blocked": bool(blocked),
            "error": "",
            "traceback": "",
            "worker": "",
        }
        jobs: list[Job | None] = []
        for job_id, (args, kwargs, key) in zip(ids, rows, strict=True):
            if job_id not in stored:
                jobs.append(None)
                continue
            values = {**common, "id": job_id, "args": args, "kwargs": kwargs, "unique_key": key}
            jobs.append(self.model.from_db(self._db_alias, fields, [values.get(f) for f in fields]))
        signals.send_many_after_commit(
            [job for job in jobs if job is not None],
            old_status=None,
            signal=signals.job_enqueued,
            using=self._db_alias,
        )
        return jobs

    def _field_names(self) -> list[str]:
        return [field.attname for field in self.model._meta.concrete_fields]

    # -- dependencies ----------------------------------------------------------------------------

    def _wake_dependents_sql(self) -> str:
        """SQL for a select list over ``changed`` rows: NOTIFY the scheduler (one parameter, the
        channel) only when a changed job has blocked dependents, which its next pass releases or
        cancels. Finishing jobs without dependents wakes nobody."""
        return f"""(SELECT pg_notify(%s, '') WHERE EXISTS (
            SELECT 1 FROM {_table(self.model)} AS dependent
            WHERE dependent.blocked AND dependent.depends_on @> ARRAY[changed.id]))"""

    def release_ready(self) -> int:
        """Unblock scheduled jobs whose dependencies all exist and have succeeded; return how many.

        A dependency whose row was deleted is not a success: its dependents stay blocked, and
        :meth:`cancel_orphans` cancels them.
        """
        table = _table(self.model)
        unmet = _UNMET_DEPENDENCY_SQL.format(table=table, depends_on="j.depends_on")
        sql = f"""
            UPDATE {table} AS j SET blocked = false, run_at = greatest(j.run_at, now())
            WHERE j.blocked AND j.status = %s AND NOT {unmet}
        """
        with connections[self._db_alias].cursor() as cursor:
            cursor.execute(sql, [JobStatus.SCHEDULED.value, JobStatus.SUCCEEDED.value])
            return int(cursor.rowcount)

    def cancel_orphans(self) -> int:
        """Cancel blocked jobs one of whose dependencies failed, was cancelled or was deleted;
        return how many.

        The error names the dependency: ``Cancelled: dependency <id> (<name>) failed``, or
        ``Cancelled: dependency <id> was deleted``. Each cancelled job sends ``job_cancelled``.
        Repeats until no more change, so a chain a -> b -> c is cancelled to its end.
        """
        table = _table(self.model)
        sql = f"""
            WITH doomed AS (
                SELECT j.id, coalesce((
                    SELECT d.id::text || ' (' || d.name || ') ' || d.status FROM {table} AS d
                    WHERE d.id = ANY(j.depends_on) AND d.status IN (%s, %s) LIMIT 1
                ), (
                    SELECT dep.id::text || ' was deleted' FROM unnest(j.depends_on) AS dep(id)
                    WHERE NOT EXISTS (SELECT 1 FROM {table} AS d WHERE d.id = dep.id) LIMIT 1
                )) AS reason
                FROM {table} AS j
                WHERE j.blocked AND j.status = %s
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE {table} AS j
            SET status = %s, blocked = false, finished_at = now(),
                error = 'Cancelled: dependency ' || doomed.reason
            FROM doomed WHERE j.id = doomed.id AND doomed.reason IS NOT NULL
            RETURNING {_columns(self.model, prefix="j.")}
        """
        total = 0
        while True:
            jobs = list(
                self.model._default_manager.raw(
                    sql,
                    [
                        JobStatus.FAILED.value,
                        JobStatus.CANCELLED.value,
                        JobStatus.SCHEDULED.value,
                        JobStatus.CANCELLED.value,
                    ],
                ).using(self._db_alias)
            )
            for job in jobs:
                signals.send_after_commit(
                    job,
                    old_status=JobStatus.SCHEDULED,
                    signal=signals.job_cancelled,
                    using=self._db_alias,
                )
            total += len(jobs)
            if not jobs:
                return total

    def waiting_for(self, ids: Collection[uuid.UUID], *, limit: int = 100) -> list[Job]:
        """Return blocked jobs, not themselves in *ids*, that wait for one of *ids* to succeed.

        Oldest first, at most *limit*. Deleting one of *ids* would cancel these jobs (see
        :meth:`cancel_orphans`); the admin refuses such a delete and names them.
        """
        if not ids:
            return []
        sql = f"""
            SELECT {_columns(self.model)} FROM {_table(self.model)}
            WHERE blocked AND status = %s AND depends_on && %s::uuid[] AND NOT id = ANY(%s)
            ORDER BY created_at LIMIT %s
        """
        wanted = list(ids)
        return self._returning_many(sql, [JobStatus.SCHEDULED.value, wanted, wanted, limit])

    # -- scheduler -------------------------------------------------------------------------------

    def due_queues(self) -> list[str]:
        """Return the queues that have due scheduled jobs, without reading every due row.

        A loose index scan: one index probe per queue, however deep the backlog.
        """
        table = _table(self.model)
        sql = f"""
            WITH RECURSIVE queues AS (
                (SELECT queue FROM {table} WHERE status = %s AND NOT blocked AND run_at <= now()
                 ORDER BY queue LIMIT 1)
                UNION ALL
                SELECT (SELECT j.queue FROM {table} AS j
                        WHERE j.status = %s AND NOT j.blocked AND j.run_at <= now()
                            AND j.queue > queues.queue
                        ORDER BY j.queue LIMIT 1)
                FROM queues WHERE queues.queue IS NOT NULL
            )
            SELECT queue FROM queues WHERE queue IS NOT NULL
        """
        with connections[self._db_alias].cursor() as cursor:
            cursor.execute(sql, [JobStatus.SCHEDULED.value, JobStatus.SCHEDULED.value])
            return [row[0] for row in cursor.fetchall()]

    def queued_counts(self) -> dict[str, int]:
        """Return, per queue, how many jobs were sent and not yet started."""
        rows = (
            self.filter(status=JobStatus.QUEUED)
            .order_by()
            .values_list("queue")
            .annotate(n=models.Count("id"))
        )
        return dict(rows)

    def relay_due(
        self,
        *,
        queue: str,
        limit: int,
        send: Callable[[list[DueJob]], set[uuid.UUID]],
    ) -> RelayResult:
        """Lock up to *limit* due jobs of *queue*, mark them ``queued`` with a new token, send,
        then commit.

        *send* receives the jobs highest priority first and returns the ids it could not send;
        those are put back to ``scheduled`` before the commit. If *send* raises, nothing changes.
        Rows locked by another scheduler are skipped, so several schedulers never send a job twice.
        A worker that receives a message before this commits waits on the row lock.
        """
        table = _table(self.model)
        sql = f"""
            WITH due AS (
                SELECT id FROM {table}
                WHERE status = %s AND NOT blocked AND queue = %s AND run_at <= now()
                ORDER BY priority DESC, run_at
                LIMIT %s
                FOR UPDATE SKIP LOCKED
            )
            UPDATE {table} AS j
            SET status = %s, dispatch_token = gen_random_uuid(), enqueued_at = now()
            FROM due WHERE j.id = due.id
            RETURNING j.id, j.name, j.queue, j.priority, {clamp_sql("j.run_at")}, j.dispatch_token
        """
        alias = self._db_alias
        with transaction.atomic(using=alias):
            with connections[alias].cursor() as cursor:
                cursor.execute(
                    sql, [JobStatus.SCHEDULED.value, queue, limit, JobStatus.QUEUED.value]
                )
                rows = cursor.fetchall()
            if not rows:
                return RelayResult(sent=0, put_back=0)
            # RETURNING has no order; send in the order the jobs should start.
            rows.sort(key=lambda r: (-r[3], r[4]))
            due = [
                DueJob(id=r[0], name=r[1], queue=r[2], priority=r[3], dispatch_token=r[5])
                for r in rows
            ]
            # If send raises, the rollback keeps every row scheduled; a message that did get out
            # carries a token that never committed, so no worker can claim with it.
            failed = send(due)
            if failed:
                with connections[alias].cursor() as cursor:
                    cursor.execute(
                        f"UPDATE {table} SET status = %s, dispatch_token = NULL, "
                        f"enqueued_at = NULL WHERE id = ANY(%s)",
                        [JobStatus.SCHEDULED.value, list(failed)],
                    )
            sent_ids = [d.id for d in due if d.id not in failed]
            if sent_ids and signals.has_listeners():
                for job in self.filter(id__in=sent_ids):
                    signals.send_after_commit(job, old_status=JobStatus.SCHEDULED, using=alias)
        return RelayResult(sent=len(sent_ids), put_back=len(failed))

    def seconds_until_next_due(self) -> float | None:
        """Return how long until the next scheduled job is due (0 if overdue), or ``None``."""
        sql = (
            f"SELECT EXTRACT(EPOCH FROM (min(run_at) - now())) FROM {_table(self.model)} "
            f"WHERE status = %s AND NOT blocked"
        )
        with connections[self._db_alias].cursor() as cursor:
            cursor.execute(sql, [JobStatus.SCHEDULED.value])
            (seconds,) = cursor.fetchone()
        return None if seconds is None else max(0.0, float(seconds))

    # -- worker ----------------------------------------------------------------------------------

    def claim(
        self,
        *,
        job_id: uuid.UUID,
        dispatch_token: uuid.UUID,
        worker: str,
        registered_names: Collection[str],
        lock_timeout_seconds: float,
    ) -> ClaimResult:
        """Take one ``queued`` job for *worker*; see :meth:`claim_many`."""
        (result,) = self.claim_many(
            [(job_id, dispatch_token)],
            worker=worker,
            registered_names=registered_names,
            lock_timeout_seconds=lock_timeout_seconds,
        )
        return result

    def claim_many(
        self,
        messages: Sequence[tuple[uuid.UUID, uuid.UUID]],
        *,
        worker: str,
        registered_names: Collection[str],
        lock_timeout_seconds: float,
    ) -> list[ClaimResult]:
        """Take ``queued`` jobs for *worker*, one statement for all: ``running``, attempts + 1, a
        new lease token each. Returns one result per ``(job_id, dispatch_token)`` of *messages*.

        A claim succeeds only while the message's dispatch token is the job's current one, so a
        duplicate or stale message claims nothing. Waits at most *lock_timeout_seconds* for rows
        the scheduler has locked and not committed yet (outcome ``BUSY``).

        >>> [r.outcome for r in Job.objects.claim_many([(job.id, token)], worker="w1", ...)]
        [<ClaimOutcome.CLAIMED: 'claimed'>]
        """
        if not messages:
            return []
        table = _table(self.model)
        ids = [job_id for job_id, _ in messages]
        sql = f"""
            WITH changed AS (
                UPDATE {table} AS j
                SET status = %s, attempts = j.attempts + 1, started_at = now(),
                    heartbeat_at = now(), finished_at = NULL, worker = %s, progress = NULL,
                    lease_token = gen_random_uuid(),
                    error = CASE WHEN starts_with(j.error, %s) THEN '' ELSE j.error END
                FROM unnest(%s::uuid[], %s::uuid[]) AS m(id, dispatch_token)
                WHERE j.id = m.id AND j.status = %s AND j.dispatch_token = m.dispatch_token
                    AND j.name = ANY(%s)
                RETURNING j.*
            ), opened AS (
                INSERT INTO {ATTEMPT_TABLE}
                    (job_id, number, worker, started_at, outcome, error, traceback)
                SELECT id, attempts, worker, started_at, '', '', '' FROM changed
            )
            SELECT {_columns(self.model)} FROM changed
        """
        params = [
            JobStatus.RUNNING.value,
            worker,
            WAITING_NOTE_PREFIX,
            ids,
            [token for _, token in messages],
            JobStatus.QUEUED.value,
            list(registered_names),
        ]
        alias = self._db_alias
        try:
            with transaction.atomic(using=alias):
                with connections[alias].cursor() as cursor:
                    cursor.execute(
                        "SELECT set_config('lock_timeout', %s, true)",
                        [f"{max(1, int(lock_timeout_seconds * 1000))}ms"],
                    )
                    # Lock first, in a statement of its own: an UPDATE whose WHERE tests the
                    # status would skip a row the scheduler has locked and not committed yet
                    # (its snapshot still says "scheduled"), instead of waiting for the commit.
                    # In id order, so that two workers never wait for each other.
                    cursor.execute(
                        f"SELECT 1 FROM {table} WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [ids]
                    )
                claimed = {job.id: job for job in self._returning_many(sql, params)}
                # Inside the transaction: once it commits, nothing may raise (a claimed job
                # whose result is lost would stay running, run by nobody, until rescued).
                unclaimed = [(i, t) for i, t in messages if i not in claimed]
                reasons = self._why_not_claimed(unclaimed, registered_names)
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            if len(messages) == 1:
                return [ClaimResult(outcome=ClaimOutcome.BUSY, reason="job row is locked")]
            return self._claim_one_by_one(
                messages,
                worker=worker,
                registered_names=registered_names,
                lock_timeout_seconds=lock_timeout_seconds,
            )
        results = []
        for job_id, dispatch_token in messages:
            job = claimed.pop(job_id, None)  # pop: a duplicate in the batch is claimed once
            if job is None:
                results.append(
                    reasons.get((job_id, dispatch_token))
                    or ClaimResult(outcome=ClaimOutcome.NOT_CLAIMABLE, reason="duplicate message")
                )
                continue
            signals.send_after_commit(
                job, old_status=JobStatus.QUEUED, signal=signals.job_started, using=alias
            )
            results.append(ClaimResult(outcome=ClaimOutcome.CLAIMED, job=job))
        return results

    def _claim_one_by_one(
        self,
        messages: Sequence[tuple[uuid.UUID, uuid.UUID]],
        *,
        worker: str,
        registered_names: Collection[str],
        lock_timeout_seconds: float,
    ) -> list[ClaimResult]:
        """One locked row must not hold up the others of a batch: claim them one by one.

        Each claim commits on its own, so an error part-way must not lose the ones made: the
        rest are reported ``BUSY`` (their messages come back shortly) instead of raising.
        """
        results: list[ClaimResult] = []
        for message in messages:
            try:
                results += self.claim_many(
                    [message],
                    worker=worker,
                    registered_names=registered_names,
                    lock_timeout_seconds=lock_timeout_seconds,
                )
            except DatabaseError as exc:
                logger.error("cannot claim job_id=%s error=%s", message[0], exc)
                results.append(ClaimResult(outcome=ClaimOutcome.BUSY, reason=str(exc)))
        return results

    def _why_not_claimed(
        self,
        messages: Sequence[tuple[uuid.UUID, uuid.UUID]],
        registered_names: Collection[str],
    ) -> dict[tuple[uuid.UUID, uuid.UUID], ClaimResult]:
        """Say, in one query, why each ``(job_id, dispatch_token)`` claimed nothing."""
        if not messages:
            return {}
        rows = {
            job_id: (status, token, name)
            for job_id, status, token, name in self.filter(
                pk__in=[job_id for job_id, _ in messages]
            ).values_list("id", "status", "dispatch_token", "name")
        }
        reasons = {}
        for job_id, dispatch_token in messages:
            row = rows.get(job_id)
            if row is None:
                result = ClaimResult(outcome=ClaimOutcome.NOT_CLAIMABLE, reason="no such job")
            elif row[0] != JobStatus.QUEUED:
                result = ClaimResult(outcome=ClaimOutcome.NOT_CLAIMABLE, reason=f"job is {row[0]}")
            elif row[1] != dispatch_token:
                result = ClaimResult(
                    outcome=ClaimOutcome.NOT_CLAIMABLE, reason="stale dispatch token"
                )
            elif row[2] not in registered_names:
                result = ClaimResult(
                    outcome=ClaimOutcome.NOT_REGISTERED,
                    reason=f"job name {row[2]!r} is not registered in this worker",
                )
            else:
                result = ClaimResult(
                    outcome=ClaimOutcome.NOT_CLAIMABLE, reason="job changed meanwhile"
                )
            reasons[(job_id, dispatch_token)] = result
        return reasons

    def refuse_unregistered(
        self, *, job_id: uuid.UUID, dispatch_token: uuid.UUID, reason: str, max_deliveries: int
    ) -> Job | None:
        """Count a delivery of a ``queued`` job that a worker could not run (its name is not
        registered there); fail the job at the *max_deliveries*-th.

        The count is the row's ``refused_deliveries``, so it survives the scheduler sending the
        job again in a new message (which restarts SQS's receive count). Until the limit the job
        stays ``queued`` and its error says why it waits (``Waiting: <reason>; refused 2 of 5
        deliveries...``, cleared when a worker starts it); at the limit it is ``failed`` with
        ``<reason>; gave up after 5 deliveries`` and ``job_failed`` is sent. Fenced by
        *dispatch_token*: returns ``None`` (and counts nothing) when the message is stale.
        """
        table = _table(self.model)
        give_up = "refused_deliveries + 1 >= %s"
        sql = f"""
            UPDATE {table}
            SET refused_deliveries = refused_deliveries + 1,
                status = CASE WHEN {give_up} THEN %s ELSE status END,
                finished_at = CASE WHEN {give_up} THEN now() ELSE finished_at END,
                error = CASE WHEN {give_up}
                    THEN %s || '; gave up after ' || (refused_deliveries + 1)::text
                        || ' deliveries'
                    ELSE %s || %s || '; refused ' || (refused_deliveries + 1)::text || ' of '
                        || %s::text || ' deliveries, waiting for a worker that knows it'
                    END,
                traceback = ''
            WHERE id = %s AND status = %s AND dispatch_token = %s
            RETURNING {_columns(self.model)}
        """
        job = self._returning(
            sql,
            [
                max_deliveries,
                JobStatus.FAILED.value,
                max_deliveries,
                max_deliveries,
                reason,
                WAITING_NOTE_PREFIX,
                reason,
                max_deliveries,
                job_id,
                JobStatus.QUEUED.value,
                dispatch_token,
            ],
        )
        if job is not None and job.status == JobStatus.FAILED:
            signals.send_after_commit(
                job, old_status=JobStatus.QUEUED, signal=signals.job_failed, using=self._db_alias
            )
        return job

    def fail_unregistered(
        self, *, job_id: uuid.UUID, dispatch_token: uuid.UUID, error: str
    ) -> Job | None:
        """Fail a ``queued`` job whose name is not registered at once, if *dispatch_token* is
        current (``run_jobs()`` in tests, where no other worker can know the name)."""
        sql = f"""
            UPDATE {_table(self.model)}
            SET status = %s, finished_at = now(), error = %s, traceback = ''
            WHERE id = %s AND status = %s AND dispatch_token = %s
            RETURNING {_columns(self.model)}
        """
        job = self._returning(
            sql, [JobStatus.FAILED.value, error, job_id, JobStatus.QUEUED.value, dispatch_token]
        )
        if job is not None:
            signals.send_after_commit(
                job, old_status=JobStatus.QUEUED, signal=signals.job_failed, using=self._db_alias
            )
        return job

    def record_success(
        self, *, job_id: uuid.UUID, lease_token: uuid.UUID, result: Any
    ) -> Job | None:
        """Mark a running job ``succeeded`` with its JSON *result*, if the lease is still ours.

        Returns ``None`` when the lease was lost (the job was rescued or changed meanwhile): the
        write is discarded so a newer attempt's outcome is never overwritten.
        """
        (job,) = self.record_successes([(job_id, lease_token, result)])
        return job

    def record_successes(
        self, outcomes: Sequence[tuple[uuid.UUID, uuid.UUID, Any]]
    ) -> list[Job | None]:
        """:meth:`record_success` for many ``(job_id, lease_token, result)``, in one statement.

        Each row is fenced by its own lease; returns one entry per outcome, ``None`` where the
        lease was lost.

        >>> Job.objects.record_successes([(job.id, job.lease_token, 5)])
        [<Job: ...>]
        """
        if not outcomes:
            return []
        sql = f"""
            WITH changed AS (
                UPDATE {_table(self.model)} AS j
                SET status = %s, result = m.result, finished_at = now(), error = '',
                    traceback = ''
                FROM unnest(%s::uuid[], %s::uuid[], %s::jsonb[]) AS m(id, lease_token, result)
                WHERE j.id = m.id AND j.status = %s AND j.lease_token = m.lease_token
                RETURNING j.*
            ), {_CLOSE_ATTEMPT_SQL}
            SELECT {_columns(self.model)}, {self._wake_dependents_sql()} FROM changed
        """
        stored = {
            job.id: job
            for job in self._returning_many(
                sql,
                [
                    JobStatus.SUCCEEDED.value,
                    [job_id for job_id, _, _ in outcomes],
                    [lease for _, lease, _ in outcomes],
                    [json.dumps(result) for _, _, result in outcomes],
                    JobStatus.RUNNING.value,
                    "succeeded",
                    "",
                    NOTIFY_CHANNEL,
                ],
            )
        }
        jobs = [stored.get(job_id) for job_id, _, _ in outcomes]
        for job in jobs:
            if job is not None:
                signals.send_after_commit(
                    job,
                    old_status=JobStatus.RUNNING,
                    signal=signals.job_succeeded,
                    using=self._db_alias,
                )
        return jobs

    def record_failure(
        self,
        *,
        job_id: uuid.UUID,
        lease_token: uuid.UUID,
        error: str,
        traceback: str,
        retry_in_seconds: float | None,
        stale_after_seconds: float | None = None,
        lost: bool = False,
    ) -> Job | None:
        """Record a failed attempt: ``scheduled`` again after *retry_in_seconds*, or ``failed``.

        ``retry_in_seconds=None`` means no retry is left. With *lost* (the worker died or went
        silent, so the attempt may have partly run) a job whose row is ``at_most_once`` is failed
        whatever *retry_in_seconds* says: the statement reads the policy from the row, so a
        scheduler or supervisor that does not know the job's name still never runs it twice.
        Fenced by the lease like :meth:`record_success`; returns ``None`` when the lease was
        lost. With *stale_after_seconds* (the scheduler's rescue of a lost worker) it also
        requires the heartbeat to be that old, so a worker that came back in time keeps its job.
        """
        table = _table(self.model)
        # Evaluated against the row as it was before the update (SET sees the old values).
        give_up = "(%s::float8 IS NULL OR (%s AND at_most_once))"
        give_up_params: list[Any] = [retry_in_seconds, lost]
        stale_sql, stale_params = "", []
        if stale_after_seconds is not None:
            stale_sql = "AND heartbeat_at < now() - %s * interval '1 second'"
            stale_params = [stale_after_seconds]
        sql = f"""
            WITH changed AS (
                UPDATE {table}
                SET status = CASE WHEN {give_up} THEN %s ELSE %s END,
                    run_at = CASE WHEN {give_up} THEN run_at
                        -- However long a backoff says to wait, the retry is due by the latest
                        -- time a row may hold (the CHECK constraint would refuse a later one).
                        ELSE LEAST(now() + %s::float8 * interval '1 second', {LATEST_SQL}) END,
                    finished_at = CASE WHEN {give_up} THEN now() END,
                    dispatch_token = NULL, error = %s, traceback = %s, lease_token = NULL
                WHERE id = %s AND status = %s AND lease_token = %s {stale_sql}
                RETURNING *
            ), {_CLOSE_ATTEMPT_SQL}
            SELECT {_columns(self.model)}, pg_notify(%s, '') FROM changed
        """
        job = self._returning(
            sql,
            [
                *give_up_params,
                JobStatus.FAILED.value,
                JobStatus.SCHEDULED.value,
                *give_up_params,
                None if retry_in_seconds is None else storable_delay_seconds(retry_in_seconds),
                *give_up_params,
                error,
                traceback,
                job_id,
                JobStatus.RUNNING.value,
                lease_token,
                *stale_params,
                attempt_outcome(error),
                error,
                NOTIFY_CHANNEL,
            ],
        )
        if job is not None:
            signal = signals.job_failed if job.status == JobStatus.FAILED else signals.job_retrying
            signals.send_after_commit(
                job, old_status=JobStatus.RUNNING, signal=signal, using=self._db_alias
            )
        return job

    def record_outcome(
        self, *, job: Job, lease_token: uuid.UUID, outcome: Outcome, backoff: Backoff
    ) -> Job | None:
        """Record how an attempt of *job* ended: ``succeeded``, ``scheduled`` again after
        *backoff* while retries are left, or ``failed`` for good.

        Fenced by *lease_token*; ``None`` when the lease was lost.

        >>> Job.objects.record_outcome(job=job, lease_token=token, outcome=o, backoff=Backoff())
        <Job: ...>
        """
        if outcome.ok:
            return self.record_success(
                job_id=job.id, lease_token=lease_token, result=outcome.result
            )
        from ..retry import next_retry_seconds

        return self.record_failure(
            job_id=job.id,
            lease_token=lease_token,
            error=outcome.error,
            traceback=outcome.traceback,
            retry_in_seconds=next_retry_seconds(
                attempts=job.attempts, max_retries=job.max_retries, backoff=backoff
            ),
        )

    def hand_back(
        self,
        *,
        job_id: uuid.UUID,
        lease_token: uuid.UUID,
        reason: str,
        free_interruptions: int,
    ) -> Job | None:
        """Give a running job back because its worker is shutting down: due again at once.

        The interruption is counted on the row; the first *free_interruptions* of a job do not
        use up an attempt, later ones do (so a job that outlives every deploy still ends). A job
        whose row is ``at_most_once``, or one whose attempts are used up, is failed instead: the
        policy is read from the row, never from the caller's registry. Fenced by the lease;
        returns ``None`` when the lease was lost.
        """
        sql = f"""
            WITH changed AS (
                UPDATE {_table(self.model)}
                SET status = CASE
                        WHEN at_most_once OR (attempts > max_retries AND interruptions >= %s)
                        THEN %s ELSE %s END,
                    attempts = CASE WHEN interruptions < %s THEN attempts - 1 ELSE attempts END,
                    interruptions = interruptions + 1,
                    run_at = now(), dispatch_token = NULL, lease_token = NULL,
                    finished_at = CASE
                        WHEN at_most_once OR (attempts > max_retries AND interruptions >= %s)
                        THEN now() END,
                    error = %s, traceback = ''
                WHERE id = %s AND status = %s AND lease_token = %s
                RETURNING *
            ), {_CLOSE_ATTEMPT_SQL}
            SELECT {_columns(self.model)}, pg_notify(%s, '') FROM changed
        """
        job = self._returning(
            sql,
            [
                free_interruptions,
                JobStatus.FAILED.value,
                JobStatus.SCHEDULED.value,
                free_interruptions,
                free_interruptions,
                reason,
                job_id,
                JobStatus.RUNNING.value,
                lease_token,
                "interrupted",
                reason,
                NOTIFY_CHANNEL,
            ],
        )
        if job is not None:
            signal = signals.job_failed if job.status == JobStatus.FAILED else None
            signals.send_after_commit(
                job, old_status=JobStatus.RUNNING, signal=signal, using=self._db_alias
            )
        return job

    def stalled(self, *, stale_after_seconds: float) -> list[Job]:
        """Return running jobs whose heartbeat is older than *stale_after_seconds* (DB clock)."""
        return list(
            self.filter(
                status=JobStatus.RUNNING,
                heartbeat_at__lt=Now() - dt.timedelta(seconds=stale_after_seconds),
            ).order_by("heartbeat_at")
        )

    def overdue(
        self, *, workers: Collection[str], timeout_slack_seconds: float
    ) -> list[OverdueJob]:
        """Return running jobs of *workers* still running *timeout_slack_seconds* after their
        timeout, by the database's clock. Read by the supervisor of worker processes.
        """
        if not workers:
            return []
        sql = f"""
            SELECT id, worker, timeout FROM {_table(self.model)}
            WHERE status = %s AND worker = ANY(%s) AND timeout IS NOT NULL
                AND now() > started_at + (timeout + %s) * interval '1 second'
        """
        with connections[self._db_alias].cursor() as cursor:
            cursor.execute(sql, [JobStatus.RUNNING.value, list(workers), timeout_slack_seconds])
            return [
                OverdueJob(job_id=r[0], worker=r[1], timeout_seconds=r[2])
                for r in cursor.fetchall()
            ]

    def resend_lost(self, *, requeue_after_seconds: float) -> int:
        """Put ``queued`` jobs that no worker started within *requeue_after_seconds* back to
        ``scheduled``, due now, so the scheduler sends them again with a new dispatch token.

        Their old message, should it ever arrive, carries a stale token and claims nothing.
        """
        sql = f"""
            WITH changed AS (
                UPDATE {_table(self.model)}
                SET status = %s, run_at = now(), dispatch_token = NULL, enqueued_at = NULL
                WHERE status = %s AND enqueued_at < now() - %s * interval '1 second'
                RETURNING *
            )
            SELECT {_columns(self.model)} FROM changed
        """
        jobs = list(
            self.model._default_manager.raw(
                sql,
                [JobStatus.SCHEDULED.value, JobStatus.QUEUED.value, requeue_after_seconds],
            ).using(self._db_alias)
        )
        for job in jobs:
            signals.send_after_commit(job, old_status=JobStatus.QUEUED, using=self._db_alias)
        return len(jobs)

    def heartbeat(self, leases: Collection[tuple[uuid.UUID, uuid.UUID]]) -> set[uuid.UUID]:
        """Stamp ``heartbeat_at`` on running jobs whose ``(id, lease_token)`` is still current.

        Returns the ids whose lease was lost, so the worker can stop caring about them.
        """
        if not leases:
            return set()
        ids = [job_id for job_id, _ in leases]
        tokens = [token for _, token in leases]
        sql = f"""
            UPDATE {_table(self.model)} AS j SET heartbeat_at = now()
            FROM unnest(%s::uuid[], %s::uuid[]) AS l(id, lease_token)
            WHERE j.id = l.id AND j.lease_token = l.lease_token AND j.status = %s
            RETURNING j.id
        """
        with connections[self._db_alias].cursor() as cursor:
            cursor.execute(sql, [ids, tokens, JobStatus.RUNNING.value])
            alive = {row[0] for row in cursor.fetchall()}
        return set(ids) - alive

    def record_progress(
        self, job_id: uuid.UUID, lease_token: uuid.UUID, progress: dict[str, Any]
    ) -> bool:
        """Store *progress* (plus the time) on a running job while *lease_token* is its lease.

        Returns whether the row was written: ``False`` once the job was rescued or finished.
        """
        sql = f"""
            UPDATE {_table(self.model)}
            SET progress = %s::jsonb || jsonb_build_object('at', now())
            WHERE id = %s AND lease_token = %s AND status = %s
        """
        with connections[self._db_alias].cursor() as cursor:
            cursor.execute(
                sql, [json.dumps(progress), job_id, lease_token, JobStatus.RUNNING.value]
            )
            return cursor.rowcount == 1

    # -- operators -------------------------------------------------------------------------------

    def cancel(self, job_id: uuid.UUID | str) -> Job | None:
        """Cancel a job that has not started (``scheduled`` or ``queued``); ``None`` if it had.

        A message already sent for a queued job is dropped by the worker that receives it.
        """
        sql = f"""
            WITH old AS (SELECT id, status FROM {_table(self.model)} WHERE id = %s FOR UPDATE)
            UPDATE {_table(self.model)} AS j
            SET status = %s, finished_at = now(), dispatch_token = NULL
            FROM old WHERE j.id = old.id AND old.status IN (%s, %s)
            RETURNING {_columns(self.model, prefix="j.")},
                old.status AS old_status, pg_notify(%s, '')
        """
        # The NOTIFY lets the scheduler cancel this job's dependents at once.
        job = self._returning(
            sql,
            [
                job_id,
                JobStatus.CANCELLED.value,
                JobStatus.SCHEDULED.value,
                JobStatus.QUEUED.value,
                NOTIFY_CHANNEL,
            ],
        )
        if job is not None:
            signals.send_after_commit(
                job,
                old_status=getattr(job, "old_status", None),
                signal=signals.job_cancelled,
                using=self._db_alias,
            )
        return job

    def retry(self, job_id: uuid.UUID | str) -> Job | None:
        """Schedule a ``failed`` or ``cancelled`` job to run now with a fresh retry budget.

        Returns ``None`` when the job is in any other status (a running job is never touched),
        or when another active job holds its unique key.
        """
        jobs = self._retry_where("j.id = %s", [job_id], limit=1)
        return jobs[0] if jobs else None

    def mark_succeeded(self, job_id: uuid.UUID | str, *, note: str) -> Job | None:
        """Mark a ``failed``, ``cancelled``, ``scheduled`` or ``queued`` job as succeeded by hand.

        For an operator who fixed the data themselves: the job will not run, its dependents are
        released. Returns ``None`` for a running or already succeeded job.
        """
        table = _table(self.model)
        sql = f"""
            WITH old AS (SELECT id, status FROM {table} WHERE id = %s FOR UPDATE),
            changed AS (
                UPDATE {table} AS j
                SET status = %s, finished_at = now(), error = %s, traceback = '',
                    dispatch_token = NULL, lease_token = NULL, blocked = false
                FROM old WHERE j.id = old.id AND old.status IN (%s, %s, %s, %s)
                RETURNING j.*, old.status AS old_status
            )
            SELECT {_columns(self.model)}, old_status, {self._wake_dependents_sql()} FROM changed
        """
        job = self._returning(
            sql,
            [
                job_id,
                JobStatus.SUCCEEDED.value,
                note,
                JobStatus.FAILED.value,
                JobStatus.CANCELLED.value,
                JobStatus.SCHEDULED.value,
                JobStatus.QUEUED.value,
                NOTIFY_CHANNEL,
            ],
        )
        if job is not None:
            signals.send_after_commit(
                job,
                old_status=getattr(job, "old_status", None),
                signal=signals.job_succeeded,
                using=self._db_alias,
            )
        return job

    def run_again(self, job: Job) -> Job:
        """Enqueue a new job with *job*'s name, arguments, queue, priority and limits."""
        return self.enqueue(
            name=job.name,
            args=job.args,
            kwargs=job.kwargs,
            queue=job.queue,
            priority=job.priority,
            max_retries=job.max_retries,
            timeout_seconds=job.timeout,
            at_most_once=job.at_most_once,
            task_backend=job.task_backend,
        )

    def retry_failed(self, *, name: str | None = None, batch_size: int = 1000) -> Iterator[int]:
        """Retry every ``failed`` job (of *name*), in batches; yield each batch's size.

        Batches are separate statements, so the table is never locked for long.
        """
        while True:
            where, params = "j.status = %s", [JobStatus.FAILED.value]
            if name is not None:
                where, params = where + " AND j.name = %s", [*params, name]
            jobs = self._retry_where(where, params, limit=batch_size)
            if not jobs:
                return
            yield len(jobs)

    def _retry_where(self, where: str, params: list[Any], *, limit: int) -> list[Job]:
        table = _table(self.model)
        sql = f"""
            WITH old AS (
                SELECT j.id, j.status FROM {table} AS j
                WHERE {where} AND j.status IN (%s, %s) AND (
                    j.unique_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM {table} AS a
                        WHERE a.unique_key = j.unique_key AND a.status IN ({_ACTIVE_SQL})
                    )
                )
                LIMIT %s
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE {table} AS j
            SET status = %s, run_at = now(), attempts = 0, interruptions = 0,
                refused_deliveries = 0, finished_at = NULL, dispatch_token = NULL,
                lease_token = NULL, blocked = false
            FROM old WHERE j.id = old.id
            RETURNING {_columns(self.model, prefix="j.")},
                old.status AS old_status, pg_notify(%s, '')
        """
        jobs = list(
            self.model._default_manager.raw(
                sql,
                [
                    *params,
                    JobStatus.FAILED.value,
                    JobStatus.CANCELLED.value,
                    limit,
                    JobStatus.SCHEDULED.value,
                    NOTIFY_CHANNEL,
                ],
            ).using(self._db_alias)
        )
        for job in jobs:
            signals.send_after_commit(
                job, old_status=getattr(job, "old_status", None), using=self._db_alias
            )
        return jobs

    def purge(
        self,
        *,
        older_than_seconds: float,
        statuses: Collection[str] = FINAL_STATUSES,
        batch_size: int = 1000,
    ) -> Iterator[int]:
        """Delete finished jobs (and their attempts) that finished longer ago than given.

        A job that blocked jobs still wait for (a succeeded dependency of a job whose other
        dependencies are not done yet) is kept: its dependents would otherwise be cancelled.
        Deletes *batch_size* rows per statement and yields each batch's count, so that a purge
        of millions of rows shows progress and never holds locks for long.
        """
        table = _table(self.model)
        sql = f"""
            WITH needed AS (
                SELECT DISTINCT unnest(depends_on) AS id FROM {table}
                WHERE blocked AND status = %s
            ), doomed AS (
                SELECT j.id FROM {table} AS j
                WHERE j.status = ANY(%s) AND j.finished_at < now() - %s * interval '1 second'
                    AND NOT EXISTS (SELECT 1 FROM needed WHERE needed.id = j.id)
                LIMIT %s
                FOR UPDATE OF j SKIP LOCKED
            ), attempts AS (
                DELETE FROM {ATTEMPT_TABLE} WHERE job_id IN (SELECT id FROM doomed)
            )
            DELETE FROM {table} WHERE id IN (SELECT id FROM doomed)
        """
        while True:
            # One statement per batch, each its own transaction in autocommit.
            with connections[self._db_alias].cursor() as cursor:
                cursor.execute(
                    sql,
                    [
                        JobStatus.SCHEDULED.value,
                        [getattr(s, "value", s) for s in statuses],
                        older_than_seconds,
                        batch_size,
                    ],
                )
                deleted = int(cursor.rowcount)
            if not deleted:
                return
            yield deleted
