"""The worker's side of the transport: receive messages, hold them, give back or delete them.

:class:`Inbox` owns one long-poll thread per queue (``asyncjobs-poll-<queue>``) and what they
share with the main loop. Guarded by ``Inbox._lock``:

- ``_held``: messages received and not yet taken, as ``(queue rank, arrival order, received
  at, message)``; sorted, the first queue's messages come first, oldest first. Long-poll threads
  add to it (:meth:`~Inbox.hold`); the main loop takes from it (:meth:`~Inbox.take`) and gives
  back what it held too long (:meth:`~Inbox.release_held`).
- ``_queues``: the queue names consumed, highest priority first. The main loop rewrites it when
  patterns are resolved (:meth:`~Inbox.discover`); long-poll threads read it to rank messages.
- ``_recent_starts``: when the last second's jobs started (the main loop appends, through
  :meth:`~Inbox.note_start`); it caps the prefetch that long-poll threads ask for.
- ``_failing_since``: when the transport started failing, so that an outage is logged once.

``_armed`` (an event) lets the long-poll threads receive: the main loop sets it while it is idle
with free slots, and clears it when it has work; a long-poll thread clears it when no slot or
prefetch place is left. The main loop alone touches ``_pollers``, ``_discovered_at`` and the
batch of messages to delete (``_to_delete``, ``_to_delete_since``). A long-poll thread reads the
number of running jobs through *running_count*, before it takes ``_lock``, and sets *wakeup* when
it held new messages. No other lock is taken while ``_lock`` is held. The main loop's sweeps read
the ledger's count of queued jobs per queue through *queued_counts* (on the main loop's database
connection), so that an empty short poll is never taken for an empty queue.
"""

from __future__ import annotations

import collections
import fnmatch
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..exceptions import MalformedMessage, TransportError, TransportMisconfigured
from ..transports.base import MAX_BATCH_SIZE, ReceivedMessage, Transport

# The worker package's one logger (see loop.py).
logger = logging.getLogger("django_asyncjobs.worker")

MAX_ERROR_BACKOFF_SECONDS = 30.0
#: Messages of claimed jobs are deleted in batches: when ten are waiting, or after this long.
DELETE_DELAY_SECONDS = 0.2
#: A prefetched message not started within this long goes back to SQS: it bounds how long a
#: held lower-priority job can go ahead of a newly arrived higher-priority one.
HOLD_SECONDS = 2.0
#: A long poll asks every SQS server, where a short poll (no wait) samples only some of them and
#: may return nothing although messages exist. One second is the shortest long poll.
CONFIRM_WAIT_SECONDS = 1
#: How long a stopping worker waits for an open long poll, whose messages it then hands back.
#: Messages a poll brings later stay invisible for the visibility timeout, then come back.
POLL_JOIN_SECONDS = 1.0


def is_pattern(queue: str) -> bool:
    """Return whether a ``--queues`` entry is a glob pattern (``reports-*``), not a name.

    >>> is_pattern("reports-*"), is_pattern("default")
    (True, False)
    """
    return any(c in queue for c in "*?[")


