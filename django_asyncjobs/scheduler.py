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

from . import metrics, periodic, retry, tracing
from .conf import get_settings
from .db import close_if_unusable, retry_on_lost_connection
from .exceptions import TransportError, TransportMisconfigured
from .flow import QueueFlow
from .logs import job_fields
from .models import Job, Process, ProcessKind, RegisteredJob
from .payload import Doorbell, encode_message
from .processes import (
    DEAD_PROCESS_RETENTION_SECONDS,
    PRUNE_DEAD_EVERY_SECONDS,
    Presence,
    consumes,
)
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
#: fast passes (a burst of NOTIFYs, the polls of a throttled queue) cost one relay query, not a
#: dozen; a pass that skipped it makes the next pass come within this long.
HOUSEKEEPING_MIN_SECONDS = 0.25
MIN_WAIT_SECONDS = 0.02
#: A NOTIFY wakes a pass no sooner than this after the last one began: a trickle of jobs (each
#: after a quiet moment) goes out at once, a burst of commits in a few passes, not one each.
MIN_PASS_SPACING_SECONDS = 0.01
#: How often the scheduler reads which live worker processes consume which queues.
CONSUMERS_EVERY_SECONDS = 5.0
#: While due jobs are held back by a concurrency or rate limit, look again this often: a job of
#: the key finishing, or a rate window sliding on, makes room without waking the scheduler.
LIMITED_POLL_SECONDS = 0.1
#: Retention pruning: one batch of this many rows, at most once a minute, so that it never
#: competes with relaying.
PRUNE_BATCH_SIZE = 1000
PRUNE_EVERY_SECONDS = 60.0
#: ... and this often while the last batch was full.
PRUNE_BEHIND_EVERY_SECONDS = 1.0


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
        self._prune_behind = False
        #: Whether the last pass left due jobs behind because of flow control.
        self.throttled = False
        #: Whether the last pass held due jobs back for a concurrency or rate limit.
        self.limited = False
        self.queue_rates = conf.queue_rates()
        #: Since when (monotonic) :meth:`run` has reached the database without an error; None
        #: outside run(). Workers cannot heartbeat while the database is away, so a rescue waits
        #: until it has been reachable for a whole stale window.
        self._database_ok_since: float | None = None
        self._housekept_at = float("-inf")
        self._passed_at = float("-inf")
        #: Per queue, its start rate and what flow control lets through (see flow.py).
        self._flows: dict[str, QueueFlow] = {}
        #: The --queues of the live worker processes: messages are sized for one of them.
        self._consumer_specs: list[list[str]] = []
        self._consumers_read_at = float("-inf")
        self._names_recorded = False
        self.requeue_after_seconds = conf.requeue_after_seconds
        self._stop = threading.Event()
        self._listener: psycopg.Connection[Any] | None = None
        self._failing = False
        #: This scheduler's row in the process table, while :meth:`run` runs.
        self._presence: Presence | None = None
        self._processes_pruned_at = float("-inf")

    # -- one pass --------------------------------------------------------------------------------

    def _send(self, due: list[DueJob], *, per_message: int = 1) -> set[uuid.UUID]:
        """Send *due* (highest priority first), *per_message* jobs to a message and ten messages
        to a request; return the ids that were not sent.

        After a transport error nothing more is attempted in this pass: every job not yet sent
        is returned for the relay to put back.
        """
        by_queue: dict[str, list[DueJob]] = defaultdict(list)
        for job in due:
            by_queue[job.queue].append(job)
        # One request: up to ten messages of one queue, each naming up to per_message jobs.
        requests: list[list[list[DueJob]]] = []
        for jobs in by_queue.values():
            messages = [jobs[i : i + per_message] for i in range(0, len(jobs), per_message)]
            requests.extend(
                messages[i : i + MAX_BATCH_SIZE] for i in range(0, len(messages), MAX_BATCH_SIZE)
            )
        failed: set[uuid.UUID] = set()
        for index, request in enumerate(requests):
            outgoing = [
                OutgoingMessage(
                    id=str(i),
                    body=encode_message(
                        [
                            Doorbell(
                                job_id=job.id,
                                dispatch_token=job.dispatch_token,
                                priority=job.priority,
                            )
                            for job in jobs
                        ]
                    ),
                )
                for i, jobs in enumerate(request)
            ]
            try:
                queue = request[0][0].queue
                with tracing.relay_span(
                    queue=queue,
                    jobs=[job for jobs in request for job in jobs],
                    transport=self.transport,
                    message_count=len(request),
                ) as span:
                    refused = self.transport.send_batch(queue, outgoing)
                    tracing.refused(span, count=len(refused))
            except TransportError as exc:
                for rest in requests[index:]:
                    failed.update(job.id for jobs in rest for job in jobs)
                raise _PartialSend(failed, exc) from exc
            failed.update(job.id for i in refused for job in request[int(i)])
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
        """Delete one batch of finished jobs past ``RETENTION_DAYS``: once a minute, or once a
        second while the last batch was full (a backlog of expired rows), so that retention
        keeps up with up to a thousand finished jobs a second in short steps that never hold
        the relay up for long."""
        if self.retention_days is None:
            return 0
        every = PRUNE_BEHIND_EVERY_SECONDS if self._prune_behind else PRUNE_EVERY_SECONDS
        if time.monotonic() - self._pruned_at < every:
            return 0
        self._pruned_at = time.monotonic()
        deleted = next(
            Job.objects.db_manager(self.using).purge(
                older_than_seconds=self.retention_days * 86400, batch_size=PRUNE_BATCH_SIZE
            ),
            0,
        )
        self._prune_behind = deleted >= PRUNE_BATCH_SIZE
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
        """Relay due jobs; then release or cancel dependents, recover stalled and lost jobs, and
        relay again what that made due.

        Returns how many jobs were sent. *relay_only* skips the housekeeping. The relay comes
        first: a job that a NOTIFY announced is sent before the housekeeping's dozen queries.

        Raises :class:`~django_asyncjobs.exceptions.TransportError` when the transport failed
        (the jobs it did not take stay scheduled) and :class:`django.db.DatabaseError` when
        PostgreSQL did.
        """
        total = self.relay()
        if not relay_only and self.housekeep():
            total += self.relay()
        return total

    def housekeep(self) -> int:
        """Enqueue due periodic jobs, release or cancel dependents, rescue the jobs of lost
        workers, send again jobs whose message was lost, prune; return how many jobs changed."""
        manager = Job.objects.db_manager(self.using)
        changed = periodic.enqueue_due(using=self.using)
        changed += manager.release_ready()
        changed += manager.cancel_orphans()
        changed += self.rescue_stalled()
        changed += self.resend_lost()
        self.prune()
        self._look_for_consumers()
        self._housekept_at = time.monotonic()
        return changed

    def _look_for_consumers(self) -> None:
        """Read the ``--queues`` of the live worker processes (every few seconds at most)."""
        if time.monotonic() - self._consumers_read_at < CONSUMERS_EVERY_SECONDS:
            return
        self._consumers_read_at = time.monotonic()
        live = Process.objects.db_manager(self.using).live(
            stale_after_seconds=self.stale_after_seconds
        )
        self._consumer_specs = [
            list(queues or ())
            for queues in live.filter(kind=ProcessKind.WORKER).values_list("queues", flat=True)
        ]

    def _consumers(self, queue: str) -> int:
        """How many live worker processes consume *queue* (1 when none is known)."""
        return max(1, sum(consumes(specs, queue) for specs in self._consumer_specs))

    def relay(self) -> int:
        """Send the due jobs of every queue that has room (see :mod:`.flow`); return how many."""
        manager = Job.objects.db_manager(self.using)
        cap = self.max_queued_per_queue
        now = time.monotonic()
        total = 0
        self.throttled = False
        self.limited = False
        for queue, queued in manager.due_queues_in_flight().items():
            flow = self.flow(queue)
            flow.observe(queued=queued, now=now)
            plan = flow.plan(queued=queued, cap=cap, consumers=self._consumers(queue))
            sent = self._relay_queue(
                queue, plan.room, per_message=plan.per_message, minimum=plan.minimum
            )
            flow.sent(sent)
            total += sent
            # Held back by the room, or waiting for a whole message: look again shortly.
            if (plan.room is not None and sent >= plan.room) or (not sent and plan.minimum > 1):
                self.throttled = True
        return total

    def flow(self, queue: str) -> QueueFlow:
        """Return the flow control of *queue*: its measured start rate and what it allows.

        Example::

            scheduler.flow("default").rate  # jobs per second leaving "queued", smoothed
        """
        return self._flows.setdefault(queue, QueueFlow())

    def _relay_queue(
        self, queue: str, room: int | None, *, per_message: int = 1, minimum: int = 1
    ) -> int:
        """Relay due jobs of *queue*, at most *room* of them (``None``: all), *per_message* to a
        message, none unless at least *minimum* are due; return how many."""
        manager = Job.objects.db_manager(self.using)
        # From this process's registry, like backoff: a scheduler runs the project's code.
        name_rates = {d.name: d.rate_limit for d in registry if d.rate_limit is not None}
        total = 0
        while not self._stop.is_set() and (room is None or total < room):
            error: _PartialSend | None = None

            def send(due: list[DueJob]) -> set[uuid.UUID]:
                nonlocal error
                try:
                    return self._send(due, per_message=per_message)
                except _PartialSend as exc:
                    error = exc
                    return exc.failed

            limit = self.batch_size if room is None else min(self.batch_size, room - total)
            result = manager.relay_due(
                queue=queue,
                limit=limit,
                send=send,
                minimum=min(minimum, limit),
                name_rates=name_rates,
                queue_rate=self.queue_rates.get(queue),
            )
            total += result.sent
            if result.held:
                self.limited = True
            metrics.relayed(queue, result.sent)
            if result.sent:
                logger.debug(
                    "relayed jobs queue=%s sent=%d put_back=%d per_message=%d",
                    queue,
                    result.sent,
                    result.put_back,
                    per_message,
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
        self._passed_at = time.monotonic()
        if not self._names_recorded:
            self.record_registered_names()
        # Before the relay: a scheduler that cannot reach SQS is still alive.
        if self._presence is not None:
            self._presence.tick()
            self.prune_processes()
        # Passes come as fast as NOTIFYs (and a throttled queue's polls); housekeeping need not
        # follow them, but must not fall behind them either.
        recent = time.monotonic() - self._housekept_at < HOUSEKEEPING_MIN_SECONDS
        self.run_once(relay_only=recent)
        metrics.relay_pass()
        wait = self._seconds_to_wait()
        if recent:
            wait = min(wait, self._housekept_at + HOUSEKEEPING_MIN_SECONDS - time.monotonic())
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
        if self.limited:
            # Held jobs read as "due now"; poll for a free slot instead of spinning on them.
            return LIMITED_POLL_SECONDS
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
                # A burst of commits wakes one pass per spacing, not one per commit: the jobs
                # committed meanwhile go out together (and a throttled queue, which has no room
                # for them anyway, is looked at on its own poll).
                spacing = THROTTLED_POLL_SECONDS if self.throttled else MIN_PASS_SPACING_SECONDS
                pause = self._passed_at + spacing - time.monotonic()
                if pause > 0:
                    self._stop.wait(min(pause, max(0.0, deadline - time.monotonic())))
                # Everything committed so far is handled by the next pass; drop the backlog.
                list(listener.notifies(timeout=0))
                return


class _PartialSend(Exception):
    def __init__(self, failed: set[uuid.UUID], cause: TransportError) -> None:
        super().__init__(f"{len(failed)} jobs not sent: {cause}")
        self.failed = failed
        self.cause = cause
