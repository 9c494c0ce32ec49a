"""The scheduler's queries as outbox relay: which queues have due jobs, flow control, sending due
jobs with a new dispatch token, and sending again jobs whose message was lost.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from django.db import models, transaction

from .. import signals
from ..limits import Rate
from ..status import JobStatus
from ..timebounds import clamp_sql
from ._sql import JobT, Ledger, attempt_table, columns, paused_sql, table


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
    #: Due jobs (or, for a full queue rate, the whole queue: 1) a limit held back.
    held: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Selection:
    ids: list[uuid.UUID]
    held: int


def _concurrency_lock_key(key: str) -> str:
    return f"asyncjobs:concurrency:{key}"


def _name_rate_key(name: str) -> str:
    return f"asyncjobs:rate:job:{name}"


def _queue_rate_key(queue: str) -> str:
    return f"asyncjobs:rate:queue:{queue}"


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

    def due_queues_in_flight(self) -> dict[str, int]:
        """Return the queues :meth:`due_queues` returns, each with its ``queued`` count (the
        jobs sent and not started): what a relay pass needs, in one round trip.

        Example::

            Job.objects.due_queues_in_flight()  # {"default": 40}
        """
        jobs_table = table(self.model)
        # The counts by status alone, as queued_counts() reads them: "queue = ... AND status =
        # 'queued'" may be planned through the queue's index of every row it ever had.
        _, rows = self._execute(
            f"{self._due_queues_sql()}, in_flight AS (SELECT queue, count(*) AS n "
            f"FROM {jobs_table} WHERE status = %(queued)s GROUP BY queue) "
            f"SELECT queues.queue, coalesce(in_flight.n, 0) FROM queues "
            f"LEFT JOIN in_flight ON in_flight.queue = queues.queue "
            f"WHERE queues.queue IS NOT NULL "
            f"AND NOT {paused_sql(self.model, queue='queues.queue')}",
            {"scheduled": JobStatus.SCHEDULED.value, "queued": JobStatus.QUEUED.value},
        )
        return {queue: count for queue, count in rows}

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
        name_rates: Mapping[str, Rate] | None = None,
        queue_rate: Rate | None = None,
    ) -> RelayResult:
        """Lock up to *limit* due jobs of *queue*, mark them ``queued`` with a new token, send,
        then commit.

        *send* receives the jobs highest priority first and returns the ids it could not send;
        those are put back to ``scheduled`` before the commit. If *send* raises, nothing changes.
        Rows locked by another scheduler are skipped, so several schedulers never send a job twice.
        A worker that receives a message before this commits waits on the row lock.
        A paused queue relays nothing: no job is locked and *send* is not called. Fewer than
        *minimum* due jobs (of those the limits let go) relay nothing either: flow control waits
        for a whole message while the workers have others to go on with.

        Limits (see :mod:`django_asyncjobs.limits`) hold jobs back, in ``scheduled``: a job with
        a ``concurrency_key`` is sent only while fewer than its ``concurrency_limit`` jobs of
        that key are queued or running; a job whose name has a rate in *name_rates*, or of a
        queue with a *queue_rate*, only while fewer than the rate's count started in the last
        period or wait in SQS. Each key is counted under a transaction-level advisory lock, so
        that two schedulers never both fill the last slot; a key another scheduler holds is
        left for this pass. ``held`` counts the due jobs a limit held back.
        """
        jobs_table = table(self.model)
        alias = self._db_alias
        with transaction.atomic(using=alias):
            selected = self._select_due(
                queue=queue, limit=limit, name_rates=name_rates or {}, queue_rate=queue_rate
            )
            if not selected.ids or len(selected.ids) < minimum:
                return RelayResult(sent=0, put_back=0, held=selected.held)
            _, rows = self._execute(
                f"""
                UPDATE {jobs_table} AS j
                SET status = %(queued)s, dispatch_token = gen_random_uuid(), enqueued_at = now()
                WHERE j.id = ANY(%(ids)s)
                RETURNING j.id, j.name, j.queue, j.priority, {clamp_sql("j.run_at")},
                    j.dispatch_token, j.trace_context
                """,
                {"queued": JobStatus.QUEUED.value, "ids": selected.ids},
            )
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
        return RelayResult(sent=len(sent_ids), put_back=len(failed), held=selected.held)

    def _select_due(
        self,
        *,
        queue: str,
        limit: int,
        name_rates: Mapping[str, Rate],
        queue_rate: Rate | None,
    ) -> _Selection:
        """Lock (``FOR UPDATE SKIP LOCKED``) the due jobs of *queue* that the limits let start,
        up to *limit*, highest priority first; return their ids. Runs in the relay's
        transaction, which the advisory locks it takes last for.
        """
        if queue_rate is not None:
            if not self._try_lock([_queue_rate_key(queue)]):
                return _Selection(ids=[], held=1)
            (used,) = self.rate_usage([(queue, True, queue_rate)]).values()
            if used >= queue_rate.count:
                return _Selection(ids=[], held=1)
            limit = min(limit, queue_rate.count - used)
        # Names whose window is full are not even read: their backlog must not fill the LIMIT
        # and starve the jobs behind it. Read without a lock; re-counted under one below.
        usage = self.rate_usage([(name, False, rate) for name, rate in name_rates.items()])
        spent = [name for name, rate in name_rates.items() if usage[name] >= rate.count]
        jobs_table = table(self.model)
        # A key whose slots are all taken is skipped row by row (an index probe each), for the
        # same reason.
        sql = f"""
            SELECT j.id, j.name, j.concurrency_key, j.concurrency_limit FROM {jobs_table} AS j
            WHERE j.status = %(scheduled)s AND NOT j.blocked AND j.queue = %(queue)s
                AND j.run_at <= now() AND NOT {paused_sql(self.model, queue="%(queue)s")}
                AND NOT j.name = ANY(%(spent)s)
                AND (j.concurrency_key IS NULL OR j.concurrency_limit > (
                    SELECT count(*) FROM {jobs_table} AS a
                    WHERE a.concurrency_key = j.concurrency_key
                        AND a.status IN (%(queued)s, %(running)s)))
            ORDER BY j.priority DESC, j.run_at
            LIMIT %(limit)s
            FOR UPDATE OF j SKIP LOCKED
        """
        _, rows = self._execute(
            sql,
            {
                "scheduled": JobStatus.SCHEDULED.value,
                "queued": JobStatus.QUEUED.value,
                "running": JobStatus.RUNNING.value,
                "queue": queue,
                "spent": spent,
                "limit": limit,
            },
        )
        held = len(spent)
        keys = sorted({key for _, _, key, _ in rows if key is not None})
        rated = sorted({name for _, name, _, _ in rows if name in name_rates})
        if not keys and not rated:
            return _Selection(ids=[row[0] for row in rows], held=held)
        locked = self._try_lock(
            [_concurrency_lock_key(k) for k in keys] + [_name_rate_key(n) for n in rated]
        )
        active = self.concurrency_usage([k for k in keys if _concurrency_lock_key(k) in locked])
        rooms = {
            name: name_rates[name].count - used
            for name, used in self.rate_usage(
                [(n, False, name_rates[n]) for n in rated if _name_rate_key(n) in locked]
            ).items()
        }
        ids: list[uuid.UUID] = []
        for job_id, name, key, key_limit in rows:
            if key is not None and (key not in active or active[key] >= key_limit):
                held += 1
                continue
            if name in name_rates and rooms.get(name, 0) <= 0:
                held += 1
                continue
            if key is not None:
                active[key] += 1
            if name in rooms:
                rooms[name] -= 1
            ids.append(job_id)
        return _Selection(ids=ids, held=held)

    def _try_lock(self, keys: list[str]) -> set[str]:
        """Take the transaction-level advisory locks of *keys* that are free; return those.

        Never waits: a key another scheduler holds is relaying there, and this pass leaves its
        jobs alone (try-locks in any order cannot deadlock).
        """
        if not keys:
            return set()
        _, rows = self._execute(
            "SELECT k FROM unnest(%(keys)s::text[]) AS k "
            "WHERE pg_try_advisory_xact_lock(hashtextextended(k, 0))",
            {"keys": keys},
        )
        return {row[0] for row in rows}

    def concurrency_usage(self, keys: Collection[str]) -> dict[str, int]:
        """Return, per concurrency key of *keys*, how many of its jobs are queued or running.

        Example::

            Job.objects.concurrency_usage(["app.jobs.sync:c42"])   # {"app.jobs.sync:c42": 1}
        """
        if not keys:
            return {}
        _, rows = self._execute(
            f"SELECT concurrency_key, count(*) FROM {table(self.model)} "
            "WHERE status IN (%(queued)s, %(running)s) AND concurrency_key = ANY(%(keys)s) "
            "GROUP BY concurrency_key",
            {
                "queued": JobStatus.QUEUED.value,
                "running": JobStatus.RUNNING.value,
                "keys": list(keys),
            },
        )
        return {key: 0 for key in keys} | dict(rows)

    def rate_usage(self, windows: list[tuple[str, bool, Rate]]) -> dict[str, int]:
        """Return how much of each rate window is used: attempts started within its period (by
        the database's clock) plus jobs sent and not yet started, by job name, or by queue when
        the window's flag is true.

        Example::

            Job.objects.rate_usage([("app.jobs.call_api", False, parse_rate("100/m"))])
        """
        if not windows:
            return {}
        jobs_table = table(self.model)
        match = "CASE WHEN r.by_queue THEN j.queue = r.v ELSE j.name = r.v END"
        sql = f"""
            SELECT r.v,
                (SELECT count(*) FROM {attempt_table(self.model)} AS a
                 JOIN {jobs_table} AS j ON j.id = a.job_id
                 WHERE a.started_at > now() - r.period * interval '1 second' AND {match})
                + (SELECT count(*) FROM {jobs_table} AS j WHERE j.status = %(queued)s AND {match})
            FROM unnest(%(values)s::text[], %(by_queue)s::boolean[], %(periods)s::float8[])
                AS r(v, by_queue, period)
        """
        _, rows = self._execute(
            sql,
            {
                "queued": JobStatus.QUEUED.value,
                "values": [value for value, _, _ in windows],
                "by_queue": [by_queue for _, by_queue, _ in windows],
                "periods": [float(rate.period_seconds) for _, _, rate in windows],
            },
        )
        return dict(rows)

    def held_counts(
        self, *, name_rates: Mapping[str, Rate], queue_rates: Mapping[str, Rate]
    ) -> dict[str, int]:
        """Return, per queue, how many due scheduled jobs a limit holds back now: their
        concurrency key's slots are all taken, or their job's or queue's rate window is full.

        Queues with none are left out. A read for people (the overview, ``asyncjobs stats``);
        the relay decides on its own, under its locks.
        """
        usage = self.rate_usage([(name, False, rate) for name, rate in name_rates.items()])
        spent_names = [n for n, rate in name_rates.items() if usage[n] >= rate.count]
        queue_usage = self.rate_usage([(q, True, rate) for q, rate in queue_rates.items()])
        spent_queues = [q for q, rate in queue_rates.items() if queue_usage[q] >= rate.count]
        jobs_table = table(self.model)
        _, rows = self._execute(
            f"""
            SELECT j.queue, count(*) FROM {jobs_table} AS j
            WHERE j.status = %(scheduled)s AND NOT j.blocked AND j.run_at <= now() AND (
                j.name = ANY(%(spent_names)s) OR j.queue = ANY(%(spent_queues)s)
                OR (j.concurrency_key IS NOT NULL AND j.concurrency_limit <= (
                    SELECT count(*) FROM {jobs_table} AS a
                    WHERE a.concurrency_key = j.concurrency_key
                        AND a.status IN (%(queued)s, %(running)s))))
            GROUP BY j.queue
            """,
            {
                "scheduled": JobStatus.SCHEDULED.value,
                "queued": JobStatus.QUEUED.value,
                "running": JobStatus.RUNNING.value,
                "spent_names": spent_names,
                "spent_queues": spent_queues,
            },
        )
        return dict(rows)

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
