"""The worker's main loop: take messages, claim their jobs, start them, record outcomes.

:class:`Worker` runs in the thread that calls :meth:`Worker.run` (the main loop). It makes the
worker's database writes (claims, outcomes, hand-backs); the heartbeat thread makes the others.
Sync jobs run in threads of their own, ``async def`` jobs on one event loop thread. A message is
deleted as soon as its claim commits ("ack on claim"): from then on the row, its heartbeat and
its lease carry the job, so job length is not bounded by SQS visibility.

The Worker composes four objects, each owning the state its threads share:

- :class:`~.inbox.Inbox`: long-poll threads, held messages, prefetch, queues, deletes;
- :class:`~.claimed.ClaimedJobs`: running jobs and outcomes not yet written;
- :class:`~.runners.Runners`: job threads and the event loop thread;
- :class:`~.heartbeat.Heartbeat`: the heartbeat thread and its connection.

Of the Worker's own state, ``_wakeup`` (an event) is set by any thread that has news for the main
loop; ``_stopping`` (an event) is set by the main loop or :meth:`Worker.stop` and read by every
thread. ``_stop_request`` is written only by a signal handler (through
:meth:`Worker.request_stop`) and read by the main loop; ``_stop_deadline``, ``jobs_started`` and
``exit_code`` belong to the main loop and :meth:`Worker.stop`. The Worker has no lock of its
own.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

from django.db import DatabaseError, connections, router

from .. import execution, tracing
from ..conf import get_settings
from ..db import close_if_unusable, retry_on_lost_connection
from ..logs import job_fields
from ..models import Job, ProcessKind
from ..payload import Doorbell
from ..processes import Presence
from ..queries import ClaimOutcome, QueueWork
from ..registry import registry
from ..status import JobStatus
from ..transports.base import Transport
from .burst import EXIT_UNFINISHED, BurstEnd, Verdict
from .claimed import ClaimedJobs, Running
from .heartbeat import Heartbeat
from .inbox import CONFIRM_WAIT_SECONDS, HOLD_SECONDS, Bell, Inbox
from .runners import Runners

# One logger for the whole worker package, named as before it was split into modules: LOGGING
# configurations and log filters select the worker's lines by this name.
logger = logging.getLogger("django_asyncjobs.worker")

#: A job whose name this worker does not know is handed back (a newer worker of a rolling
#: deploy may know it) until this many deliveries of it were refused, counted on the job's row
#: whatever message brought them; then it is failed with a clear error. Each hand-back hides
#: the message for VISIBILITY_TIMEOUT_SECONDS, or until the scheduler sends the job again.
UNREGISTERED_MAX_DELIVERIES = 5
#: A message whose row is still locked by an uncommitted relay comes back after this long.
BUSY_RETRY_SECONDS = 1
#: Longest pause of the main loop; bounds how late timeouts and heartbeats can be noticed.
TICK_SECONDS = 0.5
#: An ``async def`` job is cancelled at its timeout by the event loop; the worker gives up on
#: it only this much later, for a coroutine that blocks the loop or swallows the cancellation.
ASYNC_CANCEL_GRACE_SECONDS = 2.0
#: Exit status of a supervised worker process that retires because a sync job is stuck in its
#: thread past the timeout: the supervisor records the timeout and replaces it; the exit ends the
#: stuck thread.
EXIT_RECYCLE = 3


def default_worker_id(*, pid: int | None = None, base: str | None = None) -> str:
    """Return ``host:pid`` (or ``base:pid``), which names a worker in job rows and logs.

    >>> default_worker_id(pid=4242, base="web-1")
    'web-1:4242'
    """
    return f"{base or socket.gethostname()}:{os.getpid() if pid is None else pid}"


class Worker:
    """Consume *queues* (highest priority first) and run up to *concurrency* jobs at once.

    Example::

        worker = Worker(transport=get_transport(), queues=["high", "default"], concurrency=4)
        worker.run()            # until worker.stop(); runworker calls it on SIGTERM / SIGINT

    ``burst=True`` returns once the ledger says its queues hold nothing queued, running or due
    and a long poll found no message (see :mod:`.burst`); ``max_jobs`` returns after that many
    jobs were started and finished. Both exist for tests and cron-style runs.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        queues: Sequence[str] | None = None,
        concurrency: int = 1,
        burst: bool = False,
        max_jobs: int | None = None,
        worker_id: str | None = None,
        wait_seconds: int | None = None,
        using: str | None = None,
        grace_seconds: float = 30.0,
        supervised: bool = False,
        on_alive: Callable[[], None] | None = None,
    ) -> None:
        conf = get_settings()
        if concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, not {concurrency}")
        self.transport = transport
        self.concurrency = concurrency
        self.burst = burst
        self.max_jobs = max_jobs
        self.worker_id = worker_id or default_worker_id()
        self.lock_timeout_seconds = conf.claim_lock_timeout_seconds
        #: A refused delivery (job name not registered here) hides its message this long, as
        #: SQS does for a message nobody deletes; the scheduler's resend after
        #: REQUEUE_AFTER_SECONDS may bring the job back sooner, in a new message.
        self.unregistered_retry_seconds = conf.visibility_timeout_seconds
        self.using = using or router.db_for_write(Job)
        self.grace_seconds = grace_seconds
        # Under a supervisor the worker never gives a job back while its thread may still run:
        # it leaves the row running and exits; the supervisor hands the job back (or records its
        # timeout) once the process is gone.
        self.supervised = supervised
        self.free_interruptions = conf.free_interruptions
        self.stale_after_seconds = conf.stale_after_seconds
        # Longest a queued job's message can stay out of sight legitimately: hidden after a
        # delivery that failed, plus a claim waiting on the relay's row lock, plus a hold.
        self._burst_end = BurstEnd(
            patience_seconds=conf.visibility_timeout_seconds
            + conf.claim_lock_timeout_seconds
            + HOLD_SECONDS,
            relay_patience_seconds=conf.scheduler_interval_seconds + CONFIRM_WAIT_SECONDS,
        )
        self.jobs_started = 0
        #: 0 after a normal stop; :data:`EXIT_RECYCLE` when the process should be replaced.
        self.exit_code = 0

        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._claimed = ClaimedJobs(using=self.using)
        self._inbox = Inbox(
            transport=transport,
            queue_specs=queues or conf.queues,
            concurrency=concurrency,
            burst=burst,
            wait_seconds=conf.wait_time_seconds if wait_seconds is None else wait_seconds,
            prefetch=conf.prefetch,
            visibility_timeout_seconds=conf.visibility_timeout_seconds,
            discovery_interval_seconds=conf.queue_discovery_interval_seconds,
            running_count=self._claimed.running_count,
            queued_counts=self._queued_counts,
            hand_back=self._hand_back,
            stopping=self._stopping,
            wakeup=self._wakeup,
        )
        self._runners = Runners(completed=self._completed)
        self._heartbeat = Heartbeat(
            claimed=self._claimed,
            using=self.using,
            interval_seconds=conf.heartbeat_interval_seconds,
            stopping=self._stopping,
            on_alive=on_alive,
            # The worker's row in the process table, kept by the heartbeat thread.
            presence=Presence(
                kind=ProcessKind.WORKER,
                name=self.worker_id,
                queues=self._inbox.queue_specs,
                concurrency=concurrency,
                using=self.using,
                logger=logger,
            ),
        )
        #: Set by signal handlers (plain attributes only: a handler must not take locks).
        self._stop_request: bool | None = None
        self._stop_deadline: float | None = None

    @property
    def queue_specs(self) -> list[str]:
        """The --queues option as given: names and glob patterns ("reports-*"), highest first."""
        return self._inbox.queue_specs

    @property
    def queues(self) -> list[str]:
        """The queue names consumed now, highest priority first (patterns resolved)."""
        return self._inbox.queues

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Stop receiving and let running jobs finish within the grace period. Signal-safe.

        Jobs still running when the grace period ends (at once with *force*) are handed back:
        due again now, for another worker, with the interruption recorded on the row.
        :meth:`run` returns after that. Calling it again without *force* changes nothing.
        """
        now = time.monotonic()
        if force:
            self._stop_deadline = now
        elif self._stop_deadline is None:
            self._stop_deadline = now + self.grace_seconds
        self._stopping.set()
        self._wakeup.set()
        self._inbox.arm()

    def request_stop(self, *, force: bool = False) -> None:
        """Ask for :meth:`stop` from a signal handler; the main loop acts within a tick."""
        self._stop_request = force or bool(self._stop_request)

    def run(self) -> None:
        """Serve jobs until :meth:`stop` (or, with ``burst``/``max_jobs``, until done)."""
        self._inbox.discover()
        logger.info(
            "worker started worker_id=%s queues=%s concurrency=%d",
            self.worker_id,
            ",".join(self._inbox.queue_specs),
            self.concurrency,
        )
        if not self.burst:
            self._inbox.start_pollers()
        self._heartbeat.start()
        try:
            self._serve()
        finally:
            self._shutdown()
            logger.info("worker stopped worker_id=%s jobs=%d", self.worker_id, self.jobs_started)

    def _serve(self) -> None:
        while True:
            self._wakeup.clear()
            if self._stop_request is not None:
                self.stop(force=self._stop_request)
            self._inbox.rediscover_if_due()
            self._collect()
            if not self._claimed.record_outcomes():
                self._stopping.wait(1.0)  # the database is away: try again a second later
            self._inbox.flush_deletes()
            if self.max_jobs is not None and self.jobs_started >= self.max_jobs:
                self._stopping.set()
            running = self._claimed.running_count()
            if self._stopping.is_set():
                # Held messages go back at once, for other workers: not after the grace period.
                self._inbox.release_held()
                unrecorded = self._claimed.unrecorded_count()
                if not running and not unrecorded:
                    return
                deadline = self._stop_deadline
                if running and deadline is not None and time.monotonic() >= deadline:
                    self._claimed.hand_back_all(
                        worker_id=self.worker_id,
                        supervised=self.supervised,
                        free_interruptions=self.free_interruptions,
                    )
                    continue
                self._wakeup.wait(TICK_SECONDS)
                continue
            free = self.concurrency - running
            if self.max_jobs is not None:
                free = min(free, self.max_jobs - self.jobs_started)
            if free <= 0:
                self._inbox.disarm()
                self._inbox.release_held(older_than=self._inbox.hold_seconds)
                self._wakeup.wait(self._tick())
                continue
            # While the long-poll threads are armed they do the receiving; short-poll sweeps
            # happen only when they are not (after work arrived), so an idle worker costs one
            # long poll per queue, not a request per queue every tick.
            messages = self._inbox.take(free, sweep=self.burst or not self._inbox.armed)
            if messages:
                self._inbox.disarm()
                self._handle(messages)
                continue
            if self.burst:
                if not running and self._burst_may_stop():
                    return
                if running:
                    self._wakeup.wait(self._tick())
                continue
            self._inbox.arm()
            self._wakeup.wait(self._tick())

    def _burst_may_stop(self) -> bool:
        """Received nothing and runs nothing: ask the ledger and every queue if that is all.

        See :mod:`.burst`. Messages the confirming long poll brings are handled here.
        """
        self._inbox.discover()  # queues created since the last discovery
        work = self._work_in_queues()
        messages = self._inbox.confirm(self.concurrency)
        now = time.monotonic()
        if messages:
            self._burst_end.progress(now)
            self._handle(messages)
            return False
        verdict = self._burst_end.observe(work, now=now)
        if verdict is Verdict.WAIT:
            if self.transport.short_poll_is_complete:
                self._wakeup.wait(CONFIRM_WAIT_SECONDS)  # that receive did not wait
            return False
        queues = ",".join(self._inbox.queues)
        waited = self._burst_end.waited(now)
        if verdict is Verdict.GIVE_UP:
            self.exit_code = EXIT_UNFINISHED
            logger.error(
                "burst worker gives up: jobs are queued but no message for them came in %.0fs "
                "queued=%s queues=%s (their messages are held by another worker, hidden after "
                "a failed delivery, or lost: runscheduler sends lost ones again after "
                "REQUEUE_AFTER_SECONDS)",
                waited,
                "unknown (database unreachable)" if work is None else work.queued,
                queues,
            )
        elif verdict is Verdict.LEAVE and work is not None and work.running_elsewhere:
            logger.warning(
                "burst worker stops; other workers still run jobs of its queues running=%d "
                "queues=%s",
                work.running_elsewhere,
                queues,
            )
        elif verdict is Verdict.LEAVE and work is not None:
            logger.warning(
                "burst worker stops; due jobs were not sent in %.0fs due=%d queues=%s "
                "(is runscheduler running?)",
                waited,
                work.due,
                queues,
            )
        return True

    def _work_in_queues(self) -> QueueWork | None:
        """What the ledger holds for this worker's queues, or ``None`` if it cannot be read."""
        manager = Job.objects.db_manager(self.using)
        try:
            return retry_on_lost_connection(
                lambda: manager.work_in(
                    self._inbox.queues,
                    worker=self.worker_id,
                    registered_names=registry.names(),
                    stale_after_seconds=self.stale_after_seconds,
                ),
                using=self.using,
            )
        except DatabaseError as exc:
            logger.error("cannot read the queues' jobs error=%s", exc)
            close_if_unusable(self.using, after_error=True)
            return None

    def _queued_counts(self, queues: Sequence[str]) -> dict[str, int] | None:
        """Per queue, how many jobs the ledger says were sent and not started; ``None``: unknown.

        Called by the inbox's sweep, on the main loop's thread.
        """
        manager = Job.objects.db_manager(self.using)
        try:
            return retry_on_lost_connection(lambda: manager.queued_counts(queues), using=self.using)
        except DatabaseError:
            # The claim that follows reports the outage; the sweep falls back to short polls.
            close_if_unusable(self.using, after_error=True)
            return None

    def _tick(self) -> float:
        now = time.monotonic()
        wait = TICK_SECONDS
        to_flush = self._inbox.seconds_to_flush(now)
        if to_flush is not None:
            wait = min(wait, to_flush)
        to_deadline = self._claimed.seconds_to_deadline(now)
        if to_deadline is not None:
            wait = min(wait, to_deadline)
        return wait

    def _shutdown(self) -> None:
        self._stopping.set()
        self._inbox.arm()
        self._heartbeat.join(5)
        self._inbox.join_pollers()
        self._inbox.release_held()
        self._inbox.flush_deletes(force=True)
        self._runners.close()
        connections.close_all()

    # -- claiming --------------------------------------------------------------------------------

    def _handle(self, bells: list[Bell]) -> None:
        """Claim the jobs *bells* name and start them; settle each with its message."""
        if not bells:
            return
        names = registry.names()
        manager = Job.objects.db_manager(self.using)
        try:
            # After a PostgreSQL restart the first claim of an idle worker meets its dead
            # connection: retried at once on a new one, so the delivery is not wasted (a wasted
            # one comes back a visibility timeout later and counts toward the dead-letter limit).
            claims = retry_on_lost_connection(
                lambda: manager.claim_many(
                    [(bell.doorbell.job_id, bell.doorbell.dispatch_token) for bell in bells],
                    worker=self.worker_id,
                    registered_names=names,
                    lock_timeout_seconds=self.lock_timeout_seconds,
                ),
                using=self.using,
            )
        except DatabaseError as exc:
            # The database cannot be reached. Leave the messages alone: they come back after
            # their visibility timeout. Handing them back at once would spin receive and claim
            # while it is down, and send every message to the dead-letter queue in seconds.
            logger.error("cannot claim jobs count=%d error=%s", len(bells), exc)
            close_if_unusable(self.using, after_error=True)
            claims = []
        for bell, claim in zip(bells, claims, strict=False):
            if claim.outcome is ClaimOutcome.CLAIMED:
                assert claim.job is not None
                self._start(claim.job, receives=bell.message.receive_count)
                self._inbox.settle(bell)
            elif claim.outcome is ClaimOutcome.NOT_CLAIMABLE:
                logger.info(
                    "dropping message job_id=%s queue=%s reason=%s",
                    bell.doorbell.job_id,
                    bell.message.queue,
                    claim.reason,
                    extra={"job_id": str(bell.doorbell.job_id), "queue": bell.message.queue},
                )
                self._inbox.settle(bell)
            elif claim.outcome is ClaimOutcome.BUSY:
                self._inbox.settle(bell, hide_seconds=BUSY_RETRY_SECONDS)
            else:
                self._inbox.settle(bell, hide_seconds=self._unregistered(bell, claim.reason))

    def _unregistered(self, bell: Bell, reason: str) -> int | None:
        """Refuse a job whose name is not registered here: hand it back, or fail it at the limit.

        Returns how long its message should stay hidden (``None``: the message is done with).
        The deliveries are counted on the row, not by SQS: the scheduler's resend of a job
        whose message seems lost replaces the message, and its receive count with it.
        """
        doorbell = bell.doorbell
        manager = Job.objects.db_manager(self.using)
        try:
            job = retry_on_lost_connection(
                lambda: manager.refuse_unregistered(
                    job_id=doorbell.job_id,
                    dispatch_token=doorbell.dispatch_token,
                    reason=f"{reason} (worker {self.worker_id})",
                    max_deliveries=UNREGISTERED_MAX_DELIVERIES,
                ),
                using=self.using,
            )
        except DatabaseError as exc:
            logger.error(
                "cannot record a refused delivery job_id=%s error=%s",
                doorbell.job_id,
                exc,
                extra={"job_id": str(doorbell.job_id), "queue": bell.message.queue},
            )
            close_if_unusable(self.using, after_error=True)
            return self.unregistered_retry_seconds  # as SQS would, for a message not deleted
        if job is None:
            # Sent again meanwhile (a new dispatch token), cancelled or gone: a stale message.
            logger.info(
                "dropping message job_id=%s queue=%s reason=job changed meanwhile",
                doorbell.job_id,
                bell.message.queue,
                extra={"job_id": str(doorbell.job_id), "queue": bell.message.queue},
            )
            return None
        if job.status == JobStatus.FAILED:
            logger.error(
                "job failed job_id=%s error=%s", doorbell.job_id, job.error, extra=job_fields(job)
            )
            return None
        logger.warning(
            "job not registered here; handing the message back job_id=%s reason=%s "
            "refused=%d/%d back_in=%ds",
            doorbell.job_id,
            reason,
            job.refused_deliveries,
            UNREGISTERED_MAX_DELIVERIES,
            self.unregistered_retry_seconds,
            extra=job_fields(job),
        )
        return self.unregistered_retry_seconds

    def _hand_back(self, doorbells: Sequence[Doorbell]) -> bool:
        """Put the jobs of *doorbells* back to ``scheduled`` for the scheduler to send again
        (the rest of a message this worker cannot start soon); False if the ledger is away."""
        manager = Job.objects.db_manager(self.using)
        pairs = [(d.job_id, d.dispatch_token) for d in doorbells]
        try:
            count = retry_on_lost_connection(
                lambda: manager.return_queued(
                    pairs, lock_timeout_seconds=self.lock_timeout_seconds
                ),
                using=self.using,
            )
        except DatabaseError as exc:
            logger.error("cannot hand jobs back count=%d error=%s", len(pairs), exc)
            close_if_unusable(self.using, after_error=True)
            return False
        logger.debug("handed jobs back for another worker count=%d", count)
        return True

    # -- running ---------------------------------------------------------------------------------

    def _start(self, job: Job, *, receives: int) -> None:
        definition = registry.get(job.name)
        assert job.lease_token is not None
        now = time.monotonic()
        deadline = None
        if job.timeout:
            grace = ASYNC_CANCEL_GRACE_SECONDS if definition.is_async else 0.0
            deadline = now + job.timeout + grace
        entry = Running(
            job=job,
            definition=definition,
            lease_token=job.lease_token,
            started=now,
            deadline=deadline,
            trace=tracing.start_run(job, transport=self.transport),
        )
        if job.cancel_requested_at is not None:
            # Only a hand-written row gets here (a cancel ends a queued job), but the row is the
            # truth: the job learns of the request from its start.
            entry.cancel.request(job.cancel_requested_by)
        self._claimed.add(entry)
        self._inbox.note_start(now)
        self.jobs_started += 1
        # receives: how often SQS delivered this message; an earlier delivery was handed back
        # (held too long, row busy) or wasted (a claim that failed), and counts toward the
        # queue's dead-letter limit.
        logger.info(
            "job started name=%s id=%s attempt=%d queue=%s receives=%d",
            job.name,
            job.id,
            job.total_attempts,
            job.queue,
            receives,
            extra=job_fields(job),
        )
        self._runners.start(entry)

    def _completed(self, entry: Running, outcome: execution.Outcome) -> None:
        if self._claimed.complete(entry, outcome):
            self._wakeup.set()

    def _collect(self) -> None:
        """Move finished (or timed-out) jobs to the recording list; retire for a stuck thread."""
        if self._claimed.collect(now=time.monotonic(), supervised=self.supervised):
            # A sync job is stuck in its thread: stop at once, exit, and be replaced; the exit
            # ends the thread.
            self.exit_code = EXIT_RECYCLE
            self._stop_deadline = time.monotonic()
            self._stopping.set()
            self._inbox.arm()
