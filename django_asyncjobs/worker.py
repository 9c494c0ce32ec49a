"""The worker: receive doorbells, claim jobs, run them, record what happened.

One loop in the calling thread owns every database write of the worker (claims, heartbeats and
outcomes); sync jobs run in threads of their own, ``async def`` jobs on one event loop thread.
A message is deleted as soon as its claim commits ("ack on claim"): from then on the row, its
heartbeat and its lease carry the job, so job length is not bounded by SQS visibility.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import fnmatch
import functools
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, close_old_connections, connections, router

from . import execution, retry
from .conf import get_settings
from .context import JobContext
from .db import close_if_unusable, retry_on_lost_connection
from .exceptions import MalformedMessage, TransportError
from .models import Job
from .payload import Doorbell
from .queries import ClaimOutcome
from .registry import JobDefinition, registry
from .status import JobStatus
from .transports.base import MAX_BATCH_SIZE, ReceivedMessage, Transport

logger = logging.getLogger(__name__)

#: A job whose name this worker does not know is handed back (a newer worker of a rolling
#: deploy may know it) until this many deliveries of it were refused, counted on the job's row
#: whatever message brought them; then it is failed with a clear error. Each hand-back hides
#: the message for VISIBILITY_TIMEOUT_SECONDS, or until the scheduler sends the job again.
UNREGISTERED_MAX_DELIVERIES = 5
#: A message whose row is still locked by an uncommitted relay comes back after this long.
BUSY_RETRY_SECONDS = 1
#: Longest pause of the main loop; bounds how late timeouts and heartbeats can be noticed.
TICK_SECONDS = 0.5
MAX_ERROR_BACKOFF_SECONDS = 30.0
#: Messages of claimed jobs are deleted in batches: when ten are waiting, or after this long.
DELETE_DELAY_SECONDS = 0.2
#: A prefetched message not started within this long goes back to SQS: it bounds how long a
#: held lower-priority job can go ahead of a newly arrived higher-priority one.
HOLD_SECONDS = 2.0
#: An ``async def`` job is cancelled at its timeout by the event loop; the worker gives up on
#: it only this much later, for a coroutine that blocks the loop or swallows the cancellation.
ASYNC_CANCEL_GRACE_SECONDS = 2.0
#: How long a stopping worker waits for an open long poll, whose messages it then hands back.
#: Messages a poll brings later stay invisible for the visibility timeout, then come back.
POLL_JOIN_SECONDS = 1.0
#: Exit status of a supervised worker process that retires because a sync job is stuck in its
#: thread past the timeout: the supervisor records the timeout and replaces it; the exit ends the
#: stuck thread.
EXIT_RECYCLE = 3
#: How often the heartbeat thread wakes: it reports liveness each time and writes heartbeats
#: every HEARTBEAT_INTERVAL_SECONDS (retrying each tick after a failed write).
HEARTBEAT_TICK_SECONDS = 0.25


def is_pattern(queue: str) -> bool:
    """Return whether a ``--queues`` entry is a glob pattern (``reports-*``), not a name."""
    return any(c in queue for c in "*?[")


def default_worker_id(*, pid: int | None = None, base: str | None = None) -> str:
    """Return ``host:pid`` (or ``base:pid``), which names a worker in job rows and logs."""
    return f"{base or socket.gethostname()}:{os.getpid() if pid is None else pid}"


@dataclass(slots=True, kw_only=True)
class _Running:
    job: Job
    definition: JobDefinition[Any, Any]
    lease_token: uuid.UUID
    started: float
    deadline: float | None
    outcome: execution.Outcome | None = None
    abandoned: bool = False


@dataclass(slots=True)
class _Inbox:
    """Messages received by the long-poll threads, waiting for the main loop.

    Entries are ``(queue rank, arrival order, received at, message)``: sorted, the first
    queue's messages come first, oldest first.
    """

    messages: list[tuple[int, int, float, ReceivedMessage]] = field(default_factory=list)
    order: itertools.count[int] = field(default_factory=itertools.count)


class Worker:
    """Consume *queues* (highest priority first) and run up to *concurrency* jobs at once.

    >>> worker = Worker(transport=get_transport(), queues=["high", "default"], concurrency=4)
    >>> worker.run()            # until worker.stop(); runworker calls it on SIGTERM / SIGINT

    ``burst=True`` returns once the queues are empty and nothing runs; ``max_jobs`` returns after
    that many jobs were started and finished. Both exist for tests and cron-style runs.
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
        #: The --queues option as given: names and glob patterns ("reports-*"), highest first.
        self.queue_specs = list(queues or conf.queues)
        self.queues = [q for q in self.queue_specs if not is_pattern(q)]
        self.discovery_interval_seconds = conf.queue_discovery_interval_seconds
        self._discovered_at = 0.0
        self.concurrency = concurrency
        self.burst = burst
        self.max_jobs = max_jobs
        self.worker_id = worker_id or default_worker_id()
        self.wait_seconds = conf.wait_time_seconds if wait_seconds is None else wait_seconds
        self.heartbeat_interval_seconds = conf.heartbeat_interval_seconds
        self.lock_timeout_seconds = conf.claim_lock_timeout_seconds
        #: Messages received ahead of free slots, so the next job starts without an SQS round
        #: trip: at most PREFETCH, and no more than this worker started in the last second (so
        #: workers of long jobs hold nothing). Unused ones go back after HOLD_SECONDS.
        self.prefetch = conf.prefetch
        self.hold_seconds = min(HOLD_SECONDS, conf.visibility_timeout_seconds / 2)
        #: A refused delivery (job name not registered here) hides its message this long, as
        #: SQS does for a message nobody deletes; the scheduler's resend after
        #: REQUEUE_AFTER_SECONDS may bring the job back sooner, in a new message.
        self.unregistered_retry_seconds = conf.visibility_timeout_seconds
        self._recent_starts: collections.deque[float] = collections.deque()
        self.using = using or router.db_for_write(Job)
        self.grace_seconds = grace_seconds
        # Under a supervisor the worker never gives a job back while its thread may still run:
        # it leaves the row running and exits; the supervisor hands the job back (or records its
        # timeout) once the process is gone.
        self.supervised = supervised
        self.on_alive = on_alive
        self.free_interruptions = conf.free_interruptions
        self.jobs_started = 0
        #: 0 after a normal stop; :data:`EXIT_RECYCLE` when the process should be replaced.
        self.exit_code = 0

        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._running: dict[uuid.UUID, _Running] = {}
        self._inbox = _Inbox()
        self._unrecorded: list[_Running] = []
        self._to_delete: list[ReceivedMessage] = []
        #: Sync jobs for idle job threads; ``None`` tells a thread to end.
        self._sync_inbox: SimpleQueue[_Running | None] = SimpleQueue()
        self._idle_sync_threads = 0
        self._threads_closed = False
        self._to_delete_since = 0.0
        self._armed = threading.Event()
        self._pollers: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._last_heartbeat = time.monotonic()
        self._heartbeat_thread: threading.Thread | None = None
        #: Set by signal handlers (plain attributes only: a handler must not take locks).
        self._stop_request: bool | None = None
        self._failing_since: float | None = None
        self._stop_deadline: float | None = None

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
        self._armed.set()

    def request_stop(self, *, force: bool = False) -> None:
        """Ask for :meth:`stop` from a signal handler; the main loop acts within a tick."""
        self._stop_request = force or bool(self._stop_request)

    def run(self) -> None:
        """Serve jobs until :meth:`stop` (or, with ``burst``/``max_jobs``, until done)."""
        self._discover()
        logger.info(
            "worker started worker_id=%s queues=%s concurrency=%d",
            self.worker_id,
            ",".join(self.queue_specs),
            self.concurrency,
        )
        if not self.burst:
            for queue in list(self.queues):
                self._start_poller(queue)
        self._heartbeat_thread = threading.Thread(
            target=self._beat, name="asyncjobs-heartbeat", daemon=True
        )
        self._heartbeat_thread.start()
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
            if time.monotonic() - self._discovered_at >= self.discovery_interval_seconds:
                self._discover()
            self._collect()
            self._record_unrecorded()
            self._flush_deletes()
            if self.max_jobs is not None and self.jobs_started >= self.max_jobs:
                self._stopping.set()
            with self._lock:
                running = len(self._running)
            if self._stopping.is_set():
                # Held messages go back at once, for other workers: not after the grace period.
                self._release_inbox()
                with self._lock:
                    unrecorded = len(self._unrecorded)
                if not running and not unrecorded:
                    return
                deadline = self._stop_deadline
                if running and deadline is not None and time.monotonic() >= deadline:
                    self._hand_back_running()
                    continue
                self._wakeup.wait(TICK_SECONDS)
                continue
            free = self.concurrency - running
            if self.max_jobs is not None:
                free = min(free, self.max_jobs - self.jobs_started)
            if free <= 0:
                self._armed.clear()
                self._release_inbox(older_than=self.hold_seconds)
                self._wakeup.wait(self._tick())
                continue
            # While the long-poll threads are armed they do the receiving; short-poll sweeps
            # happen only when they are not (after work arrived), so an idle worker costs one
            # long poll per queue, not a request per queue every tick.
            messages = self._take(free, sweep=self.burst or not self._armed.is_set())
            if messages:
                self._armed.clear()
                self._handle(messages)
                continue
            if self.burst:
                if not running:
                    return
            else:
                self._armed.set()
            self._wakeup.wait(self._tick())

    def _tick(self) -> float:
        now = time.monotonic()
        wait = TICK_SECONDS
        if self._to_delete:
            wait = min(wait, max(0.0, self._to_delete_since + DELETE_DELAY_SECONDS - now))
        with self._lock:
            for entry in self._running.values():
                if entry.deadline is not None:
                    wait = min(wait, max(0.0, entry.deadline - now))
        return wait

    def _shutdown(self) -> None:
        self._stopping.set()
        self._armed.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(5)
        # A long poll cannot be interrupted. Waiting up to 20 s for it would make every deploy
        # slow; what it brings after we leave stays invisible for the visibility timeout and is
        # then delivered to another worker, so nothing is lost.
        join_until = time.monotonic() + POLL_JOIN_SECONDS
        for thread in self._pollers:
            thread.join(max(0.0, join_until - time.monotonic()))
        self._release_inbox()
        self._flush_deletes(force=True)
        with self._lock:
            idle, self._idle_sync_threads = self._idle_sync_threads, 0
            self._threads_closed = True  # threads busy now end after their job
        for _ in range(idle):
            self._sync_inbox.put(None)
        if self._loop is not None:
            self._stop_event_loop(self._loop)
        connections.close_all()

    def _stop_event_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        async def cancel_abandoned() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Async jobs reach the ORM through sync_to_async's shared thread: close the
            # connection they opened there, or it outlives the worker's use of the database.
            await sync_to_async(connections.close_all)()

        try:
            asyncio.run_coroutine_threadsafe(cancel_abandoned(), loop).result(timeout=5)
        except Exception:  # a coroutine that ignores cancellation must not block the exit
            logger.warning("async jobs did not stop when cancelled")
        loop.call_soon_threadsafe(loop.stop)
        if self._loop_thread is not None:
            self._loop_thread.join(5)
        if not loop.is_running():
            loop.close()

    # -- receiving -------------------------------------------------------------------------------

    def _start_poller(self, queue: str) -> None:
        thread = threading.Thread(
            target=self._poll, args=(queue,), name=f"asyncjobs-poll-{queue}", daemon=True
        )
        thread.start()
        self._pollers.append(thread)

    def _discover(self) -> None:
        """Resolve queue patterns against the transport's queues, in the order given.

        A pattern's matches take its place in the priority order, sorted by name. New queues
        get a long-poll thread of their own.
        """
        if not any(is_pattern(spec) for spec in self.queue_specs):
            return
        self._discovered_at = time.monotonic()
        try:
            available = self.transport.list_queues()
        except TransportError as exc:
            self._report_failure(exc)
            return
        resolved: list[str] = []
        for spec in self.queue_specs:
            names = sorted(fnmatch.filter(available, spec)) if is_pattern(spec) else [spec]
            resolved.extend(n for n in names if n not in resolved)
        with self._lock:
            new = [q for q in resolved if q not in self.queues]
            self.queues = resolved
        for queue in new:
            logger.info("worker consumes a new queue queue=%s", queue)
            if self._pollers or not self.burst:
                self._start_poller(queue)

    def _rank(self, queue: str) -> int:
        with self._lock:
            return self.queues.index(queue) if queue in self.queues else len(self.queues)

    def _poll(self, queue: str) -> None:
        """Long-poll one queue while the main loop is idle and has free slots."""
        backoff = 0.0
        while not self._stopping.is_set():
            if not self._armed.wait(1.0) or self._stopping.is_set():
                continue
            with self._lock:
                wanted = (
                    self.concurrency
                    + self._prefetch_now()
                    - len(self._running)
                    - len(self._inbox.messages)
                )
            if wanted <= 0:
                self._armed.clear()
                continue
            try:
                received = self.transport.receive(
                    queue, max_messages=min(wanted, MAX_BATCH_SIZE), wait_seconds=self.wait_seconds
                )
            except TransportError as exc:
                backoff = min(MAX_ERROR_BACKOFF_SECONDS, max(1.0, backoff * 2))
                self._report_failure(exc)
                self._stopping.wait(backoff)
                continue
            backoff = 0.0
            if received and self._stopping.is_set():
                self._release(received)
            elif received:
                self._hold(received)
                self._wakeup.set()

    def _take(self, free: int, *, sweep: bool) -> list[ReceivedMessage]:
        """Return up to *free* messages, highest-priority queue first.

        Messages the long-poll threads brought come first; with *sweep*, the queues are also
        short-polled in priority order when there are none. Up to ``prefetch`` of the rest stay
        in the inbox for the next free slot; more than that go back to SQS.
        """
        self._release_inbox(older_than=self.hold_seconds)
        with self._lock:
            prefetch = self._prefetch_now()
            pending = sorted(self._inbox.messages)
            take, keep = pending[:free], pending[free:]
            self._inbox.messages[:] = keep[:prefetch]
            extra = [m for _, _, _, m in keep[prefetch:]]
        messages = [m for _, _, _, m in take]
        if not messages and sweep:
            swept = self._sweep(free + prefetch)
            messages = swept[:free]
            self._hold(swept[free:])
        self._release(extra)
        return messages

    def _hold(self, messages: Sequence[ReceivedMessage]) -> None:
        """Put received *messages* in the inbox, ranked by their queue, stamped with the time."""
        ranked = [(self._rank(message.queue), message) for message in messages]
        now = time.monotonic()
        with self._lock:
            for rank, message in ranked:
                self._inbox.messages.append((rank, next(self._inbox.order), now, message))

    def _prefetch_now(self) -> int:
        """How many messages to hold ahead: PREFETCH, capped by the starts of the last second.

        Called with the lock held.
        """
        horizon = time.monotonic() - 1.0
        while self._recent_starts and self._recent_starts[0] < horizon:
            self._recent_starts.popleft()
        return min(self.prefetch, len(self._recent_starts))

    def _sweep(self, free: int) -> list[ReceivedMessage]:
        """Short-poll the queues in priority order and stop at the first that has messages.

        With a backlog this keeps the order strict: a lower queue is only read while every
        higher one is empty.
        """
        with self._lock:
            queues = list(self.queues)
        for queue in queues:
            try:
                received = self.transport.receive(
                    queue, max_messages=min(free, MAX_BATCH_SIZE), wait_seconds=0
                )
            except TransportError as exc:
                self._report_failure(exc)
                self._stopping.wait(1.0)
                return []
            if received:
                self._recovered()
                return received
        self._recovered()
        return []

    def _release_inbox(self, *, older_than: float = 0.0) -> None:
        """Give back the held messages (those held longer than *older_than* seconds)."""
        limit = time.monotonic() - older_than
        with self._lock:
            held = self._inbox.messages
            released = [m for _, _, at, m in held if at <= limit]
            held[:] = [entry for entry in held if entry[2] > limit]
        self._release(released)

    def _release(self, messages: Sequence[ReceivedMessage]) -> None:
        # Unclaimed messages go straight back, so that another worker (or we, later, in priority
        # order) can take them instead of waiting out their visibility timeout.
        for message in messages:
            try:
                self.transport.change_visibility(message, timeout_seconds=0)
            except TransportError as exc:
                logger.warning("could not release a message queue=%s error=%s", message.queue, exc)

    def _report_failure(self, exc: Exception) -> None:
        with self._lock:
            first = self._failing_since is None
            if first:
                self._failing_since = time.monotonic()
        if first:
            logger.error("worker cannot reach its transport, retrying error=%s", exc)

    def _recovered(self) -> None:
        with self._lock:
            was_failing, self._failing_since = self._failing_since is not None, None
        if was_failing:
            logger.warning("worker reaches its transport again")

    # -- claiming --------------------------------------------------------------------------------

    def _handle(self, messages: list[ReceivedMessage]) -> None:
        """Claim each message's job and start it; delete the messages that are done with."""
        done: list[ReceivedMessage] = []
        names = registry.names()
        bells: list[tuple[ReceivedMessage, Doorbell]] = []
        for message in messages:
            try:
                bells.append((message, Doorbell.decode(message.body)))
            except MalformedMessage as exc:
                self._quarantine(message, exc)
        manager = Job.objects.db_manager(self.using)
        try:
            # After a PostgreSQL restart the first claim of an idle worker meets its dead
            # connection: retried at once on a new one, so the delivery is not wasted (a wasted
            # one comes back a visibility timeout later and counts toward the dead-letter limit).
            claims = retry_on_lost_connection(
                lambda: manager.claim_many(
                    [(bell.job_id, bell.dispatch_token) for _, bell in bells],
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
        for (message, bell), claim in zip(bells, claims, strict=False):
            if claim.outcome is ClaimOutcome.CLAIMED:
                assert claim.job is not None
                self._start(claim.job, receives=message.receive_count)
                done.append(message)
            elif claim.outcome is ClaimOutcome.NOT_CLAIMABLE:
                logger.info(
                    "dropping message job_id=%s queue=%s reason=%s",
                    bell.job_id,
                    message.queue,
                    claim.reason,
                )
                done.append(message)
            elif claim.outcome is ClaimOutcome.BUSY:
                self._change_visibility(message, BUSY_RETRY_SECONDS)
            else:
                self._unregistered(message, bell, claim.reason, done)
        if done:
            if not self._to_delete:
                self._to_delete_since = time.monotonic()
            self._to_delete.extend(done)
            self._flush_deletes()

    def _flush_deletes(self, *, force: bool = False) -> None:
        """Delete the messages of claimed jobs, ten per request when they come fast.

        A delay here is harmless: a message redelivered meanwhile finds its job claimed (its
        dispatch token is spent) and is dropped.
        """
        if not self._to_delete:
            return
        due = time.monotonic() - self._to_delete_since >= DELETE_DELAY_SECONDS
        if not (force or due or len(self._to_delete) >= MAX_BATCH_SIZE):
            return
        done, self._to_delete = self._to_delete, []
        try:
            self.transport.delete(done)
        except TransportError as exc:
            logger.warning("could not delete messages count=%d error=%s", len(done), exc)

    def _quarantine(self, message: ReceivedMessage, error: MalformedMessage) -> None:
        # Not a doorbell of ours: no job to fail. Set it aside for an operator (the dead-letter
        # queue) instead of letting it come back after every visibility timeout.
        try:
            kept = self.transport.quarantine(message)
        except TransportError as exc:
            logger.warning("could not set a malformed message aside error=%s", exc)
            return
        logger.warning(
            "malformed message %s queue=%s receive_count=%d error=%s",
            "moved to the dead-letter queue" if kept else "deleted (no dead-letter queue)",
            message.queue,
            message.receive_count,
            error,
        )

    def _unregistered(
        self, message: ReceivedMessage, bell: Doorbell, reason: str, done: list[ReceivedMessage]
    ) -> None:
        """Refuse a job whose name is not registered here: hand it back, or fail it at the limit.

        The deliveries are counted on the row, not by SQS: the scheduler's resend of a job
        whose message seems lost replaces the message, and its receive count with it.
        """
        manager = Job.objects.db_manager(self.using)
        try:
            job = retry_on_lost_connection(
                lambda: manager.refuse_unregistered(
                    job_id=bell.job_id,
                    dispatch_token=bell.dispatch_token,
                    reason=f"{reason} (worker {self.worker_id})",
                    max_deliveries=UNREGISTERED_MAX_DELIVERIES,
                ),
                using=self.using,
            )
        except DatabaseError as exc:
            logger.error("cannot record a refused delivery job_id=%s error=%s", bell.job_id, exc)
            close_if_unusable(self.using, after_error=True)
            return  # the message comes back after its visibility timeout
        if job is None:
            # Sent again meanwhile (a new dispatch token), cancelled or gone: a stale message.
            logger.info(
                "dropping message job_id=%s queue=%s reason=job changed meanwhile",
                bell.job_id,
                message.queue,
            )
            done.append(message)
        elif job.status == JobStatus.FAILED:
            logger.error("job failed job_id=%s error=%s", bell.job_id, job.error)
            done.append(message)
        else:
            logger.warning(
                "job not registered here; handing the message back job_id=%s reason=%s "
                "refused=%d/%d back_in=%ds",
                bell.job_id,
                reason,
                job.refused_deliveries,
                UNREGISTERED_MAX_DELIVERIES,
                self.unregistered_retry_seconds,
            )
            self._change_visibility(message, self.unregistered_retry_seconds)

    def _change_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        try:
            self.transport.change_visibility(message, timeout_seconds=seconds)
        except TransportError as exc:
            logger.warning("could not change message visibility error=%s", exc)

    # -- running ---------------------------------------------------------------------------------

    def _start(self, job: Job, *, receives: int) -> None:
        definition = registry.get(job.name)
        assert job.lease_token is not None
        now = time.monotonic()
        deadline = None
        if job.timeout:
            grace = ASYNC_CANCEL_GRACE_SECONDS if definition.is_async else 0.0
            deadline = now + job.timeout + grace
        entry = _Running(
            job=job,
            definition=definition,
            lease_token=job.lease_token,
            started=now,
            deadline=deadline,
        )
        with self._lock:
            self._running[job.id] = entry
            self._recent_starts.append(now)
        self.jobs_started += 1
        # receives: how often SQS delivered this message; an earlier delivery was handed back
        # (held too long, row busy) or wasted (a claim that failed), and counts toward the
        # queue's dead-letter limit.
        logger.info(
            "job started name=%s id=%s attempt=%d queue=%s receives=%d",
            job.name,
            job.id,
            job.attempts,
            job.queue,
            receives,
        )
        if definition.is_async:
            loop = self._event_loop()
            future = asyncio.run_coroutine_threadsafe(
                execution.run_async(
                    definition,
                    job.args,
                    job.kwargs,
                    timeout_seconds=job.timeout,
                    context=JobContext.for_job(job),
                ),
                loop,
            )
            future.add_done_callback(lambda f: self._async_done(entry, f))
        else:
            self._submit_sync(entry)

    def _async_done(self, entry: _Running, future: Any) -> None:
        if future.cancelled():
            return  # cancelled at shutdown: the job is being handed back
        error = future.exception()
        if error is not None:  # run_async returns outcomes; this is a bug or SystemExit & co.
            self._completed(entry, execution.failure(error, started=entry.started))
        else:
            self._completed(entry, future.result())

    def _submit_sync(self, entry: _Running) -> None:
        """Run a sync job on an idle job thread, or on a new one when none is idle.

        Threads are reused (starting one per job cost more than a no-op job), and never capped:
        a thread stuck past its job's timeout is abandoned, and the next job gets a fresh one.
        """
        with self._lock:
            idle = self._idle_sync_threads > 0
            if idle:
                self._idle_sync_threads -= 1
        if idle:
            self._sync_inbox.put(entry)
        else:
            threading.Thread(
                target=self._sync_thread, args=(entry,), name="asyncjobs-job", daemon=True
            ).start()

    def _sync_thread(self, first: _Running) -> None:
        entry: _Running | None = first
        try:
            while entry is not None:
                # A fresh context per job: what one job activates (a translation, a time zone, a
                # context variable) must not leak into the next job on this thread.
                reusable = contextvars.Context().run(self._run_sync, entry)
                with self._lock:
                    if self._threads_closed or not reusable:
                        return
                    self._idle_sync_threads += 1
                entry = self._sync_inbox.get()
        finally:
            # Connections CONN_MAX_AGE kept open between jobs end with their thread.
            connections.close_all()

    def _run_sync(self, entry: _Running) -> bool:
        """Run one sync job; return whether its thread can run another.

        The job's own database connections are handled as Django handles a request's: they are
        checked before and after it with ``close_old_connections()``, so ``CONN_MAX_AGE`` and
        ``CONN_HEALTH_CHECKS`` mean for job code what they mean for views. With the default
        ``CONN_MAX_AGE = 0`` a job's connection is closed when it ends; a broken one always is.
        """
        close_old_connections()
        try:
            outcome = execution.run_sync(
                entry.definition,
                entry.job.args,
                entry.job.kwargs,
                context=JobContext.for_job(entry.job),
            )
        finally:
            # A job that left an atomic block open spoils this thread's connection handlers
            # for good: such a thread runs nothing more. Others start the next job afresh.
            reusable = not any(c.in_atomic_block for c in connections.all(initialized_only=True))
            if reusable:
                close_old_connections()
            else:
                connections.close_all()
        self._completed(entry, outcome)
        return reusable

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=self._loop.run_forever, name="asyncjobs-event-loop", daemon=True
            )
            self._loop_thread.start()
        return self._loop

    def _completed(self, entry: _Running, outcome: execution.Outcome) -> None:
        with self._lock:
            if entry.abandoned:
                return
            entry.outcome = outcome
        self._wakeup.set()

    def _collect(self) -> None:
        """Move finished (or timed-out) jobs from ``_running`` to the recording list."""
        now = time.monotonic()
        with self._lock:
            for job_id, entry in list(self._running.items()):
                if entry.outcome is None and entry.deadline is not None and now >= entry.deadline:
                    assert entry.job.timeout is not None
                    stuck_thread = not entry.definition.is_async
                    if stuck_thread and self.supervised:
                        # Only ending the process stops a thread stuck in a blocking call. Record
                        # nothing while it may still run: the supervisor records the timeout, and
                        # hands back the other jobs, once this process is gone.
                        logger.warning(
                            "job timed out name=%s id=%s timeout=%gs; its thread cannot be "
                            "interrupted, so this worker process retires and is replaced",
                            entry.job.name,
                            job_id,
                            entry.job.timeout,
                        )
                        self.exit_code = EXIT_RECYCLE
                        self._stop_deadline = time.monotonic()
                        self._stopping.set()
                        self._armed.set()
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
                    )
                if entry.outcome is not None:
                    del self._running[job_id]
                    self._unrecorded.append(entry)

    def _record_unrecorded(self) -> None:
        """Write the outcomes of finished jobs: every success in one statement, then failures."""
        with self._lock:
            pending = list(self._unrecorded)
        if not pending:
            return
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
            self._stopping.wait(1.0)

    def _recorded(self, entries: list[_Running], stored: Sequence[Job | None]) -> None:
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
                    entry.job.attempts,
                )
                continue
            verb = job.status if job.status != JobStatus.SCHEDULED else "retrying"
            if outcome.ok:
                log = logger.info
            elif verb == "retrying":
                log = logger.warning
            else:
                log = logger.error
            log(
                "job %s name=%s id=%s attempt=%d duration=%.3fs%s",
                verb,
                entry.job.name,
                entry.job.id,
                entry.job.attempts,
                outcome.duration_seconds,
                "" if outcome.ok else f" error={outcome.error}",
            )

    def _hand_back_running(self) -> None:
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
        if self.supervised:
            # The rows stay running until this process has exited; the supervisor hands them
            # back then, so no other worker can start a job whose thread still runs here.
            return
        manager = Job.objects.db_manager(self.using)
        for entry in entries:
            job = entry.job
            reason = f"interrupted: worker {self.worker_id} shut down during attempt {job.attempts}"
            try:
                hand_back = functools.partial(
                    manager.end_attempt,
                    job=job,
                    lease_token=entry.lease_token,
                    decide=functools.partial(
                        retry.decide,
                        ending=retry.Ending.INTERRUPTED,
                        free_interruptions=self.free_interruptions,
                    ),
                    error=reason,
                )
                stored = retry_on_lost_connection(hand_back, using=self.using)
            except DatabaseError as exc:
                # The scheduler rescues it once its heartbeat is stale.
                logger.error("cannot hand back id=%s error=%s", job.id, exc)
                close_if_unusable(self.using, after_error=True)
                continue
            if stored is None:
                logger.warning("lease lost; nothing to hand back id=%s", job.id)
            else:
                logger.warning(
                    "job handed back name=%s id=%s attempt=%d status=%s",
                    job.name,
                    job.id,
                    job.attempts,
                    stored.status,
                )
        # Async jobs are cancelled, and abandoned threads end with the process, in _shutdown.

    def _beat(self) -> None:
        """Heartbeat thread: report liveness, and stamp ``heartbeat_at`` on our jobs.

        A thread of its own, with its own database connection, so that a main loop waiting on a
        slow SQS call does not look like a dead worker. A write that fails is retried on the next
        tick, not an interval later, so the heartbeat is fresh as soon as the database is back.
        """
        try:
            while not self._stopping.wait(HEARTBEAT_TICK_SECONDS) or self._has_work():
                if self.on_alive is not None:
                    self.on_alive()
                if time.monotonic() - self._last_heartbeat >= self.heartbeat_interval_seconds:
                    self._heartbeat()
        finally:
            connections.close_all()

    def _has_work(self) -> bool:
        with self._lock:
            return bool(self._running or self._unrecorded)

    def _heartbeat(self) -> None:
        with self._lock:
            # Finished jobs not yet recorded (the database was away) are still ours.
            entries = [*self._running.values(), *self._unrecorded]
            leases = [(e.job.id, e.lease_token) for e in entries]
        if not leases:
            self._last_heartbeat = time.monotonic()
            return
        manager = Job.objects.db_manager(self.using)
        try:
            lost = retry_on_lost_connection(lambda: manager.heartbeat(leases), using=self.using)
        except DatabaseError as exc:
            logger.error("heartbeat failed error=%s", exc)
            close_if_unusable(self.using, after_error=True)
            return
        self._last_heartbeat = time.monotonic()
        for job_id in lost:
            logger.warning("lease lost while running id=%s", job_id)
