"""The jobs a worker holds a lease on, from their claim until their outcome is written.

:class:`ClaimedJobs` keeps two collections, both guarded by ``ClaimedJobs._lock``:

- ``running``: claimed jobs whose outcome the main loop has not collected yet. The main loop
  adds them (:meth:`~ClaimedJobs.add`) and removes them (:meth:`~ClaimedJobs.collect`,
  :meth:`~ClaimedJobs.hand_back_all`). A job thread or the event loop thread sets the
  ``outcome`` of its own entry (:meth:`~ClaimedJobs.complete`), unless the main loop marked it
  ``abandoned`` first (timed out, or handed back).
- ``unrecorded``: finished jobs whose outcome is not written yet (the database may be away).
  Only the main loop adds and removes them.

The heartbeat thread reads the leases of both (:meth:`~ClaimedJobs.leases`): a finished job
whose outcome is not written is still ours. It also passes on the cancels operators requested
(:meth:`~ClaimedJobs.request_cancels`), which set the ``cancel`` of running entries (a
:class:`~django_asyncjobs.context.CancelRequest`, thread-safe on its own). The long-poll
threads read how many jobs run (:meth:`~ClaimedJobs.running_count`). Every database write
here (outcomes, hand-backs) is made by the main loop, outside the lock.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from .. import execution, retry, tracing
from ..context import CancelRequest
from ..db import close_if_unusable, retry_on_lost_connection
from ..logs import job_fields
from ..models import Job
from ..registry import JobDefinition
from ..status import JobStatus

# The worker package's one logger (see loop.py).
logger = logging.getLogger("django_asyncjobs.worker")


@dataclass(slots=True, kw_only=True)
class Running:
    """A claimed job: its row as claimed, its lease, and its outcome once it has one.

    ``started`` and ``deadline`` are ``time.monotonic()`` values; ``deadline`` is ``None`` for
    a job without a timeout.
    """

    job: Job
    definition: JobDefinition[Any, Any]
    lease_token: uuid.UUID
    started: float
    deadline: float | None
    outcome: execution.Outcome | None = None
    abandoned: bool = False
    #: Set when an operator asks to cancel the job; its context reads it.
    cancel: CancelRequest = field(default_factory=CancelRequest)
    #: The attempt's OpenTelemetry span, ended when its outcome is written.
    trace: tracing.RunSpan | None = None


class ClaimedJobs:
    """Track this worker's claimed jobs, and write their outcomes (main loop only)."""

    def __init__(self, *, using: str) -> None:
        self.using = using
        self._lock = threading.Lock()
        self._running: dict[uuid.UUID, Running] = {}
        self._unrecorded: list[Running] = []

    # -- read by every thread --------------------------------------------------------------------

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def unrecorded_count(self) -> int:
        with self._lock:
            return len(self._unrecorded)

    def has_work(self) -> bool:
        """Return whether a job runs, or waits for its outcome to be written."""
        with self._lock:
            return bool(self._running or self._unrecorded)

    def leases(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Return ``(job id, lease token)`` of every job the heartbeat must keep alive."""
        with self._lock:
            # Finished jobs not yet recorded (the database was away) are still ours.
            entries = [*self._running.values(), *self._unrecorded]
            return [(e.job.id, e.lease_token) for e in entries]

    def still_running(self, job_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Return those of *job_ids* that run here and have no outcome yet.

        A job that ended is not "running" for the heartbeat: once its outcome is written the row
        no longer holds its lease, and writing it reports a lost lease itself if it was lost.
        """
        with self._lock:
            return {
                job_id
                for job_id in job_ids
                if (entry := self._running.get(job_id)) is not None and entry.outcome is None
            }

    def seconds_to_deadline(self, now: float) -> float | None:
        """Return how long until the next running job's timeout, or ``None`` if none has one."""
        with self._lock:
            waits = [
                max(0.0, e.deadline - now) for e in self._running.values() if e.deadline is not None
            ]
        return min(waits, default=None)

    # -- written by the heartbeat thread ---------------------------------------------------------

    def request_cancels(self, requests: Mapping[uuid.UUID, str]) -> None:
        """Tell the running jobs of *requests* (job id -> who asked) that they are cancelled.

        An ``async def`` job's task is cancelled at once; a ``def`` job learns it from its
        context (a check, its next progress report) or is stopped at its timeout. Jobs that
        finished meanwhile are left alone: their outcome is recorded as it is.
        """
        with self._lock:
            entries = [
                (self._running[job_id], by)
                for job_id, by in requests.items()
                if job_id in self._running and self._running[job_id].outcome is None
            ]
        for entry, by in entries:
            # Outside the lock: for an async job this schedules the task's cancellation.
            if entry.cancel.request(by):
                logger.warning(
                    "cancel requested name=%s id=%s by=%s; %s",
                    entry.job.name,
                    entry.job.id,
                    by or "-",
                    "cancelling its task"
                    if entry.definition.is_async
                    else "it stops at its next check or progress report, or at its timeout",
                    extra=job_fields(entry.job),
                )

    # -- written by job threads and the event loop thread ----------------------------------------

    def complete(self, entry: Running, outcome: execution.Outcome) -> bool:
        """Store the *outcome* of a job that ended; return ``False`` if it was abandoned."""
        with self._lock:
            if entry.abandoned:
                return False
            entry.outcome = outcome
        return True

    # -- main loop only --------------------------------------------------------------------------

    def add(self, entry: Running) -> None:
        with self._lock:
            self._running[entry.job.id] = entry

    def collect(self, *, now: float, supervised: bool) -> bool:
        """Move finished (or timed-out) jobs from ``running`` to the recording list.

        Return whether a sync job is stuck in its thread past its timeout under a supervisor:
        then this worker process must retire, and the job stays ``running``.
        """
        retire = False
        stuck: list[Running] = []
        with self._lock:
            for job_id, entry in list(self._running.items()):
                if entry.outcome is None and entry.deadline is not None and now >= entry.deadline:
                    assert entry.job.timeout is not None
                    stuck_thread = not entry.definition.is_async
                    if stuck_thread and supervised:
                        # Only ending the process stops a thread stuck in a blocking call. Record
                        # nothing while it may still run: the supervisor records the timeout, and
                        # hands back the other jobs, once this process is gone.
                        logger.warning(
                            "job timed out name=%s id=%s timeout=%gs; its thread cannot be "
                            "interrupted, so this worker process retires and is replaced",
                            entry.job.name,
                            job_id,
                            entry.job.timeout,
                            extra=job_fields(entry.job),
                        )
                        stuck.append(entry)
                        retire = True
                        continue
                    # Not supervised: record the timeout and free the slot; the lease fences
                    # whatever the abandoned thread might still write.
                    entry.abandoned = True
                    entry.outcome = execution.timed_out(entry.job.timeout, started=entry.started)
                    logger.warning(
                        "job timed out name=%s id=%s timeout=%gs",
                        entry.job.name,
                        job_id,
                        entry.job.timeout,
                        extra=job_fields(entry.job),
                    )
                if entry.outcome is not None:
                    del self._running[job_id]
                    self._unrecorded.append(entry)
        for entry in stuck:
            # This process exits before any outcome is written here: end the span now (outside
            # the lock: an exporter may do I/O).
            assert entry.job.timeout is not None
            tracing.end_run(
                entry.trace,
                outcome_name="timed_out",
                outcome=execution.timed_out(entry.job.timeout, started=entry.started),
            )
            entry.trace = None
        return retire

    def record_outcomes(self) -> bool:
        """Write the outcomes of finished jobs: every success in one statement, then failures.

        Return ``False`` when the database could not take them; they are kept (and heartbeated)
        and written by a later call.
        """
        with self._lock:
            pending = list(self._unrecorded)
        if not pending:
            return True
        manager = Job.objects.db_manager(self.using)
        successes = [entry for entry in pending if entry.outcome and entry.outcome.ok]
        try:
            if successes:
                rows = [(e.job.id, e.lease_token, e.outcome.result) for e in successes if e.outcome]
                stored = retry_on_lost_connection(
                    functools.partial(manager.record_successes, rows), using=self.using
                )
                self._recorded(successes, stored)
            for entry in pending:
                if entry.outcome and not entry.outcome.ok:
                    record = functools.partial(
                        manager.end_attempt,
                        job=entry.job,
                        lease_token=entry.lease_token,
                        decide=functools.partial(
                            retry.decide,
                            ending=retry.Ending.FAILED,
                            backoff=entry.definition.resolve_backoff(),
                        ),
                        error=entry.outcome.error,
                        traceback=entry.outcome.traceback,
                    )
                    job = retry_on_lost_connection(record, using=self.using)
                    self._recorded([entry], [job])
        except DatabaseError as exc:
            # Kept in memory (and heartbeated) until the database takes them.
            logger.error("cannot record outcomes count=%d error=%s", len(pending), exc)
            close_if_unusable(self.using, after_error=True)
            return False
        return True

    def _recorded(self, entries: list[Running], stored: Sequence[Job | None]) -> None:
        """Forget *entries* (their outcomes are written) and log one line each."""
        with self._lock:
            done = {id(entry) for entry in entries}
            self._unrecorded[:] = [e for e in self._unrecorded if id(e) not in done]
        for entry, job in zip(entries, stored, strict=True):
            outcome = entry.outcome
            assert outcome is not None
            if job is None:
                logger.warning(
                    "lease lost; outcome discarded name=%s id=%s attempt=%d",
                    entry.job.name,
                    entry.job.id,
                    entry.job.total_attempts,
                    extra=job_fields(entry.job),
                )
                tracing.end_run(entry.trace, outcome_name="lease_lost", outcome=outcome)
                continue
            verb = job.status if job.status != JobStatus.SCHEDULED else "retrying"
            if outcome.ok and job.cancel_requested_at is not None:
                # Finished before the request reached it: the success stands.
                logger.warning(
                    "job succeeded before its cancel request reached it name=%s id=%s by=%s",
                    entry.job.name,
                    entry.job.id,
                    job.cancel_requested_by or "-",
                    extra=job_fields(entry.job),
                )
            if outcome.ok:
                log = logger.info
            elif verb in ("retrying", JobStatus.CANCELLED):
                log = logger.warning
            else:
                log = logger.error
            log(
                "job %s name=%s id=%s attempt=%d duration=%.3fs%s",
                verb,
                entry.job.name,
                entry.job.id,
                entry.job.total_attempts,
                outcome.duration_seconds,
                "" if outcome.ok else f" error={outcome.error}",
                extra=job_fields(entry.job),
            )
            tracing.end_run(
                entry.trace,
                outcome_name=_outcome_name(outcome, verb),
                outcome=outcome,
                status=job.status,
            )

    def hand_back_all(self, *, worker_id: str, supervised: bool, free_interruptions: int) -> None:
        """The grace period is over: give back every job that is still running."""
        with self._lock:
            entries = []
            for job_id, entry in list(self._running.items()):
                del self._running[job_id]
                if entry.outcome is not None:
                    self._unrecorded.append(entry)  # finished in time: record, not hand back
                else:
                    entry.abandoned = True
                    entries.append(entry)
        for entry in entries:
            tracing.end_run(entry.trace, outcome_name="interrupted")
        if supervised:
            # The rows stay running until this process has exited; the supervisor hands them
            # back then, so no other worker can start a job whose thread still runs here.
            return
        manager = Job.objects.db_manager(self.using)
        for entry in entries:
            job = entry.job
            reason = (
                f"interrupted: worker {worker_id} shut down during attempt {job.total_attempts}"
            )
            try:
                hand_back = functools.partial(
                    manager.end_attempt,
                    job=job,
                    lease_token=entry.lease_token,
                    decide=functools.partial(
                        retry.decide,
                        ending=retry.Ending.INTERRUPTED,
                        free_interruptions=free_interruptions,
                    ),
                    error=reason,
                )
                stored = retry_on_lost_connection(hand_back, using=self.using)
            except DatabaseError as exc:
                # The scheduler rescues it once its heartbeat is stale.
                logger.error("cannot hand back id=%s error=%s", job.id, exc, extra=job_fields(job))
                close_if_unusable(self.using, after_error=True)
                continue
            if stored is None:
                logger.warning(
                    "lease lost; nothing to hand back id=%s", job.id, extra=job_fields(job)
                )
            else:
                logger.warning(
                    "job handed back name=%s id=%s attempt=%d status=%s",
                    job.name,
                    job.id,
                    job.total_attempts,
                    stored.status,
                    extra=job_fields(job),
                )
        # Async jobs are cancelled, and abandoned threads end with the process, when the worker
        # shuts down (Worker._shutdown).


def _outcome_name(outcome: execution.Outcome, verb: str) -> str:
    """Return the outcome a span reports: how the attempt ended, then what became of the job."""
    if outcome.ok:
        return "succeeded"
    if outcome.timed_out:
        return "timed_out"
    return str(verb)  # retrying, failed or cancelled
