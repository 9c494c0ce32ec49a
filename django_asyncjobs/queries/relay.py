"""The scheduler's queries as outbox relay: which queues have due jobs, flow control, sending due
jobs with a new dispatch token, and sending again jobs whose message was lost.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass

from django.db import models, transaction

from .. import signals
from ..status import JobStatus
from ..timebounds import clamp_sql
from ._sql import JobT, Ledger, columns, paused_sql, table


@dataclass(frozen=True, slots=True, kw_only=True)
class DueJob:
    """A job the scheduler has locked and stamped ``queued``, ready to be sent."""

    id: uuid.UUID
    name: str
    queue: str
    priority: int
    dispatch_token: uuid.UUID
    #: The W3C trace context stored by ``delay()`` (see :mod:`django_asyncjobs.tracing`).
    trace_context: dict[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayResult:
    """What one relay pass did: jobs sent, and jobs put back because their send failed."""

    sent: int
    put_back: int


class RelayQueries(Ledger[JobT]):
    """Find due jobs and hand them to a transport, highest priority first."""

    def due_queues(self) -> list[str]:
        """Return the queues that have due scheduled jobs and are not paused, without reading
        every due row.

        A loose index scan: one index probe per queue, however deep the backlog (a paused
        queue's backlog included).
        """
        _, rows = self._execute(
            f"{self._due_queues_sql()} SELECT queue FROM queues WHERE queue IS NOT NULL "
            f"AND NOT {paused_sql(self.model, queue='queues.queue')}",
            {"scheduled": JobStatus.SCHEDULED.value},
        )
        return [row[0] for row in rows]

    def _due_queues_sql(self) -> str:
        """The ``WITH RECURSIVE queues`` clause of every queue with due scheduled jobs (paused
        ones too); parameter ``scheduled``."""
        jobs_table = table(self.model)
        return f"""
            WITH RECURSIVE queues AS (
                (SELECT queue FROM {jobs_table}
                 WHERE status = %(scheduled)s AND NOT blocked AND run_at <= now()
                 ORDER BY queue LIMIT 1)
                UNION ALL
                SELECT (SELECT j.queue FROM {jobs_table} AS j
                        WHERE j.status = %(scheduled)s AND NOT j.blocked AND j.run_at <= now()
                            AND j.queue > queues.queue
                        ORDER BY j.queue LIMIT 1)
                FROM queues WHERE queues.queue IS NOT NULL
            )
        """

    def queued_counts(self, queues: Collection[str] | None = None) -> dict[str, int]:
        """Return, per queue (of *queues*, or all), how many jobs were sent and not yet started.

        Queues with none are left out. Example::

            Job.objects.queued_counts(["high", "default"])  # {"default": 3}
        """
        jobs = self.filter(status=JobStatus.QUEUED)
        if queues is not None:
            jobs = jobs.filter(queue__in=list(queues))
        rows = jobs.order_by().values_list("queue").annotate(n=models.Count("id"))
        return dict(rows)

    def relay_due(
        self,
        *,
        queue: str,
        limit: int,
        send: Callable[[list[DueJob]], set[uuid.UUID]],
        minimum: int = 1,
    ) -> RelayResult:
        """Lock up to *limit* due jobs of *queue*, mark them ``queued`` with a new token, send,
        then commit.

        *send* receives the jobs highest priority first and returns the ids it could not send;
        those are put back to ``scheduled`` before the commit. If *send* raises, nothing changes.
        Rows locked by another scheduler are skipped, so several schedulers never send a job twice.
        A worker that receives a message before this commits waits on the row lock.
        A paused queue relays nothing: no job is locked and *send* is not called. Fewer than
        *minimum* due jobs relay nothing either (flow control waits for a full message while
        the workers have others to go on with).
        """
        jobs_table = table(self.model)
        sql = f"""
            WITH due AS (
                SELECT id FROM {jobs_table}
                WHERE status = %(scheduled)s AND NOT blocked AND queue = %(queue)s
                    AND run_at <= now() AND NOT {paused_sql(self.model, queue="%(queue)s")}
                ORDER BY priority DESC, run_at
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED
            )
            UPDATE {jobs_table} AS j
            SET status = %(queued)s, dispatch_token = gen_random_uuid(), enqueued_at = now()
            FROM due WHERE j.id = due.id AND (SELECT count(*) FROM due) >= %(minimum)s
            RETURNING j.id, j.name, j.queue, j.priority, {clamp_sql("j.run_at")}, j.dispatch_token,
                j.trace_context
        """
        alias = self._db_alias
        with transaction.atomic(using=alias):
            _, rows = self._execute(
                sql,
                {
                    "scheduled": JobStatus.SCHEDULED.value,
                    "queue": queue,
                    "limit": limit,
                    "minimum": minimum,
                    "queued": JobStatus.QUEUED.value,
                },
            )
            if not rows:
                return RelayResult(sent=0, put_back=0)
            # RETURNING has no order; send in the order the jobs should start.
            rows.sort(key=lambda r: (-r[3], r[4]))
            due = [
                DueJob(
                    id=r[0],
                    name=r[1],
                    queue=r[2],
                    priority=r[3],
                    dispatch_token=r[5],
                    # Raw jsonb comes back as text (Django parses JSONField values itself).
                    trace_context=json.loads(r[6]) if r[6] is not None else None,
                )
                for r in rows
            ]
            # If send raises, the rollback keeps every row scheduled; a message that did get out
            # carries a token that never committed, so no worker can claim with it.
            failed = send(due)
            if failed:
                self._execute(
                    f"UPDATE {jobs_table} SET status = %(scheduled)s, dispatch_token = NULL, "
                    f"enqueued_at = NULL WHERE id = ANY(%(ids)s)",
                    {"scheduled": JobStatus.SCHEDULED.value, "ids": list(failed)},
                )
            sent_ids = [d.id for d in due if d.id not in failed]
            if sent_ids and signals.has_listeners(sender=self.model):
                for job in self.filter(id__in=sent_ids):
                    self._announce(job, old_status=JobStatus.SCHEDULED)
        return RelayResult(sent=len(sent_ids), put_back=len(failed))

    def seconds_until_next_due(self) -> float | None:
        """Return how long until the next scheduled job is due (0 if overdue), or ``None``.

        Due jobs of paused queues do not count (the scheduler would poll them without end);
        their queues' future jobs do, which costs one empty pass when each falls due. Both
        halves read an index from its start: a paused backlog of any depth is never scanned.
        """
        jobs_table = table(self.model)
        sql = f"""
            {self._due_queues_sql()}
            SELECT CASE
                WHEN EXISTS (SELECT 1 FROM queues WHERE queue IS NOT NULL
                             AND NOT {paused_sql(self.model, queue="queues.queue")})
                THEN 0
                ELSE (SELECT EXTRACT(EPOCH FROM (min(run_at) - now())) FROM {jobs_table}
                      WHERE status = %(scheduled)s AND NOT blocked AND run_at > now())
            END
        """
        _, ((seconds,),) = self._execute(sql, {"scheduled": JobStatus.SCHEDULED.value})
        return None if seconds is None else max(0.0, float(seconds))

    def resend_lost(self, *, requeue_after_seconds: float) -> int:
        """Put ``queued`` jobs that no worker started within *requeue_after_seconds* back to
        ``scheduled``, due now, so the scheduler sends them again with a new dispatch token.

        Their old message, should it ever arrive, carries a stale token and claims nothing.
        """
        sql = f"""
            WITH changed AS (
                UPDATE {table(self.model)}
                SET status = %(scheduled)s, run_at = now(), dispatch_token = NULL,
                    enqueued_at = NULL
                WHERE status = %(queued)s
                    AND enqueued_at < now() - %(requeue_after)s * interval '1 second'
                RETURNING *
            )
            SELECT {columns(self.model)} FROM changed
        """
        jobs = self._returning_many(
            sql,
            {
                "scheduled": JobStatus.SCHEDULED.value,
                "queued": JobStatus.QUEUED.value,
                "requeue_after": requeue_after_seconds,
            },
        )
        for job in jobs:
            self._announce(job, old_status=JobStatus.QUEUED)
        return len(jobs)