class Inbox:
    """Receive from *queue_specs* in priority order, for a main loop of *concurrency* slots."""

    def __init__(
        self,
        *,
        transport: Transport,
        queue_specs: Sequence[str],
        concurrency: int,
        burst: bool,
        wait_seconds: int,
        prefetch: int,
        visibility_timeout_seconds: int,
        discovery_interval_seconds: float,
        running_count: Callable[[], int],
        queued_counts: Callable[[Sequence[str]], dict[str, int] | None],
        stopping: threading.Event,
        wakeup: threading.Event,
    ) -> None:
        self.transport = transport
        #: The --queues option as given: names and glob patterns ("reports-*"), highest first.
        self.queue_specs = list(queue_specs)
        self.concurrency = concurrency
        self.burst = burst
        self.wait_seconds = wait_seconds
        #: Messages received ahead of free slots, so the next job starts without an SQS round
        #: trip: at most PREFETCH, and no more than this worker started in the last second (so
        #: workers of long jobs hold nothing). Unused ones go back after HOLD_SECONDS.
        self.prefetch = prefetch
        self.hold_seconds = min(HOLD_SECONDS, visibility_timeout_seconds / 2)
        self.discovery_interval_seconds = discovery_interval_seconds
        self._running_count = running_count
        self._queued_counts = queued_counts
        self._stopping = stopping
        self._wakeup = wakeup

        self._lock = threading.Lock()
        self._held: list[tuple[int, int, float, ReceivedMessage]] = []
        self._order = itertools.count()
        self._queues = [q for q in self.queue_specs if not is_pattern(q)]
        self._recent_starts: collections.deque[float] = collections.deque()
        self._failing_since: float | None = None
        self._armed = threading.Event()
        self._pollers: list[threading.Thread] = []
        self._polling = False
        self._discovered_at = 0.0
        self._to_delete: list[ReceivedMessage] = []
        self._to_delete_since = 0.0

    @property
    def queues(self) -> list[str]:
        """The queue names consumed now, highest priority first (patterns resolved)."""
        with self._lock:
            return list(self._queues)

    # -- long polling ----------------------------------------------------------------------------

    @property
    def armed(self) -> bool:
        return self._armed.is_set()

    def arm(self) -> None:
        """Let the long-poll threads receive (the main loop is idle, or stopping)."""
        self._armed.set()

    def disarm(self) -> None:
        self._armed.clear()

    def start_pollers(self) -> None:
        self._polling = True
        for queue in self.queues:
            self._start_poller(queue)

    def join_pollers(self) -> None:
        # A long poll cannot be interrupted. Waiting up to 20 s for it would make every deploy
        # slow; what it brings after we leave stays invisible for the visibility timeout and is
        # then delivered to another worker, so nothing is lost.
        join_until = time.monotonic() + POLL_JOIN_SECONDS
        for thread in self._pollers:
            thread.join(max(0.0, join_until - time.monotonic()))

    def _start_poller(self, queue: str) -> None:
        thread = threading.Thread(
            target=self._poll, args=(queue,), name=f"asyncjobs-poll-{queue}", daemon=True
        )
        thread.start()
        self._pollers.append(thread)

    def _poll(self, queue: str) -> None:
        """Long-poll one queue while the main loop is idle and has free slots."""
        backoff = 0.0
        while not self._stopping.is_set():
            if not self._armed.wait(1.0) or self._stopping.is_set():
                continue
            running = self._running_count()
            with self._lock:
                wanted = self.concurrency + self._prefetch_now() - running - len(self._held)
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
                self.release(received)
            elif received:
                self.hold(received)
                self._wakeup.set()

    # -- queue discovery -------------------------------------------------------------------------

    def rediscover_if_due(self) -> None:
        if time.monotonic() - self._discovered_at >= self.discovery_interval_seconds:
            self.discover()

    def discover(self) -> None:
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
            new = [q for q in resolved if q not in self._queues]
            self._queues = resolved
        for queue in new:
            logger.info("worker consumes a new queue queue=%s", queue)
            # Before start_pollers() (the first discovery) it starts them all: one thread a queue.
            if self._polling:
                self._start_poller(queue)

    def _rank(self, queue: str) -> int:
        with self._lock:
            return self._queues.index(queue) if queue in self._queues else len(self._queues)

    # -- held messages ---------------------------------------------------------------------------

    def take(self, free: int, *, sweep: bool) -> list[ReceivedMessage]:
        """Return up to *free* messages, highest-priority queue first.

        Messages the long-poll threads brought come first; with *sweep*, the queues are also
        short-polled in priority order when there are none. Up to ``prefetch`` of the rest stay
        in the inbox for the next free slot; more than that go back to SQS.
        """
        self.release_held(older_than=self.hold_seconds)
        with self._lock:
            prefetch = self._prefetch_now()
            pending = sorted(self._held)
            take, keep = pending[:free], pending[free:]
            self._held[:] = keep[:prefetch]
            extra = [m for _, _, _, m in keep[prefetch:]]
        messages = [m for _, _, _, m in take]
        if not messages and sweep:
            swept = self._sweep(free + prefetch)
            messages = swept[:free]
            self.hold(swept[free:])
        self.release(extra)
        return messages

    def hold(self, messages: Sequence[ReceivedMessage]) -> None:
        """Put received *messages* in the inbox, ranked by their queue, stamped with the time."""
        ranked = [(self._rank(message.queue), message) for message in messages]
        now = time.monotonic()
        with self._lock:
            for rank, message in ranked:
                self._held.append((rank, next(self._order), now, message))

    def note_start(self, now: float) -> None:
        """Count a job started at *now* (monotonic): the prefetch follows the starts' pace."""
        with self._lock:
            self._recent_starts.append(now)

    def _prefetch_now(self) -> int:
        """How many messages to hold ahead: PREFETCH, capped by the starts of the last second.

        Called with the lock held.
        """
        horizon = time.monotonic() - 1.0
        while self._recent_starts and self._recent_starts[0] < horizon:
            self._recent_starts.popleft()
        return min(self.prefetch, len(self._recent_starts))

    def _sweep(self, free: int) -> list[ReceivedMessage]:
        """Receive from the queues in priority order and stop at the first that has messages.

        With a backlog this keeps the order strict: a lower queue is only read while no higher
        one has a job waiting. "Waiting" is the ledger's word, not an empty short poll's: a short
        poll samples some of SQS's servers and may return nothing although messages exist. So a
        queue with no job queued is not asked at all, and one whose queued jobs a short poll did
        not find is asked again with a long poll, which asks every server, before a lower queue
        is read. That long poll waits only while no job runs here (a busy main loop has outcomes
        to record): until then the sweep stops at that queue. Without the ledger (the database
        is away) every queue is short-polled, as before.
        """
        queues = self.queues
        waiting = self._queued_counts(queues)
        for queue in queues:
            if waiting is not None and not waiting.get(queue):
                continue
            received = self._receive_or_report(queue, free, wait_seconds=0)
            if received is None:
                return []
            if received:
                return received
            if waiting is None or self.transport.short_poll_is_complete:
                continue
            if self._running_count() or self._holds_any():
                return []
            received = self._receive_or_report(queue, free, wait_seconds=CONFIRM_WAIT_SECONDS)
            if received is None:
                return []
            if received:
                return received
            # Out of sight: held by another worker, or hidden after a delivery that failed.
            # Waiting longer for them would stop the lower queues for as long.
        return []

    def _holds_any(self) -> bool:
        with self._lock:
            return bool(self._held)

    def confirm(self, free: int) -> list[ReceivedMessage]:
        """Receive what any queue holds, asking every server: for a worker about to stop.

        All queues are long-polled at once (one thread each), for CONFIRM_WAIT_SECONDS at most;
        a transport whose short poll sees everything is short-polled instead.
        """
        queues = self.queues
        wait = 0 if self.transport.short_poll_is_complete else CONFIRM_WAIT_SECONDS
        limit = min(free, MAX_BATCH_SIZE)
        if len(queues) <= 1 or not wait:
            results = [self._receive_or_report(queue, limit, wait_seconds=wait) for queue in queues]
        else:
            with ThreadPoolExecutor(len(queues), thread_name_prefix="asyncjobs-confirm") as pool:
                results = list(
                    pool.map(
                        lambda queue: self._receive_or_report(queue, limit, wait_seconds=wait),
                        queues,
                    )
                )
        received = [message for batch in results if batch for message in batch]
        ranked = sorted(received, key=lambda message: self._rank(message.queue))
        self.hold(ranked[free:])
        return ranked[:free]

    def _receive_or_report(
        self, queue: str, free: int, *, wait_seconds: float
    ) -> list[ReceivedMessage] | None:
        """Receive up to *free* messages from *queue*; ``None`` (logged once) if that failed."""
        try:
            received = self.transport.receive(
                queue, max_messages=min(free, MAX_BATCH_SIZE), wait_seconds=wait_seconds
            )
        except TransportError as exc:
            self._report_failure(exc)
            self._stopping.wait(1.0)
            return None
        self._recovered()
        return received

    def release_held(self, *, older_than: float = 0.0) -> None:
        """Give back the held messages (those held longer than *older_than* seconds)."""
        limit = time.monotonic() - older_than
        with self._lock:
            held = self._held
            released = [m for _, _, at, m in held if at <= limit]
            held[:] = [entry for entry in held if entry[2] > limit]
        self.release(released)

    def release(self, messages: Sequence[ReceivedMessage]) -> None:
        # Unclaimed messages go straight back, so that another worker (or we, later, in priority
        # order) can take them instead of waiting out their visibility timeout.
        for message in messages:
            try:
                self.transport.change_visibility(message, timeout_seconds=0)
            except TransportError as exc:
                logger.warning("could not release a message queue=%s error=%s", message.queue, exc)

    # -- messages the main loop is done with -----------------------------------------------------

    def delete(self, messages: Sequence[ReceivedMessage]) -> None:
        """Delete *messages* (their jobs are claimed, or they name none): soon, in batches."""
        if not self._to_delete:
            self._to_delete_since = time.monotonic()
        self._to_delete.extend(messages)
        self.flush_deletes()

    def flush_deletes(self, *, force: bool = False) -> None:
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

    def seconds_to_flush(self, now: float) -> float | None:
        """Return how long until the waiting deletes are due, or ``None`` if none wait."""
        if not self._to_delete:
            return None
        return max(0.0, self._to_delete_since + DELETE_DELAY_SECONDS - now)

    def change_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        try:
            self.transport.change_visibility(message, timeout_seconds=seconds)
        except TransportError as exc:
            logger.warning("could not change message visibility error=%s", exc)

    def quarantine(self, message: ReceivedMessage, error: MalformedMessage) -> None:
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

    # -- transport failures ----------------------------------------------------------------------

    def _report_failure(self, exc: Exception) -> None:
        with self._lock:
            first = self._failing_since is None
            if first:
                self._failing_since = time.monotonic()
        if first and isinstance(exc, TransportMisconfigured):
            logger.error("worker's transport is misconfigured, retrying error=%s", exc)
        elif first:
            logger.error("worker cannot reach its transport, retrying error=%s", exc)

    def _recovered(self) -> None:
        with self._lock:
            was_failing, self._failing_since = self._failing_since is not None, None
        if was_failing:
            logger.warning("worker reaches its transport again")
