"""The worker's queries on receiving a message: claim the job, or say why not.

Every statement here is fenced by the message's dispatch token: a duplicate, stale or forged
message changes nothing. The claim gives the worker a lease; what the worker writes after that
is fenced by the lease (:mod:`.lease`).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic

from django.db import DatabaseError, OperationalError, connections, transaction
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Now

from .. import signals
from ..status import JobStatus
from ._sql import (
    NOTIFY_CHANNEL,
    QUEUE_STATE_MODEL,
    JobT,
    Ledger,
    attempt_table,
    columns,
    paused_sql,
    row,
    table,
)

logger = logging.getLogger(__name__)

_LOCK_NOT_AVAILABLE = "55P03"
_DEADLOCK_DETECTED = "40P01"
#: How the error of a job waiting for a worker that knows its name begins; the claim that
#: finally starts the job clears such a note (and only such a note).
WAITING_NOTE_PREFIX = "Waiting: "


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
class ClaimResult(Generic[JobT]):
    """The outcome of :meth:`JobManager.claim`; ``job`` is set only when ``CLAIMED``."""

    outcome: ClaimOutcome
    reason: str = ""
    job: JobT | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueWork:
    """What the ledger holds for a set of queues that a worker could still have to do.

    A burst worker stops only when this is :attr:`clear`: an empty receive proves nothing, as
    SQS's short polls sample some of its servers and may miss messages that exist.
    """

    #: Sent to the transport and not started yet: their messages are on the way.
    queued: int = 0
    #: Running on other live workers: a retry or a hand-back may bring them back.
    running_elsewhere: int = 0
    #: Due and waiting to be sent: a relay is in flight, about to run, or no scheduler runs.
    due: int = 0

    @property
    def clear(self) -> bool:
        """Whether nothing is queued, running elsewhere or due in these queues.

        >>> QueueWork().clear, QueueWork(due=1).clear
        (True, False)
        """
        return not (self.queued or self.running_elsewhere or self.due)


class ClaimQueries(Ledger[JobT]):
    """Claim ``queued`` jobs by their messages, and refuse those this worker cannot run."""

    def work_in(
        self,
        queues: Collection[str],
        *,
        worker: str,
        registered_names: Collection[str],
        stale_after_seconds: float,
    ) -> QueueWork:
        """Return what *queues* still hold for a worker named *worker* (see :class:`QueueWork`).

        Only jobs of *registered_names* count: one this worker cannot run is not its work (it
        refuses their messages, and the row says so). A running job counts only while its
        worker's heartbeat is younger than *stale_after_seconds*: the job of a lost worker waits
        for the scheduler's rescue. One statement: the ``queued`` and ``running`` rows plus the
        due ``scheduled`` ones, counted by kind, read through the status/queue indexes.

        Example::

            Job.objects.work_in(
                ["default"], worker="w1", registered_names={"app.send"}, stale_after_seconds=60
            ).clear  # True: nothing left to do
        """
        # A paused queue's due jobs are not coming: the pause says so where the queue shows.
        due = Q(status=JobStatus.SCHEDULED, blocked=False, run_at__lte=Now()) & ~Q(
            queue__in=self._paused_queues().values("name")
        )
        alive = Q(heartbeat_at__gte=Now() - dt.timedelta(seconds=stale_after_seconds))
        elsewhere = Q(status=JobStatus.RUNNING) & alive & ~Q(worker=worker)
        counts = self.filter(
            Q(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]) | due,
            queue__in=list(queues),
            name__in=list(registered_names),
        ).aggregate(
            queued=Count("id", filter=Q(status=JobStatus.QUEUED)),
            running_elsewhere=Count("id", filter=elsewhere),
            due=Count("id", filter=due),
        )
        return QueueWork(**counts)

    def _paused_queues(self) -> QuerySet[Any]:
        # By name, as _sql.queue_state_table does: this package never imports the models.
        meta = self.model._meta
        return meta.apps.get_model(meta.app_label, QUEUE_STATE_MODEL)._default_manager.filter(
            paused=True
        )

    def claim(
        self,
        *,
        job_id: uuid.UUID,
        dispatch_token: uuid.UUID,
        worker: str,
        registered_names: Collection[str],
        lock_timeout_seconds: float,
    ) -> ClaimResult[JobT]:
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
    ) -> list[ClaimResult[JobT]]:
        """Take ``queued`` jobs for *worker*, one statement for all: ``running``, attempts + 1, a
        new lease token each. Returns one result per ``(job_id, dispatch_token)`` of *messages*.

        Each claim opens an attempt in the history, numbered by ``total_attempts``, which an
        operator's retry never resets: the history reads 1, 2, 3, 4 across retries, while
        ``attempts`` counts against the retry limit of the current retry only.

        A claim succeeds only while the message's dispatch token is the job's current one, so a
        duplicate or stale message claims nothing. Waits at most *lock_timeout_seconds* for rows
        the scheduler has locked and not committed yet (outcome ``BUSY``).

        Example::

            results = Job.objects.claim_many([(job.id, token)], worker="w1", ...)
            [r.outcome for r in results]  # [ClaimOutcome.CLAIMED]
        """
        if not messages:
            return []
        locked = functools.partial(
            self._claim_locked,
            worker=worker,
            registered_names=registered_names,
            lock_timeout_seconds=lock_timeout_seconds,
        )
        fast = self._claim_at_once(
            messages,
            worker=worker,
            registered_names=registered_names,
            lock_timeout_seconds=lock_timeout_seconds,
        )
        if fast is None:
            return locked(messages)
        claimed, unclaimed = fast
        later: dict[tuple[uuid.UUID, uuid.UUID], ClaimResult[JobT]] = {}
        if unclaimed:
            # The claims above are committed: from here on nothing may raise, or those jobs
            # would stay running, run by nobody, until rescued. The rest take the careful path
            # (a row the scheduler has not committed yet, a stale token, a paused queue).
            try:
                rest = locked(unclaimed)
            except DatabaseError as exc:
                logger.error("cannot claim jobs=%d error=%s", len(unclaimed), exc)
                rest = [ClaimResult(outcome=ClaimOutcome.BUSY, reason=str(exc)) for _ in unclaimed]
            later = dict(zip(unclaimed, rest, strict=True))
        results: list[ClaimResult[JobT]] = []
        for message in messages:
            job = claimed.pop(message[0], None)  # pop: a duplicate in the batch is claimed once
            if job is not None:
                self._announce(job, old_status=JobStatus.QUEUED, signal=signals.job_started)
                results.append(ClaimResult(outcome=ClaimOutcome.CLAIMED, job=job))
            else:
                results.append(
                    later.get(message)
                    or ClaimResult(outcome=ClaimOutcome.NOT_CLAIMABLE, reason="duplicate message")
                )
        return results

    def _claim_sql(self, *, lock_first: bool) -> str:
        """The claim: ``queued`` rows whose token the message carries become ``running``, each
        with a new attempt in the history.

        Without *lock_first*, the statement sets its own lock timeout, in a CTE the UPDATE
        joins, so it is in force before the UPDATE can wait for a row lock.
        """
        settings = (
            ""
            if lock_first
            else "settings AS MATERIALIZED "
            "(SELECT set_config('lock_timeout', %(timeout)s, true) AS lock_timeout),"
        )
        return f"""
            WITH {settings} changed AS (
                UPDATE {table(self.model)} AS j
                SET status = %(running)s, attempts = j.attempts + 1,
                    total_attempts = j.total_attempts + 1, started_at = now(),
                    heartbeat_at = now(), finished_at = NULL, worker = %(worker)s,
                    progress = NULL, lease_token = gen_random_uuid(),
                    error = CASE WHEN starts_with(j.error, %(waiting)s) THEN '' ELSE j.error END
                FROM unnest(%(ids)s::uuid[], %(tokens)s::uuid[]) AS m(id, dispatch_token)
                    {"" if lock_first else ", settings"}
                WHERE j.id = m.id AND j.status = %(queued)s AND j.dispatch_token = m.dispatch_token
                    AND j.name = ANY(%(names)s) AND NOT {paused_sql(self.model, queue="j.queue")}
                    {"" if lock_first else "AND settings.lock_timeout IS NOT NULL"}
                RETURNING j.*
            ), opened AS (
                INSERT INTO {attempt_table(self.model)}
                    (job_id, number, worker, started_at, outcome, error, traceback)
                SELECT id, total_attempts, worker, started_at, '', '', '' FROM changed
            )
            SELECT {columns(self.model)} FROM changed
        """

    def _claim_params(
        self,
        messages: Sequence[tuple[uuid.UUID, uuid.UUID]],
        *,
        worker: str,
        registered_names: Collection[str],
        lock_timeout_seconds: float,
    ) -> dict[str, Any]:
        return {
            "running": JobStatus.RUNNING.value,
            "worker": worker,
            "waiting": WAITING_NOTE_PREFIX,
            "ids": [job_id for job_id, _ in messages],
            "tokens": [token for _, token in messages],
            "queued": JobStatus.QUEUED.value,
            "names": list(registered_names),
            "timeout": f"{max(1, int(lock_timeout_seconds * 1000))}ms",
        }

    def _claim_at_once(
        self,
        messages: Sequence[tuple[uuid.UUID, uuid.UUID]],
        *,
        worker: str,
        registered_names: Collection[str],
        lock_timeout_seconds: float,
    ) -> tuple[dict[uuid.UUID, JobT], list[tuple[uuid.UUID, uuid.UUID]]] | None:
        """Claim in one statement, committed at once; return the claimed jobs by id and the
        messages that claimed nothing, or ``None`` when the caller must take the careful path.

        Nearly always every job is claimable and its row unlocked: one round trip instead of
        five (begin, lock timeout, lock, claim, commit). A row the scheduler has locked and not
        committed yet reads as ``scheduled`` to this statement and is left for
        :meth:`_claim_locked`, which waits for it. Inside a caller's transaction the lock
        timeout would outlive the claim, so that takes the careful path too.
        """
        if connections[self._db_alias].in_atomic_block:
            return None
        params = self._claim_params(
            messages,
            worker=worker,
            registered_names=registered_names,
            lock_timeout_seconds=lock_timeout_seconds,
        )
        try:
            jobs = self._returning_many(self._claim_sql(lock_first=False), params, prepared=True)
        except OperationalError as exc:
            # A row held longer than the lock timeout, or two workers holding rows of each
            # other's duplicate messages: nothing was claimed; the careful path sorts it out.
            if getattr(exc.__cause__, "sqlstate", None) in (
                _LOCK_NOT_AVAILABLE,
                _DEADLOCK_DETECTED,
            ):
                return None
            raise
        claimed = {job.pk: job for job in jobs}
        return claimed, [m for m in dict.fromkeys(messages) if m[0] not in claimed]

    def _claim_locked(
        self,
        messages: Sequence[tuple[uuid.UUID, uuid.UUID]],
        *,
        worker: str,
        registered_names: Collection[str],
        lock_timeout_seconds: float,
    ) -> list[ClaimResult[JobT]]:
        """Claim in a transaction that first locks the rows, in id order, waiting at most
        *lock_timeout_seconds* for each (see :meth:`claim_many`)."""
        ids = [job_id for job_id, _ in messages]
        sql = self._claim_sql(lock_first=True)
        params = self._claim_params(
            messages,
            worker=worker,
            registered_names=registered_names,
            lock_timeout_seconds=lock_timeout_seconds,
        )
        try:
            with transaction.atomic(using=self._db_alias):
                # Lock first, in a statement of its own: an UPDATE whose WHERE tests the
                # status would skip a row the scheduler has locked and not committed yet
                # (its snapshot still says "scheduled"), instead of waiting for the commit.
                self._lock_rows(ids, lock_timeout_seconds)
                claimed = {job.pk: job for job in self._returning_many(sql, params)}
                # Inside the transaction: once it commits, nothing may raise (a claimed job
                # whose result is lost would stay running, run by nobody, until rescued).
                unclaimed = [(i, t) for i, t in messages if i not in claimed]
                reasons = self._put_back_paused(unclaimed)
                reasons.update(
                    self._why_not_claimed(
                        [m for m in unclaimed if m not in reasons], registered_names
                    )
                )
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
        results: list[ClaimResult[JobT]] = []
        for job_id, dispatch_token in messages:
            job = claimed.pop(job_id, None)  # pop: a duplicate in the batch is claimed once
            if job is None:
                results.append(
                    reasons.get((job_id, dispatch_token))
                    or ClaimResult(outcome=ClaimOutcome.NOT_CLAIMABLE, reason="duplicate message")
                )
                continue
            self._announce(job, old_status=JobStatus.QUEUED, signal=signals.job_started)
            results.append(ClaimResult(outcome=ClaimOutcome.CLAIMED, job=job))
        return results

    def _claim_one_by_one(
        self,
        messages: Sequence[tuple[uuid.UUID, uuid.UUID]],
        *,
        worker: str,
        registered_names: Collection[str],
        lock_timeout_seconds: float,
    ) -> list[ClaimResult[JobT]]:
        """One locked row must not hold up the others of a batch: claim them one by one.

        Each claim commits on its own, so an error part-way must not lose the ones made: the
        rest are reported ``BUSY`` (their messages come back shortly) instead of raising.
        """
        results: list[ClaimResult[JobT]] = []
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

    def return_queued(
        self, messages: Sequence[tuple[uuid.UUID, uuid.UUID]], *, lock_timeout_seconds: float = 5.0
    ) -> int:
        """Put the ``queued`` jobs of *messages* (``(job_id, dispatch_token)`` pairs) back to
        ``scheduled``, due as before, and wake the scheduler to send them again.

        For the jobs of a message a worker took part of and cannot start soon: the scheduler
        sends them again in a new message, with a new token, and the old message (deleted by
        the worker) could only claim nothing. Fenced by the dispatch token: a pair that is
        stale changes nothing. Returns how many jobs went back.

        The rows are locked first, waiting at most *lock_timeout_seconds* (then
        :class:`~django.db.OperationalError`): a worker may hand a message's jobs back before
        the scheduler that sent it has committed, and an UPDATE whose WHERE tests the status
        would read those rows as still ``scheduled`` and skip them. The worker would then
        delete the message of jobs left ``queued``, which wait, sent to nobody, until
        ``REQUEUE_AFTER``.

        Example::

            Job.objects.return_queued([(job.id, token)])  # 1
        """
        if not messages:
            return 0
        with transaction.atomic(using=self._db_alias):
            self._lock_rows([job_id for job_id, _ in messages], lock_timeout_seconds)
            jobs = self._put_back(messages, paused_only=False)
        return len(jobs)

    def _lock_rows(self, ids: Sequence[uuid.UUID], lock_timeout_seconds: float) -> None:
        """Lock the rows of *ids* in id order (so that two workers never wait for each other),
        waiting at most *lock_timeout_seconds* for each; inside a transaction."""
        self._execute(
            "SELECT set_config('lock_timeout', %(timeout)s, true)",
            {"timeout": f"{max(1, int(lock_timeout_seconds * 1000))}ms"},
        )
        self._execute(
            f"SELECT 1 FROM {table(self.model)} WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE",
            {"ids": list(ids)},
        )

    def _put_back(
        self, messages: Sequence[tuple[uuid.UUID, uuid.UUID]], *, paused_only: bool
    ) -> list[JobT]:
        """Put ``queued`` jobs of *messages* back to ``scheduled`` (only those of paused queues
        with *paused_only*), fenced by their tokens, announce them, and NOTIFY the scheduler.
        Each returned job carries ``message_token``, the token it was named with."""
        paused = f"AND {paused_sql(self.model, queue='j.queue')}" if paused_only else ""
        sql = f"""
            WITH changed AS (
                UPDATE {table(self.model)} AS j
                SET status = %(scheduled)s, dispatch_token = NULL, enqueued_at = NULL
                FROM unnest(%(ids)s::uuid[], %(tokens)s::uuid[]) AS m(id, dispatch_token)
                WHERE j.id = m.id AND j.status = %(queued)s
                    AND j.dispatch_token = m.dispatch_token {paused}
                RETURNING j.*, m.dispatch_token AS message_token
            )
            SELECT {columns(self.model, prefix="changed.")}, changed.message_token,
                (SELECT pg_notify(%(channel)s, '')) AS woke
            FROM changed
        """
        jobs = self._returning_many(
            sql,
            {
                "scheduled": JobStatus.SCHEDULED.value,
                "ids": [job_id for job_id, _ in messages],
                "tokens": [token for _, token in messages],
                "queued": JobStatus.QUEUED.value,
                "channel": NOTIFY_CHANNEL,
            },
        )
        for job in jobs:
            self._announce(job, old_status=JobStatus.QUEUED)
        return jobs

    def _put_back_paused(
        self, messages: Sequence[tuple[uuid.UUID, uuid.UUID]]
    ) -> dict[tuple[uuid.UUID, uuid.UUID], ClaimResult[JobT]]:
        """Put the ``queued`` jobs of paused queues among *messages* back to ``scheduled``.

        A message sent before the pause must not start its job: the job goes back to wait with
        the rest of its queue, to be sent again (with a new token) once the queue is resumed,
        and the message is dropped (``NOT_CLAIMABLE``). Fenced by the dispatch token, like a
        claim. Runs in the claim's transaction, whose row locks it already holds.
        """
        if not messages:
            return {}
        reasons: dict[tuple[uuid.UUID, uuid.UUID], ClaimResult[JobT]] = {}
        for job in self._put_back(messages, paused_only=True):
            queue = row(job).queue
            reasons[(job.pk, job.message_token)] = ClaimResult(  # type: ignore[attr-defined]
                outcome=ClaimOutcome.NOT_CLAIMABLE,
                reason=f"queue {queue!r} is paused; the job waits as scheduled until it is resumed",
            )
        return reasons

    def _why_not_claimed(
        self,
        messages: Sequence[tuple[uuid.UUID, uuid.UUID]],
        registered_names: Collection[str],
    ) -> dict[tuple[uuid.UUID, uuid.UUID], ClaimResult[JobT]]:
        """Say, in one query, why each ``(job_id, dispatch_token)`` claimed nothing."""
        if not messages:
            return {}
        rows = {
            job_id: (status, token, name)
            for job_id, status, token, name in self.filter(
                pk__in=[job_id for job_id, _ in messages]
            ).values_list("id", "status", "dispatch_token", "name")
        }
        reasons: dict[tuple[uuid.UUID, uuid.UUID], ClaimResult[JobT]] = {}
        for job_id, dispatch_token in messages:
            result: ClaimResult[JobT]
            found = rows.get(job_id)
            if found is None:
                result = ClaimResult(outcome=ClaimOutcome.NOT_CLAIMABLE, reason="no such job")
            elif found[0] != JobStatus.QUEUED:
                result = ClaimResult(
                    outcome=ClaimOutcome.NOT_CLAIMABLE, reason=f"job is {found[0]}"
                )
            elif found[1] != dispatch_token:
                result = ClaimResult(
                    outcome=ClaimOutcome.NOT_CLAIMABLE, reason="stale dispatch token"
                )
            elif found[2] not in registered_names:
                result = ClaimResult(
                    outcome=ClaimOutcome.NOT_REGISTERED,
                    reason=f"job name {found[2]!r} is not registered in this worker",
                )
            else:
                result = ClaimResult(
                    outcome=ClaimOutcome.NOT_CLAIMABLE, reason="job changed meanwhile"
                )
            reasons[(job_id, dispatch_token)] = result
        return reasons

    def refuse_unregistered(
        self, *, job_id: uuid.UUID, dispatch_token: uuid.UUID, reason: str, max_deliveries: int
    ) -> JobT | None:
        """Count a delivery of a ``queued`` job that a worker could not run (its name is not
        registered there); fail the job at the *max_deliveries*-th.

        The count is the row's ``refused_deliveries``, so it survives the scheduler sending the
        job again in a new message (which restarts SQS's receive count). Until the limit the job
        stays ``queued`` and its error says why it waits (``Waiting: <reason>; refused 2 of 5
        deliveries...``, cleared when a worker starts it); at the limit it is ``failed`` with
        ``<reason>; gave up after 5 deliveries`` and ``job_failed`` is sent. Fenced by
        *dispatch_token*: returns ``None`` (and counts nothing) when the message is stale.
        """
        give_up = "refused_deliveries + 1 >= %(max_deliveries)s"
        sql = f"""
            UPDATE {table(self.model)}
            SET refused_deliveries = refused_deliveries + 1,
                status = CASE WHEN {give_up} THEN %(failed)s ELSE status END,
                finished_at = CASE WHEN {give_up} THEN now() ELSE finished_at END,
                error = CASE WHEN {give_up}
                    THEN %(reason)s || '; gave up after ' || (refused_deliveries + 1)::text
                        || ' deliveries'
                    ELSE %(waiting)s || %(reason)s || '; refused '
                        || (refused_deliveries + 1)::text || ' of ' || %(max_deliveries)s::text
                        || ' deliveries, waiting for a worker that knows it'
                    END,
                traceback = ''
            WHERE id = %(id)s AND status = %(queued)s AND dispatch_token = %(dispatch_token)s
            RETURNING {columns(self.model)}
        """
        job = self._returning(
            sql,
            {
                "max_deliveries": max_deliveries,
                "failed": JobStatus.FAILED.value,
                "reason": reason,
                "waiting": WAITING_NOTE_PREFIX,
                "id": job_id,
                "queued": JobStatus.QUEUED.value,
                "dispatch_token": dispatch_token,
            },
        )
        if job is not None and row(job).status == JobStatus.FAILED:
            self._announce(job, old_status=JobStatus.QUEUED, signal=signals.job_failed)
        return job

    def fail_unregistered(
        self, *, job_id: uuid.UUID, dispatch_token: uuid.UUID, error: str
    ) -> JobT | None:
        """Fail a ``queued`` job whose name is not registered at once, if *dispatch_token* is
        current (``run_jobs()`` in tests, where no other worker can know the name)."""
        sql = f"""
            UPDATE {table(self.model)}
            SET status = %(failed)s, finished_at = now(), error = %(error)s, traceback = ''
            WHERE id = %(id)s AND status = %(queued)s AND dispatch_token = %(dispatch_token)s
            RETURNING {columns(self.model)}
        """
        job = self._returning(
            sql,
            {
                "failed": JobStatus.FAILED.value,
                "error": error,
                "id": job_id,
                "queued": JobStatus.QUEUED.value,
                "dispatch_token": dispatch_token,
            },
        )
        if job is not None:
            self._announce(job, old_status=JobStatus.QUEUED, signal=signals.job_failed)
        return job
