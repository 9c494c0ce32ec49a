"""The scheduler: relays due jobs from PostgreSQL to their transport queues, and recovers jobs.

It is the outbox relay of the design. ``delay()`` only writes a row (and a NOTIFY); the scheduler
wakes on that NOTIFY (or polls), locks due rows with ``FOR UPDATE SKIP LOCKED``, stamps a dispatch
token, sends ``{job id, token}`` doorbells in batches, and commits. Several schedulers may run at
once: a row one of them locked is skipped by the others.

Each pass first recovers what crashes left behind: a running job whose heartbeat went stale (its
worker is gone) is recorded as a lost attempt and retried or failed; a queued job that no worker
started in time (its message was lost) is sent again with a new dispatch token.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import psycopg
from django.db import DatabaseError, connections, router
from django.utils import timezone

from . import periodic, retry, tracing
from .conf import get_settings
from .db import close_if_unusable, retry_on_lost_connection
from .exceptions import TransportError, TransportMisconfigured
from .logs import job_fields
from .models import Job, Process, ProcessKind, RegisteredJob
from .payload import Doorbell
from .processes import DEAD_PROCESS_RETENTION_SECONDS, PRUNE_DEAD_EVERY_SECONDS, Presence
from .queries import NOTIFY_CHANNEL, DueJob
from .registry import registry
from .transports.base import MAX_BATCH_SIZE, OutgoingMessage, Transport

logger = logging.getLogger(__name__)

#: Longest pause between attempts while SQS or PostgreSQL is unreachable.
MAX_ERROR_BACKOFF_SECONDS = 30.0
#: While a queue is held back by flow control, look again this often: workers starting jobs
#: make room without waking the scheduler.
THROTTLED_POLL_SECONDS = 0.05
#: Housekeeping (periodic jobs, dependents, rescues, pruning) runs at most this often, so the
#: fast polls of a throttled queue cost one relay query, not a dozen.
HOUSEKEEPING_MIN_SECONDS = 0.25
MIN_WAIT_SECONDS = 0.02
#: Retention pruning: one batch of this many rows, at most once a minute, so that it never
#: competes with relaying.
PRUNE_BATCH_SIZE = 1000
PRUNE_EVERY_SECONDS = 60.0


class Scheduler:
    """Relay due jobs to the transport, in priority order, until stopped.

    Example::

        scheduler = Scheduler(transport=get_transport())
        scheduler.run_once()      # one pass: returns how many jobs were sent
        scheduler.run()           # until scheduler.stop() (SIGTERM in runscheduler)
    """

    def __init__(
        self,
        *,
        transport: Transport,
        batch_size: int | None = None,
        interval_seconds: float | None = None,
        using: str | None = None,
    ) -> None:
        conf = get_settings()
        self.transport = transport
        self.batch_size = batch_size or conf.scheduler_batch_size
        self.interval_seconds = interval_seconds or conf.scheduler_interval_seconds
        self.using = using or router.db_for_write(Job)
        self.stale_after_seconds = conf.stale_after_seconds
        self.max_queued_per_queue = conf.max_queued_per_queue
        self.retention_days = conf.retention_days
        self._pruned_at = float("-inf")
        #: Whether the last pass left due jobs behind because of flow control.
        self.throttled = False
        #: Since when (monotonic) :meth:`run` has reached the database without an error; None
        #: outside run(). Workers cannot heartbeat while the database is away, so a rescue waits
        #: until it has been reachable for a whole stale window.
        self._database_ok_since: float | None = None
        self._housekept_at = float("-inf")
        self._names_recorded = False
        self.requeue_after_seconds = conf.requeue_after_seconds
        self._stop = threading.Event()
        self._listener: psycopg.Connection[Any] | None = None
        self._failing = False
        #: This scheduler's row in the process table, while :meth:`run` runs.
        self._presence: Presence | None = None
        self._processes_pruned_at = float("-inf")

    # -- one pass --------------------------------------------------------------------------------

    def _send(self, due: list[DueJob]) -> set[uuid.UUID]:
        """Send *due* (highest priority first) in batches; return the ids that were not sent.

        After a transport error nothing more is attempted in this pass: every job not yet sent
        is returned for the relay to put back.
        """
        batches: dict[str, list[DueJob]] = defaultdict(list)
        ordered: list[list[DueJob]] = []
        for job in due:
            batch = batches[job.queue]
            batch.append(job)
            if len(batch) == MAX_BATCH_SIZE:
                ordered.append(batch)
                batches[job.queue] = []
        ordered.extend(batch for batch in batches.values() if batch)
        failed: set[uuid.UUID] = set()
        for index, batch in enumerate(ordered):
            messages = [
                OutgoingMessage(
                    id=str(i),
                    body=Doorbell(job_id=job.id, dispatch_token=job.dispatch_token).encode(),
                )
                for i, job in enumerate(batch)
            ]
            try:
                with tracing.relay_span(
                    queue=batch[0].queue, jobs=batch, transport=self.transport
                ) as span:
                    refused = self.transport.send_batch(batch[0].queue, messages)
                    tracing.refused(span, count=len(refused))
            except TransportError as exc:
                for rest in ordered[index:]:
                    failed.update(job.id for job in rest)
                raise _PartialSend(failed, exc) from exc
            failed.update(batch[int(i)].id for i in refused)
        return failed

    def record_registered_names(self) -> None:
        """Record this process's job names and their at-most-once policy, which
        ``asyncjobs_enqueue()`` (SQL) checks names against and copies onto the rows it inserts."""
        now = timezone.now()
        rows = [
            RegisteredJob(name=definition.name, seen_at=now, at_most_once=definition.at_most_once)
            for definition in registry
        ]
        RegisteredJob.objects.using(self.using).bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["name"],
            update_fields=["seen_at", "at_most_once"],
        )
        self._names_recorded = True

    def rescue_stalled(self) -> int:
        """Record the attempts of workers that went silent; return how many jobs were rescued.

        Each job is retried per its policy, or failed when its attempts are used up or its row is
        ``at_most_once`` (read from the row, so a scheduler of a rolling deploy that does not
        know the job's name still never runs it twice). The write is fenced by the lease and
        re-checks the heartbeat, so a worker that came back in time keeps its job and two
        schedulers never both rescue one.
        """
        since = self._database_ok_since
        if since is not None and time.monotonic() - since < self.stale_after_seconds:
            return 0
        manager = Job.objects.db_manager(self.using)
        rescued = 0
        for job in manager.stalled(stale_after_seconds=self.stale_after_seconds):
            assert job.lease_token is not None
            # Only the backoff comes from the code, when this process knows it; the rest of
            # the policy (max_retries, at_most_once) is on the row the decision reads.
            definition = registry.get(job.name) if job.name in registry.names() else None
            error = (
                f"WorkerLost: no heartbeat from worker {job.worker} for over "
                f"{self.stale_after_seconds:g} s during attempt {job.total_attempts}"
            )
            stored = manager.end_attempt(
                job=job,
                lease_token=job.lease_token,
                decide=functools.partial(
                    retry.decide,
                    ending=retry.Ending.LOST,
                    backoff=definition.resolve_backoff() if definition else None,
                ),
                error=error,
                stale_after_seconds=self.stale_after_seconds,
            )
            if stored is not None:
                rescued += 1
                logger.warning(
                    "rescued job of a lost worker name=%s id=%s attempt=%d worker=%s status=%s",
                    job.name,
                    job.id,
                    job.total_attempts,
                    job.worker,
                    stored.status,
                    extra=job_fields(job),
                )
        return rescued

    def prune(self) -> int:
        """Delete one batch of finished jobs past ``RETENTION_DAYS`` (once a minute at most)."""
        if self.retention_days is None or time.monotonic() - self._pruned_at < PRUNE_EVERY_SECONDS:
            return 0
        self._pruned_at = time.monotonic()
        deleted = next(
            Job.objects.db_manager(self.using).purge(
                older_than_seconds=self.retention_days * 86400, batch_size=PRUNE_BATCH_SIZE
            ),
            0,
        )
        if deleted:
            logger.info(
                "pruned finished jobs count=%d retention_days=%g", deleted, self.retention_days
            )
        return deleted

    def prune_processes(self) -> int:
        """Delete the rows of processes dead for a day (every few minutes at most)."""
        if time.monotonic() - self._processes_pruned_at < PRUNE_DEAD_EVERY_SECONDS:
            return 0
        self._processes_pruned_at = time.monotonic()
        deleted = Process.objects.db_manager(self.using).prune_dead(
            older_than_seconds=DEAD_PROCESS_RETENTION_SECONDS
        )
        if deleted:
            logger.info("pruned rows of dead processes count=%d", deleted)
        return deleted

    def resend_lost(self) -> int:
        """Make queued jobs whose message was lost due again; return how many."""
        count = Job.objects.db_manager(self.using).resend_lost(
            requeue_after_seconds=self.requeue_after_seconds
        )
        if count:
            logger.warning(
                "sending again queued jobs no worker started count=%d requeue_after=%gs",
                count,
                self.requeue_after_seconds,
            )
        return count

    def run_once(self, *, relay_only: bool = False) -> int:
        """Release or cancel dependents, recover stalled and lost jobs, then relay due jobs.

        Returns how many jobs were sent. *relay_only* skips the housekeeping.

        Raises :class:`~django_asyncjobs.exceptions.TransportError` when the transport failed
        (the jobs it did not take stay scheduled) and :class:`django.db.DatabaseError` when
        PostgreSQL did.
        """
        manager = Job.objects.db_manager(self.using)
        if not relay_only:
            periodic.enqueue_due(using=self.using)
            manager.release_ready()
            manager.cancel_orphans()
            self.rescue_stalled()
            self.resend_lost()
            self.prune()
            self._housekept_at = time.monotonic()
        limit = self.max_queued_per_queue
        queued = manager.queued_counts() if limit else {}
        total = 0
        self.throttled = False
        for queue in manager.due_queues():
            room = limit - queued.get(queue, 0) if limit else None
            sent = self._relay_queue(queue, room)
            total += sent
            if room is not None and sent >= room:
                self.throttled = True
        return total

    def _relay_queue(self, queue: str, room: int | None) -> int:
        """Relay due jobs of *queue*, at most *room* of them (``None``: all); return how many."""
        manager = Job.objects.db_manager(self.using)
        total = 0
        while not self._stop.is_set() and (room is None or total < room):
            error: _PartialSend | None = None

            def send(due: list[DueJob]) -> set[uuid.UUID]:
                nonlocal error
                try:
                    return self._send(due)
                except _PartialSend as exc:
                    error = exc
                    return exc.failed

            limit = self.batch_size if room is None else min(self.batch_size, room - total)
            result = manager.relay_due(queue=queue, limit=limit, send=send)
            total += result.sent
            if result.sent:
                logger.debug(
                    "relayed jobs queue=%s sent=%d put_back=%d", queue, result.sent, result.put_back
                )
            if error is not None:
                raise error.cause
            if result.sent + result.put_back < limit:
                break
        return total

    # -- the loop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current pass. Safe from signal handlers."""
        self._stop.set()

    def run(self) -> None:
        """Relay due jobs until :meth:`stop`, woken by NOTIFY and polling every interval.

        SQS or PostgreSQL being unreachable is logged once and retried with a growing pause; it
        never ends the loop. The loop keeps its database connection from pass to pass, whatever
        ``CONN_MAX_AGE`` says, and replaces it only when it stops working (see ``db.py``).
        """
        logger.info(
            "scheduler started batch_size=%d interval=%.1fs", self.batch_size, self.interval_seconds
        )
        backoff = 0.0
        # Registered by the first pass; a failure is logged, and the heartbeats of later
        # passes write the row once the database answers.
        self._presence = Presence(kind=ProcessKind.SCHEDULER, using=self.using, logger=logger)
        try:
            while not self._stop.is_set():
                # Not close_old_connections(): with CONN_MAX_AGE = 0 that opened a new session
                # for nearly every pass (up to twenty a second while a queue is throttled).
                close_if_unusable(self.using)
                if self._database_ok_since is None:
                    self._database_ok_since = time.monotonic()
                try:
                    # LISTEN before the pass: a job committed between the pass and the wait
                    # must find us listening, or it waits a whole interval.
                    self._listen()
                    # A connection found dead (PostgreSQL restarted while we waited) is replaced
                    # at once, and the pass run again, without the error pause.
                    wait = retry_on_lost_connection(
                        self._pass, using=self.using, on_lost=self._database_was_lost
                    )
                    if self._failing:
                        logger.warning("scheduler recovered; relaying again")
                        self._failing = False
                    backoff = 0.0
                    # The LISTEN connection can die here too (a database restart).
                    self._wait_for_notify(wait)
                except (TransportError, DatabaseError, psycopg.Error) as exc:
                    if not isinstance(exc, TransportError):
                        self._database_ok_since = None
                    backoff = min(MAX_ERROR_BACKOFF_SECONDS, max(1.0, backoff * 2))
                    self._report_failure(exc, backoff)
                    self._close_listener()
                    self._stop.wait(backoff)
        finally:
            self._close_listener()
            # A clean stop only: a scheduler that crashed leaves its row to go stale.
            if self._stop.is_set():
                self._presence.unregister()
            logger.info("scheduler stopped")

    def _pass(self) -> float:
        """Run one pass of :meth:`run`; return how long to wait for the next one."""
        if not self._names_recorded:
            self.record_registered_names()
        # Before the relay: a scheduler that cannot reach SQS is still alive.
        if self._presence is not None:
            self._presence.tick()
            self.prune_processes()
        # A throttled queue is polled fast; housekeeping need not follow it.
        recent = time.monotonic() - self._housekept_at < HOUSEKEEPING_MIN_SECONDS
        self.run_once(relay_only=self.throttled and recent)
        wait = self._seconds_to_wait()
        # However long the poll interval, the heartbeat must not go stale between passes.
        return wait if self._presence is None else min(wait, self._presence.interval_seconds)

    def _database_was_lost(self) -> None:
        # The database went away since the last pass: workers could not heartbeat meanwhile,
        # so rescues wait a whole stale window again.
        self._database_ok_since = time.monotonic()

    def _report_failure(self, exc: Exception, backoff: float) -> None:
        # One line when trouble starts, then quiet debug lines: an outage must not flood the log.
        if not self._failing:
            if isinstance(exc, TransportMisconfigured):
                logger.error("scheduler's transport is misconfigured, retrying error=%s", exc)
            else:
                logger.error("scheduler cannot relay jobs, retrying error=%s", exc)
            self._failing = True
        else:
            logger.debug("scheduler still failing retry_in=%.0fs error=%s", backoff, exc)

    def _seconds_to_wait(self) -> float:
        if self.throttled:
            return THROTTLED_POLL_SECONDS
        next_due = Job.objects.db_manager(self.using).seconds_until_next_due()
        next_occurrence = periodic.seconds_until_next(using=self.using)
        if next_occurrence is not None:
            next_due = next_occurrence if next_due is None else min(next_due, next_occurrence)
        if next_due is None:
            return self.interval_seconds
        # Due rows another scheduler holds locked read as "due now"; do not spin on them.
        return max(MIN_WAIT_SECONDS, min(self.interval_seconds, next_due))

    def _listen(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            params = connections[self.using].get_connection_params()
            for key in ("cursor_factory", "context", "prepare_threshold"):
                params.pop(key, None)
            self._listener = psycopg.connect(**params, autocommit=True)
            self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(psycopg.Error):
                self._listener.close()
            self._listener = None

    def _wait_for_notify(self, timeout: float) -> None:
        """Return when a NOTIFY arrives, *timeout* passes, or :meth:`stop` is called."""
        deadline = time.monotonic() + timeout
        listener = self._listen()
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short slices so that stop() is honoured within a fraction of a second.
            woke = list(listener.notifies(timeout=min(remaining, 0.5), stop_after=1))
            if woke:
                # Everything committed so far is handled by the next pass; drop the backlog.
                list(listener.notifies(timeout=0))
                return


class _PartialSend(Exception):
    def __init__(self, failed: set[uuid.UUID], cause: TransportError) -> None:
        super().__init__(f"{len(failed)} jobs not sent: {cause}")
        self.failed = failed
        self.cause = cause
