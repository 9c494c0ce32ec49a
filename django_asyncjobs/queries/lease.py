"""The queries of whoever holds or ends a running job's lease: outcomes, hand-backs, heartbeats,
progress, and the reads that find running jobs whose worker is gone or overdue.

Every write here is fenced by the lease the claim gave (``lease_token``): a worker whose job was
rescued meanwhile changes nothing, and the newer attempt's outcome is never overwritten.

Whether an attempt that did not succeed is retried, handed back or failed is not decided here:
:func:`django_asyncjobs.retry.decide` decides, from the row, and :meth:`LeaseQueries.end_attempt`
records the decision only while the row still holds what it was decided from.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.dispatch import Signal

from .. import retry, signals
from ..retry import Action, AttemptRow, Backoff, Basis, Decision, Ending
from ..status import JobStatus
from ..timebounds import LATEST_SQL
from ._sql import (
    NOTIFY_CHANNEL,
    DatabaseNow,
    JobRow,
    JobT,
    Ledger,
    attempt_table,
    columns,
    row,
    storable_delay_seconds,
    table,
    wake_dependents_sql,
)

if TYPE_CHECKING:
    from ..execution import Outcome

logger = logging.getLogger(__name__)

#: How many times end_attempt() decides again when the row's policy changed under the lease.
_MOST_DECISIONS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatReply:
    """What a heartbeat learned: leases that were lost, and cancels operators requested.

    ``cancel_requests`` maps the id of each job (of those heartbeated) that an operator asked
    to cancel to who asked.
    """

    lost: set[uuid.UUID]
    cancel_requests: dict[uuid.UUID, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class OverdueJob:
    """A running job that outlived its timeout (plus slack): its worker process must be ended."""

    job_id: uuid.UUID
    worker: str
    timeout_seconds: float


def attempt_outcome(error: str) -> str:
    """Return the attempt outcome an error text records: cancelled, timed out, lost, or failed.

    >>> attempt_outcome("WorkerLost: worker process w1 was killed by SIGKILL")
    'lost'
    """
    if error.startswith("JobCancelled"):
        return "cancelled"
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


class LeaseQueries(Ledger[JobT]):
    """Writes fenced by a running job's lease, and the reads that find running jobs."""

    def record_success(
        self, *, job_id: uuid.UUID, lease_token: uuid.UUID, result: Any
    ) -> JobT | None:
        """Mark a running job ``succeeded`` with its JSON *result*, if the lease is still ours.

        Returns ``None`` when the lease was lost (the job was rescued or changed meanwhile): the
        write is discarded so a newer attempt's outcome is never overwritten. A success stands
        even when an operator asked to cancel the job meanwhile: the job finished before its
        worker could stop it, and its ``cancel_requested_at`` shows the request came too late.
        """
        (job,) = self.record_successes([(job_id, lease_token, result)])
        return job

    def record_successes(
        self, outcomes: Sequence[tuple[uuid.UUID, uuid.UUID, Any]]
    ) -> list[JobT | None]:
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
            job.pk: job
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
                prepared=True,
            )
        }
        jobs = [stored.get(job_id) for job_id, _, _ in outcomes]
        for job in jobs:
            if job is not None:
                self._announce(job, old_status=JobStatus.RUNNING, signal=signals.job_succeeded)
        return jobs

    def end_attempt(
        self,
        *,
        job: JobT,
        lease_token: uuid.UUID,
        decide: Callable[[JobRow], Decision],
        error: str,
        traceback: str = "",
        stale_after_seconds: float | None = None,
    ) -> JobT | None:
        """Record how an attempt that did not succeed ended, as the caller's *decide* says.

        *job* is the running row as the caller read it (the claim's, ``stalled()``'s, the
        supervisor's). *decide* turns a row into a :class:`~django_asyncjobs.retry.Decision`;
        callers pass :func:`django_asyncjobs.retry.decide` with the ending and the backoff they
        know. The decision is recorded in one statement: ``scheduled`` again (after its delay,
        or at once for a hand-back), ``failed``, or ``cancelled`` (an operator asked to cancel
        the job: :func:`~django_asyncjobs.retry.decide` reads that from the row), the attempt
        closed in the history, the scheduler woken, and ``job_retrying``, ``job_failed`` or
        ``job_cancelled`` sent after the commit (a hand-back sends ``job_status_changed``
        only).

        Fenced by *lease_token*, and with *stale_after_seconds* (the scheduler's rescue) by a
        heartbeat at least that old, so that a worker that came back in time keeps its job and
        two schedulers never both rescue one. Returns the row as stored, or ``None`` when the
        lease was lost (or the heartbeat is fresh): nothing was written.

        The statement also requires the row to hold the values the decision was made from. If it
        no longer does, the row is read again and *decide* asked again: a decision made from
        stale values is never applied. Example::

            Job.objects.end_attempt(
                job=job,
                lease_token=job.lease_token,
                decide=functools.partial(retry.decide, ending=Ending.LOST),
                error="WorkerLost: ...",
            )
        """
        current: JobT | None = job
        for _ in range(_MOST_DECISIONS):
            assert current is not None
            decision = decide(row(current))
            stored = self._record_decision(
                job_id=job.pk,
                lease_token=lease_token,
                decision=decision,
                error=error,
                traceback=traceback,
                stale_after_seconds=stale_after_seconds,
            )
            if stored is not None:
                self._announce_ending(stored, decision)
                return stored
            # Nothing matched: the lease is gone (or the heartbeat is fresh), or the row's policy
            # changed since the caller read it. Only the latter is worth another decision.
            current = self._leased(
                job_id=job.pk, lease_token=lease_token, stale_after_seconds=stale_after_seconds
            )
            if current is None:
                return None
        logger.error("attempt not recorded: the job's row kept changing job_id=%s", job.pk)
        return None

    def _leased(
        self, *, job_id: uuid.UUID, lease_token: uuid.UUID, stale_after_seconds: float | None
    ) -> JobT | None:
        """Return the running row of *job_id* while *lease_token* is its lease (and, with
        *stale_after_seconds*, while its heartbeat is that old), else ``None``.

        Read from the database the statements write to: a replica may lag behind the lease.
        """
        rows = self.using(self._db_alias).filter(
            id=job_id, status=JobStatus.RUNNING, lease_token=lease_token
        )
        if stale_after_seconds is not None:
            rows = rows.filter(
                heartbeat_at__lt=DatabaseNow() - dt.timedelta(seconds=stale_after_seconds)
            )
        return rows.first()

    def _record_decision(
        self,
        *,
        job_id: uuid.UUID,
        lease_token: uuid.UUID,
        decision: Decision,
        error: str,
        traceback: str,
        stale_after_seconds: float | None,
    ) -> JobT | None:
        """Write *decision* in one statement, fenced by the lease and the decision's basis."""
        cancel = decision.action is Action.CANCEL
        interrupted = decision.ending is Ending.INTERRUPTED and not cancel
        if cancel:
            status = JobStatus.CANCELLED
            run_at_sql = "run_at"
        elif decision.action is Action.FAIL:
            status = JobStatus.FAILED
            # A failed job keeps its run_at; a handed-back one records when it was handed back.
            run_at_sql = "now()" if interrupted else "run_at"
        else:
            status = JobStatus.SCHEDULED
            # However long a backoff says to wait, the retry is due by the latest time a row may
            # hold (the CHECK constraint would refuse a later one). A hand-back waits 0 s.
            run_at_sql = f"LEAST(now() + %(retry_in)s::float8 * interval '1 second', {LATEST_SQL})"
        stale_sql = ""
        if stale_after_seconds is not None:
            stale_sql = "AND heartbeat_at < now() - %(stale_after)s * interval '1 second'"
        # Why the WHERE repeats the values the decision was made from: the caller decided from
        # its own copy of the row (the claim's RETURNING, stalled()'s SELECT, the supervisor's
        # read), which may be old. The lease alone does not prove the copy current: under one
        # lease attempts and interruptions do not change (a claim issues a new lease, a
        # recorded ending clears it), but max_retries and at_most_once can, through a
        # hand-written UPDATE or a deploy's data migration that marks a running job
        # at_most_once. Requiring the row to hold the decision's basis makes a stale decision
        # match nothing. Under READ COMMITTED an UPDATE re-checks its WHERE against the newest
        # committed version of the row once it holds the row lock, so a change committed
        # before this statement is seen, and one made after it waits for it and then finds the
        # lease cleared. end_attempt() then reads the row again and decides again.
        # A cancelled job's error says who cancelled it, and how the attempt ended when that was
        # not by stopping for the request (a timeout, a lost worker); the attempt keeps the
        # error it ended with.
        sql = f"""
            WITH changed AS (
                UPDATE {table(self.model)}
                SET status = %(status)s, run_at = {run_at_sql},
                    attempts = attempts - %(refund)s,
                    interruptions = interruptions + %(interruption)s,
                    finished_at = CASE WHEN %(final)s THEN now() END,
                    dispatch_token = NULL, lease_token = NULL,
                    error = CASE WHEN %(cancel)s THEN concat(
                        'JobCancelled: cancel requested', ' by ' || nullif(cancel_requested_by, ''),
                        CASE WHEN NOT starts_with(%(error)s, 'JobCancelled')
                            THEN '; the attempt ended with ' || %(error)s END
                    ) ELSE %(error)s END,
                    traceback = %(traceback)s
                WHERE id = %(id)s AND status = %(running)s AND lease_token = %(lease)s
                    AND attempts = %(attempts)s AND max_retries = %(max_retries)s
                    AND at_most_once = %(at_most_once)s AND interruptions = %(interruptions)s
                    AND (cancel_requested_at IS NOT NULL) = %(cancel_requested)s
                    {stale_sql}
                RETURNING *
            ), {_close_attempt_sql(self.model)}
            SELECT {columns(self.model)}, pg_notify(%(channel)s, '') FROM changed
        """
        basis = decision.basis
        return self._returning(
            sql,
            {
                "status": status.value,
                "retry_in": storable_delay_seconds(decision.retry_in_seconds),
                "refund": int(decision.refund_attempt and not cancel),
                "interruption": int(interrupted),
                "final": decision.action in (Action.FAIL, Action.CANCEL),
                "cancel": cancel,
                "error": error,
                "traceback": traceback,
                "id": job_id,
                "running": JobStatus.RUNNING.value,
                "lease": lease_token,
                "attempts": basis.attempts,
                "max_retries": basis.max_retries,
                "at_most_once": basis.at_most_once,
                "interruptions": basis.interruptions,
                "cancel_requested": basis.cancel_requested,
                "stale_after": stale_after_seconds,
                "attempt_outcome": (
                    "cancelled"
                    if cancel
                    else "interrupted"
                    if interrupted
                    else attempt_outcome(error)
                ),
                "attempt_error": error,
                "channel": NOTIFY_CHANNEL,
            },
        )

    def _announce_ending(self, job: JobT, decision: Decision) -> None:
        if decision.action is Action.CANCEL:
            signal: Signal | None = signals.job_cancelled
        elif decision.action is Action.FAIL:
            signal = signals.job_failed
        elif decision.ending is Ending.INTERRUPTED:
            signal = None  # a hand-back is not a retry: job_status_changed only
        else:
            signal = signals.job_retrying
        self._announce(job, old_status=JobStatus.RUNNING, signal=signal)

    # -- the same, for callers that give the decision's inputs instead of a decision --------------

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
    ) -> JobT | None:
        """Record a failed attempt: ``scheduled`` again after *retry_in_seconds*, or ``failed``.

        ``retry_in_seconds=None`` means no retry is left. With *lost* (the worker died or went
        silent, so the attempt may have partly run) a job whose row is ``at_most_once`` is failed
        whatever *retry_in_seconds* says. Reads the row, then records as :meth:`end_attempt`
        does (same fences, same return value), with :func:`~django_asyncjobs.retry.decide` and a
        fixed backoff of *retry_in_seconds*.
        """
        leased = self._leased(
            job_id=job_id, lease_token=lease_token, stale_after_seconds=stale_after_seconds
        )
        if leased is None:
            return None
        ending = Ending.LOST if lost else Ending.FAILED

        def decide(current: AttemptRow) -> Decision:
            if retry_in_seconds is None:  # the caller found no retry left
                return Decision(action=Action.FAIL, ending=ending, basis=Basis.of(current))
            return retry.decide(current, ending=ending, backoff=Backoff.fixed(retry_in_seconds))

        return self.end_attempt(
            job=leased,
            lease_token=lease_token,
            decide=decide,
            error=error,
            traceback=traceback,
            stale_after_seconds=stale_after_seconds,
        )

    def record_outcome(
        self, *, job: JobT, lease_token: uuid.UUID, outcome: Outcome, backoff: Backoff
    ) -> JobT | None:
        """Record how an attempt of *job* ended: ``succeeded``, ``scheduled`` again after
        *backoff* while retries are left, or ``failed`` for good.

        :meth:`record_success`, or :meth:`end_attempt` with ``retry.decide(ending=FAILED)``.
        Fenced by *lease_token*; ``None`` when the lease was lost.
        """
        if outcome.ok:
            return self.record_success(
                job_id=job.pk, lease_token=lease_token, result=outcome.result
            )
        return self.end_attempt(
            job=job,
            lease_token=lease_token,
            decide=functools.partial(retry.decide, ending=Ending.FAILED, backoff=backoff),
            error=outcome.error,
            traceback=outcome.traceback,
        )

    def hand_back(
        self,
        *,
        job_id: uuid.UUID,
        lease_token: uuid.UUID,
        reason: str,
        free_interruptions: int,
    ) -> JobT | None:
        """Give a running job back because its worker is shutting down: due again at once.

        The interruption is counted on the row; the first *free_interruptions* of a job do not
        use up an attempt, later ones do (so a job that outlives every deploy still ends). A job
        whose row is ``at_most_once``, or one whose attempts are used up, is failed instead: the
        policy is read from the row, never from the caller's registry. Reads the row, then
        records as :meth:`end_attempt` does with ``retry.decide(ending=INTERRUPTED)``; returns
        ``None`` when the lease was lost.
        """
        leased = self._leased(job_id=job_id, lease_token=lease_token, stale_after_seconds=None)
        if leased is None:
            return None
        return self.end_attempt(
            job=leased,
            lease_token=lease_token,
            decide=functools.partial(
                retry.decide, ending=Ending.INTERRUPTED, free_interruptions=free_interruptions
            ),
            error=reason,
        )

    def heartbeat(self, leases: Collection[tuple[uuid.UUID, uuid.UUID]]) -> HeartbeatReply:
        """Stamp ``heartbeat_at`` on running jobs whose ``(id, lease_token)`` is still current.

        Returns the ids whose lease was lost, so the worker can stop caring about them, and, in
        the same statement, the cancels operators requested for the others, so the worker can
        stop those jobs. Example::

            reply = Job.objects.heartbeat([(job.id, job.lease_token)])
            reply.lost                 # set(): the lease is still ours
            reply.cancel_requests      # {job.id: "alice"} once alice cancelled the job
        """
        if not leases:
            return HeartbeatReply(lost=set(), cancel_requests={})
        ids = [job_id for job_id, _ in leases]
        sql = f"""
            UPDATE {table(self.model)} AS j SET heartbeat_at = now()
            FROM unnest(%(ids)s::uuid[], %(leases)s::uuid[]) AS l(id, lease_token)
            WHERE j.id = l.id AND j.lease_token = l.lease_token AND j.status = %(running)s
            RETURNING j.id, j.cancel_requested_at IS NOT NULL, j.cancel_requested_by
        """
        _, rows = self._execute(
            sql,
            {
                "ids": ids,
                "leases": [token for _, token in leases],
                "running": JobStatus.RUNNING.value,
            },
        )
        return HeartbeatReply(
            lost=set(ids) - {job_id for job_id, _, _ in rows},
            cancel_requests={job_id: by for job_id, requested, by in rows if requested},
        )

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

    def stalled(self, *, stale_after_seconds: float) -> list[JobT]:
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
