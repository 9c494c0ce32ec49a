"""The queries of whoever holds or ends a running job's lease: outcomes, hand-backs, heartbeats,
progress, and the reads that find running jobs whose worker is gone or overdue.

Every write here is fenced by the lease the claim gave (``lease_token``): a worker whose job was
rescued meanwhile changes nothing, and the newer attempt's outcome is never overwritten.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import signals
from ..status import JobStatus
from ..timebounds import LATEST_SQL
from ._sql import (
    NOTIFY_CHANNEL,
    DatabaseNow,
    Ledger,
    attempt_table,
    columns,
    storable_delay_seconds,
    table,
    wake_dependents_sql,
)

if TYPE_CHECKING:
    from ..execution import Outcome
    from ..models import Job
    from ..retry import Backoff


@dataclass(frozen=True, slots=True, kw_only=True)
class OverdueJob:
    """A running job that outlived its timeout (plus slack): its worker process must be ended."""

    job_id: uuid.UUID
    worker: str
    timeout_seconds: float


def attempt_outcome(error: str) -> str:
    """Return the attempt outcome an error text records: timed out, lost, or failed.

    >>> attempt_outcome("WorkerLost: worker process w1 was killed by SIGKILL")
    'lost'
    """
    if error.startswith("JobTimeout"):
        return "timed out"
    if error.startswith("WorkerLost"):
        return "lost"
    return "failed"


def _close_attempt_sql(model: type[Any]) -> str:
    """A CTE closing the open attempt of each ``changed`` row; parameters ``attempt_outcome``
    and ``attempt_error``."""
    return f"""
    closed AS (
        UPDATE {attempt_table(model)} AS a
        SET finished_at = now(), outcome = %(attempt_outcome)s, error = %(attempt_error)s,
            traceback = changed.traceback
        FROM changed WHERE a.job_id = changed.id AND a.finished_at IS NULL
    )"""


class LeaseQueries(Ledger):
    """Writes fenced by a running job's lease, and the reads that find running jobs."""

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

        Example::

            Job.objects.record_successes([(job.id, job.lease_token, 5)])  # [<Job: ...>]
        """
        if not outcomes:
            return []
        sql = f"""
            WITH changed AS (
                UPDATE {table(self.model)} AS j
                SET status = %(succeeded)s, result = m.result, finished_at = now(), error = '',
                    traceback = ''
                FROM unnest(%(ids)s::uuid[], %(leases)s::uuid[], %(results)s::jsonb[])
                    AS m(id, lease_token, result)
                WHERE j.id = m.id AND j.status = %(running)s AND j.lease_token = m.lease_token
                RETURNING j.*
            ), {_close_attempt_sql(self.model)}
            SELECT {columns(self.model)}, {wake_dependents_sql(self.model)} FROM changed
        """
        stored = {
            job.id: job
            for job in self._returning_many(
                sql,
                {
                    "succeeded": JobStatus.SUCCEEDED.value,
                    "ids": [job_id for job_id, _, _ in outcomes],
                    "leases": [lease for _, lease, _ in outcomes],
                    "results": [json.dumps(result) for _, _, result in outcomes],
                    "running": JobStatus.RUNNING.value,
                    "attempt_outcome": "succeeded",
                    "attempt_error": "",
                    "channel": NOTIFY_CHANNEL,
                },
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
        # Evaluated against the row as it was before the update (SET sees the old values).
        give_up = "(%(retry_in)s::float8 IS NULL OR (%(lost)s AND at_most_once))"
        stale_sql = ""
        if stale_after_seconds is not None:
            stale_sql = "AND heartbeat_at < now() - %(stale_after)s * interval '1 second'"
        sql = f"""
            WITH changed AS (
                UPDATE {table(self.model)}
                SET status = CASE WHEN {give_up} THEN %(failed)s ELSE %(scheduled)s END,
                    run_at = CASE WHEN {give_up} THEN run_at
                        -- However long a backoff says to wait, the retry is due by the latest
                        -- time a row may hold (the CHECK constraint would refuse a later one).
                        ELSE LEAST(now() + %(retry_in)s::float8 * interval '1 second',
                            {LATEST_SQL}) END,
                    finished_at = CASE WHEN {give_up} THEN now() END,
                    dispatch_token = NULL, error = %(error)s, traceback = %(traceback)s,
                    lease_token = NULL
                WHERE id = %(id)s AND status = %(running)s AND lease_token = %(lease)s
                    {stale_sql}
                RETURNING *
            ), {_close_attempt_sql(self.model)}
            SELECT {columns(self.model)}, pg_notify(%(channel)s, '') FROM changed
        """
        job = self._returning(
            sql,
            {
                "retry_in": (
                    None if retry_in_seconds is None else storable_delay_seconds(retry_in_seconds)
                ),
                "lost": lost,
                "failed": JobStatus.FAILED.value,
                "scheduled": JobStatus.SCHEDULED.value,
                "error": error,
                "traceback": traceback,
                "id": job_id,
                "running": JobStatus.RUNNING.value,
                "lease": lease_token,
                "stale_after": stale_after_seconds,
                "attempt_outcome": attempt_outcome(error),
                "attempt_error": error,
                "channel": NOTIFY_CHANNEL,
            },
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
        give_up = "at_most_once OR (attempts > max_retries AND interruptions >= %(free)s)"
        sql = f"""
            WITH changed AS (
                UPDATE {table(self.model)}
                SET status = CASE WHEN {give_up} THEN %(failed)s ELSE %(scheduled)s END,
                    attempts = CASE WHEN interruptions < %(free)s THEN attempts - 1
                        ELSE attempts END,
                    interruptions = interruptions + 1,
                    run_at = now(), dispatch_token = NULL, lease_token = NULL,
                    finished_at = CASE WHEN {give_up} THEN now() END,
                    error = %(reason)s, traceback = ''
                WHERE id = %(id)s AND status = %(running)s AND lease_token = %(lease)s
                RETURNING *
            ), {_close_attempt_sql(self.model)}
            SELECT {columns(self.model)}, pg_notify(%(channel)s, '') FROM changed
        """
        job = self._returning(
            sql,
            {
                "free": free_interruptions,
                "failed": JobStatus.FAILED.value,
                "scheduled": JobStatus.SCHEDULED.value,
                "reason": reason,
                "id": job_id,
                "running": JobStatus.RUNNING.value,
                "lease": lease_token,
                "attempt_outcome": "interrupted",
                "attempt_error": reason,
                "channel": NOTIFY_CHANNEL,
            },
        )
        if job is not None:
            signal = signals.job_failed if job.status == JobStatus.FAILED else None
            signals.send_after_commit(
                job, old_status=JobStatus.RUNNING, signal=signal, using=self._db_alias
            )
        return job

    def heartbeat(self, leases: Collection[tuple[uuid.UUID, uuid.UUID]]) -> set[uuid.UUID]:
        """Stamp ``heartbeat_at`` on running jobs whose ``(id, lease_token)`` is still current.

        Returns the ids whose lease was lost, so the worker can stop caring about them.
        """
        if not leases:
            return set()
        ids = [job_id for job_id, _ in leases]
        sql = f"""
            UPDATE {table(self.model)} AS j SET heartbeat_at = now()
            FROM unnest(%(ids)s::uuid[], %(leases)s::uuid[]) AS l(id, lease_token)
            WHERE j.id = l.id AND j.lease_token = l.lease_token AND j.status = %(running)s
            RETURNING j.id
        """
        _, rows = self._execute(
            sql,
            {
                "ids": ids,
                "leases": [token for _, token in leases],
                "running": JobStatus.RUNNING.value,
            },
        )
        return set(ids) - {row[0] for row in rows}

    def record_progress(
        self, job_id: uuid.UUID, lease_token: uuid.UUID, progress: dict[str, Any]
    ) -> bool:
        """Store *progress* (plus the time) on a running job while *lease_token* is its lease.

        Returns whether the row was written: ``False`` once the job was rescued or finished.
        """
        sql = f"""
            UPDATE {table(self.model)}
            SET progress = %(progress)s::jsonb || jsonb_build_object('at', now())
            WHERE id = %(id)s AND lease_token = %(lease)s AND status = %(running)s
        """
        written, _ = self._execute(
            sql,
            {
                "progress": json.dumps(progress),
                "id": job_id,
                "lease": lease_token,
                "running": JobStatus.RUNNING.value,
            },
        )
        return written == 1

    # -- running jobs whose worker is gone or late ------------------------------------------------

    def stalled(self, *, stale_after_seconds: float) -> list[Job]:
        """Return running jobs whose heartbeat is older than *stale_after_seconds* (DB clock)."""
        return list(
            self.filter(
                status=JobStatus.RUNNING,
                heartbeat_at__lt=DatabaseNow() - dt.timedelta(seconds=stale_after_seconds),
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
            SELECT id, worker, timeout FROM {table(self.model)}
            WHERE status = %(running)s AND worker = ANY(%(workers)s) AND timeout IS NOT NULL
                AND now() > started_at + (timeout + %(slack)s) * interval '1 second'
        """
        _, rows = self._execute(
            sql,
            {
                "running": JobStatus.RUNNING.value,
                "workers": list(workers),
                "slack": timeout_slack_seconds,
            },
        )
        return [OverdueJob(job_id=r[0], worker=r[1], timeout_seconds=r[2]) for r in rows]
