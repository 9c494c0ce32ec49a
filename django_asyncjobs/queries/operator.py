"""The queries of operators (the admin, the ``asyncjobs`` command, the HTTP API): cancel, retry,
mark succeeded, run again, purge, and finding jobs by a prefix of their id.

Each change names the statuses it may start from, so an operator never changes the status of a
running job (its worker holds the lease) and two operators acting at once change a job once. The
one write to a running row is a cancel request, which its worker acts on.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator
from typing import Any

from django.db import models

from .. import signals
from ..status import FINAL_STATUSES, JobStatus
from ._sql import (
    ACTIVE_SQL,
    CANCEL_CHANNEL,
    NOTIFY_CHANNEL,
    DatabaseNow,
    JobRow,
    JobT,
    attempt_table,
    columns,
    row,
    table,
    wake_dependents_sql,
)
from .enqueue import EnqueueQueries


def uuid_prefix_range(text: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """Return the smallest and largest UUID starting with *text* (4+ hex digits), else None.

    >>> uuid_prefix_range("6f87d6b4")[0]
    UUID('6f87d6b4-0000-0000-0000-000000000000')
    >>> uuid_prefix_range("6f8") is None
    True
    """
    digits = text.replace("-", "").lower()
    if not 4 <= len(digits) <= 32:
        return None
    if any(c not in "0123456789abcdef" for c in digits):
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


class JobQuerySet(models.QuerySet[JobT]):
    """Read-side helpers for jobs."""

    def with_id_prefix(self, prefix: str) -> JobQuerySet[JobT]:
        """Return jobs whose id starts with *prefix* (4+ hex digits), by a primary-key range.

        Raises :class:`ValueError` for anything else. Example::

            Job.objects.get_queryset().with_id_prefix("6f87d6b4")
        """
        bounds = uuid_prefix_range(prefix)
        if bounds is None:
            raise ValueError(f"{prefix!r} is not a job id or an id prefix of 4+ hex digits")
        return self.filter(id__gte=bounds[0], id__lte=bounds[1])

    def due(self) -> JobQuerySet[JobT]:
        """Return scheduled jobs whose ``run_at`` has passed, by the database's clock."""
        return self.filter(status=JobStatus.SCHEDULED, run_at__lte=DatabaseNow())


class OperatorQueries(EnqueueQueries[JobT]):
    """Operator actions on jobs (running ones only get a cancel request); "run again" is an
    enqueue."""

    def cancel(self, job_id: uuid.UUID | str, *, by: str = "") -> JobT | None:
        """Cancel a job on behalf of *by*; ``None`` if it is finished or its cancel was
        requested already.

        - ``scheduled`` or ``queued``: ``cancelled`` now (the returned row says so). A message
          already sent for a queued job is dropped by the worker that receives it.
        - ``running``: the cancel is *requested* (the returned row is still ``running``, with
          ``cancel_requested_at`` set). Its worker learns of it within a fraction of a second
          (a NOTIFY, and at the latest its next heartbeat) and stops the job: an ``async def``
          job at once, a ``def`` job when it checks :func:`~django_asyncjobs.cancel_requested`
          or reports progress, or at its timeout. The row then ends ``cancelled``, never
          retried; whoever ends the attempt (the worker, its supervisor, the scheduler's rescue
          of a lost worker) cancels it. A job that finishes successfully before its worker
          learns of the request stays ``succeeded``.

        Either way the row records who asked (*by*: an admin user, an API user, a CLI operator)
        and when. Example::

            job = Job.objects.cancel(job_id, by="alice")
            if job is None: ...                    # finished, or already being cancelled
            elif job.status == "cancelled": ...    # it had not started
            else: ...                              # running: its worker stops it
        """
        jobs_table = table(self.model)
        sql = f"""
            WITH old AS (SELECT id, status FROM {jobs_table} WHERE id = %(id)s FOR UPDATE),
            changed AS (
                UPDATE {jobs_table} AS j
                SET status = CASE WHEN old.status = %(running)s THEN j.status
                        ELSE %(cancelled)s END,
                    finished_at = CASE WHEN old.status = %(running)s THEN NULL ELSE now() END,
                    dispatch_token = CASE WHEN old.status = %(running)s THEN j.dispatch_token END,
                    cancel_requested_at = now(), cancel_requested_by = %(by)s
                FROM old WHERE j.id = old.id AND (
                    old.status IN (%(scheduled)s, %(queued)s)
                    OR (old.status = %(running)s AND j.cancel_requested_at IS NULL)
                )
                RETURNING j.*, old.status AS old_status
            )
            SELECT {columns(self.model)}, old_status,
                pg_notify(
                    CASE WHEN old_status = %(running)s THEN %(cancel_channel)s
                        ELSE %(channel)s END,
                    CASE WHEN old_status = %(running)s THEN id::text ELSE '' END
                )
            FROM changed
        """
        # The NOTIFY on the cancel channel tells the workers, one of which runs the job; the one
        # on the scheduler's lets it cancel the dependents of a job that had not started.
        job = self._returning(
            sql,
            {
                "id": job_id,
                "by": by[:255],
                "cancelled": JobStatus.CANCELLED.value,
                "scheduled": JobStatus.SCHEDULED.value,
                "queued": JobStatus.QUEUED.value,
                "running": JobStatus.RUNNING.value,
                "channel": NOTIFY_CHANNEL,
                "cancel_channel": CANCEL_CHANNEL,
            },
        )
        if job is not None and row(job).status == JobStatus.CANCELLED:
            self._announce(
                job, old_status=getattr(job, "old_status", None), signal=signals.job_cancelled
            )
        return job

    def retry(self, job_id: uuid.UUID | str) -> JobT | None:
        """Schedule a ``failed`` or ``cancelled`` job to run now with a fresh retry budget.

        ``attempts`` starts again from 0, so the job gets ``max_retries`` retries anew;
        ``total_attempts`` goes on, so its next attempt is numbered after the earlier ones. A
        cancelled job's cancel request is cleared with it, so the new attempt runs.

        Returns ``None`` when the job is in any other status (a running job is never touched),
        or when another active job holds its unique key.
        """
        jobs = self._retry_where("j.id = %(id)s", {"id": job_id}, limit=1)
        return jobs[0] if jobs else None

    def mark_succeeded(self, job_id: uuid.UUID | str, *, note: str) -> JobT | None:
        """Mark a ``failed``, ``cancelled``, ``scheduled`` or ``queued`` job as succeeded by hand.

        For an operator who fixed the data themselves: the job will not run, its dependents are
        released, and a cancelled job's cancel request is cleared (the admin log keeps who
        cancelled it). *note* (who did it, and why) is stored in ``note``; ``error`` and
        ``traceback`` are emptied, as for any succeeded job (the attempt history keeps the errors
        of the attempts that failed). Returns ``None`` for a running or already succeeded job.
        """
        jobs_table = table(self.model)
        sql = f"""
            WITH old AS (SELECT id, status FROM {jobs_table} WHERE id = %(id)s FOR UPDATE),
            changed AS (
                UPDATE {jobs_table} AS j
                SET status = %(succeeded)s, finished_at = now(), error = '', traceback = '',
                    note = %(note)s, dispatch_token = NULL, lease_token = NULL, blocked = false,
                    cancel_requested_at = NULL, cancel_requested_by = ''
                FROM old WHERE j.id = old.id
                    AND old.status IN (%(failed)s, %(cancelled)s, %(scheduled)s, %(queued)s)
                RETURNING j.*, old.status AS old_status
            )
            SELECT {columns(self.model)}, old_status, {wake_dependents_sql(self.model)}
            FROM changed
        """
        job = self._returning(
            sql,
            {
                "id": job_id,
                "succeeded": JobStatus.SUCCEEDED.value,
                "note": note,
                "failed": JobStatus.FAILED.value,
                "cancelled": JobStatus.CANCELLED.value,
                "scheduled": JobStatus.SCHEDULED.value,
                "queued": JobStatus.QUEUED.value,
                "channel": NOTIFY_CHANNEL,
            },
        )
        if job is not None:
            self._announce(
                job, old_status=getattr(job, "old_status", None), signal=signals.job_succeeded
            )
        return job

    def run_again(self, job: JobRow) -> JobT:
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
            concurrency_key=job.concurrency_key,
            concurrency_limit=job.concurrency_limit,
        )

    def retry_failed(self, *, name: str | None = None, batch_size: int = 1000) -> Iterator[int]:
        """Retry every ``failed`` job (of *name*), in batches; yield each batch's size.

        Batches are separate statements, so the table is never locked for long.
        """
        while True:
            where = "j.status = %(failed)s"
            params: dict[str, Any] = {}
            if name is not None:
                where, params = where + " AND j.name = %(name)s", {"name": name}
            jobs = self._retry_where(where, params, limit=batch_size)
            if not jobs:
                return
            yield len(jobs)

    def _retry_where(self, where: str, params: dict[str, Any], *, limit: int) -> list[JobT]:
        """Retry up to *limit* failed or cancelled jobs matching *where* (over ``j``); *where*
        may use the parameters ``failed`` and ``cancelled`` as well as its own *params*."""
        jobs_table = table(self.model)
        sql = f"""
            WITH old AS (
                SELECT j.id, j.status FROM {jobs_table} AS j
                WHERE {where} AND j.status IN (%(failed)s, %(cancelled)s) AND (
                    j.unique_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM {jobs_table} AS a
                        WHERE a.unique_key = j.unique_key AND a.status IN ({ACTIVE_SQL})
                    )
                )
                LIMIT %(limit)s
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE {jobs_table} AS j
            SET status = %(scheduled)s, run_at = now(), attempts = 0, interruptions = 0,
                refused_deliveries = 0, finished_at = NULL, dispatch_token = NULL,
                lease_token = NULL, blocked = false, cancel_requested_at = NULL,
                cancel_requested_by = ''
            FROM old WHERE j.id = old.id
            RETURNING {columns(self.model, prefix="j.")},
                old.status AS old_status, pg_notify(%(channel)s, '')
        """
        jobs = self._returning_many(
            sql,
            {
                **params,
                "failed": JobStatus.FAILED.value,
                "cancelled": JobStatus.CANCELLED.value,
                "limit": limit,
                "scheduled": JobStatus.SCHEDULED.value,
                "channel": NOTIFY_CHANNEL,
            },
        )
        for job in jobs:
            self._announce(job, old_status=getattr(job, "old_status", None))
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
        jobs_table = table(self.model)
        sql = f"""
            {self._purgeable_sql()}
                LIMIT %(limit)s
                FOR UPDATE OF j SKIP LOCKED
            ), attempts AS (
                DELETE FROM {attempt_table(self.model)} WHERE job_id IN (SELECT id FROM doomed)
            )
            DELETE FROM {jobs_table} WHERE id IN (SELECT id FROM doomed)
        """
        params = {
            **self._purgeable_params(older_than_seconds, statuses),
            "limit": batch_size,
        }
        while True:
            # One statement per batch, each its own transaction in autocommit.
            deleted, _ = self._execute(sql, params)
            if not deleted:
                return
            yield deleted

    def purgeable_count(
        self, *, older_than_seconds: float, statuses: Collection[str] = FINAL_STATUSES
    ) -> int:
        """Return how many jobs :meth:`purge` with these arguments would delete now.

        For ``purge --dry-run`` and for the total its progress counts towards. Example::

            Job.objects.purgeable_count(older_than_seconds=30 * 86400)   # 1234
        """
        sql = f"{self._purgeable_sql()}) SELECT count(*) FROM doomed"
        _, rows = self._execute(sql, self._purgeable_params(older_than_seconds, statuses))
        return int(rows[0][0])

    def _purgeable_sql(self) -> str:
        """The start of a ``WITH``, up to an unclosed ``doomed`` (``j.id``, unlimited)."""
        jobs_table = table(self.model)
        return f"""
            WITH needed AS (
                SELECT DISTINCT unnest(depends_on) AS id FROM {jobs_table}
                WHERE blocked AND status = %(scheduled)s
            ), doomed AS (
                SELECT j.id FROM {jobs_table} AS j
                WHERE j.status = ANY(%(statuses)s)
                    AND j.finished_at < now() - %(older_than)s * interval '1 second'
                    AND NOT EXISTS (SELECT 1 FROM needed WHERE needed.id = j.id)
        """

    @staticmethod
    def _purgeable_params(older_than_seconds: float, statuses: Collection[str]) -> dict[str, Any]:
        return {
            "scheduled": JobStatus.SCHEDULED.value,
            "statuses": [getattr(s, "value", s) for s in statuses],
            "older_than": older_than_seconds,
        }
