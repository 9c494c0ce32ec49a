"""The worker's side of the transport: receive messages, hold them, give back or delete them.

:class:`Inbox` owns one long-poll thread per queue (``asyncjobs-poll-<queue>``) and what they
share with the main loop. Guarded by ``Inbox._lock``:

- ``_held``: the jobs named by messages received and not yet taken, as ``(queue rank,
  -priority, arrival order, received at, bell)``; sorted, the first queue's jobs come first,
  highest priority first, then oldest. Long-poll threads add to it (:meth:`~Inbox.hold`); the
  main loop takes from it (:meth:`~Inbox.take`) and gives back what it held too long
  (:meth:`~Inbox.release_held`).
- ``_malformed``: messages that name no job of ours, for the main loop to set aside.
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

A message may name several jobs (see :mod:`~django_asyncjobs.payload`): each becomes a
:class:`Bell`, and the message's :class:`Delivery` (main loop only, once held) counts the ones
not yet settled. The message is deleted when every job it names is claimed or dropped; a job
that must come back later (its row is busy, its name unknown here) makes the message come back
instead. A message none of whose jobs was taken goes back to SQS whole; the rest of one that
was taken from goes back through the ledger (:meth:`~Inbox.give_back`).
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
from dataclasses import dataclass

from ..exceptions import MalformedMessage, TransportError, TransportMisconfigured
from ..payload import MAX_JOBS_PER_MESSAGE, Doorbell, decode_message
from ..transports.base import MAX_BATCH_SIZE, ReceivedMessage, Transport

# The worker package's one logger (see loop.py).
logger = logging.getLogger("django_asyncjobs.worker")

MAX_ERROR_BACKOFF_SECONDS = 30.0
#: Messages of claimed jobs are deleted in batches: when ten are waiting, or after this long.
DELETE_DELAY_SECONDS = 0.2
#: A prefetched job not started within this long goes back (its message to SQS, or the job to the
#: ledger): it bounds how long a held lower-priority job can go ahead of a newly arrived
#: higher-priority one, and how long a short job waits behind long ones it shared a message with.
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


@dataclass(eq=False, slots=True)
class Delivery:
    """A received message and what became of the jobs it names (touched by the main loop only,
    once held)."""

    message: ReceivedMessage
    #: How many jobs the message names.
    jobs: int
    #: Jobs taken to be claimed, or settled: while 0, the message can go back whole.
    taken: int = 0
    #: Jobs not settled yet: the message is done with when none is left.
    unsettled: int = 0
    #: Bring the message back after this long instead of deleting it (a job of it must come
    #: back: its row was busy, or its name is unknown here).
    hide_seconds: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Bell:
    """One job named by a received message."""

    delivery: Delivery
    doorbell: Doorbell

    @property
    def message(self) -> ReceivedMessage:
        return self.delivery.message


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
        hand_back: Callable[[Sequence[Doorbell]], bool],
        stopping: threading.Event,
        wakeup: threading.Event,
    ) -> None:
        self.transport = transport
        #: The --queues option as given: names and glob patterns ("reports-*"), highest first.
        self.queue_specs = list(queue_specs)
        self.concurrency = concurrency
        self.burst = burst
        self.wait_seconds = wait_seconds
        #: Jobs held ahead of free slots, so the next job starts without an SQS round trip: at
        #: most PREFETCH, and no more than this worker started in the last second or than its
        #: messages name (so workers of long jobs, sent a job per message, hold nothing).
        #: Unused ones go back after HOLD_SECONDS.
        self.prefetch = prefetch
        self.hold_seconds = min(HOLD_SECONDS, visibility_timeout_seconds / 2)
        self.discovery_interval_seconds = discovery_interval_seconds
        self._running_count = running_count
        self._queued_counts = queued_counts
        #: Puts jobs back to ``scheduled`` in the ledger (main loop); False if it could not.
        self._hand_back = hand_back
        self._stopping = stopping
        self._wakeup = wakeup

        self._lock = threading.Lock()
        self._held: list[tuple[int, int, int, float, Bell]] = []
        self._malformed: list[tuple[ReceivedMessage, MalformedMessage]] = []
        #: Jobs per message in the last receive: receives ask for as many messages as the free
        #: slots and prefetch need, not as many as there are jobs to start. Until a message
        #: came, a receive asks for one: it may name a hundred jobs.
        self._jobs_per_message = float(MAX_JOBS_PER_MESSAGE)
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
                self.disarm()
                continue
            try:
                received = self.transport.receive(
                    queue, max_messages=self._messages_for(wanted), wait_seconds=self.wait_seconds
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
                # Stand down until the main loop is idle again (it arms us then): receiving
                # again at once held the GIL for the next request's milliseconds of boto3 work
                # while the main loop waited to claim what just came (benchmarks/latency_hops.py:
                # receive -> claim p50 2.7-3.6 ms, 0.6 ms now), and the main loop sweeps the
                # queues itself after it took these.
                self.disarm()
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

    def take(self, free: int, *, sweep: bool) -> list[Bell]:
        """Return up to *free* jobs to claim, highest-priority queue first, then highest
        priority, then oldest.

        Jobs the long-poll threads brought come first; with *sweep*, the queues are also
        short-polled in priority order when there are none. Up to ``prefetch`` of the rest stay
        in the inbox for the next free slot; more than that go back at once.
        """
        self.release_held(older_than=self.hold_seconds)
        self._set_aside_malformed()
        bells, extra = self._pop_held(free)
        if not bells and sweep:
            self.hold(self._sweep(self._messages_for(free + self._prefetch_now_locked())))
            self._set_aside_malformed()
            bells, more = self._pop_held(free)
            extra += more
        self.give_back(extra)
        return bells

    def _pop_held(self, free: int) -> tuple[list[Bell], list[Bell]]:
        """Take up to *free* held jobs; return them and the held jobs beyond the prefetch."""
        with self._lock:
            prefetch = self._prefetch_now()
            pending = sorted(self._held)
            take, keep = pending[:free], pending[free:]
            self._held[:] = keep[:prefetch]
        bells = [entry[-1] for entry in take]
        for bell in bells:
            bell.delivery.taken += 1
        return bells, [entry[-1] for entry in keep[prefetch:]]

    def _messages_for(self, jobs: int) -> int:
        """How many messages to ask for, to receive about *jobs* jobs (1 to 10)."""
        with self._lock:
            per_message = self._jobs_per_message
        return max(1, min(MAX_BATCH_SIZE, round(jobs / per_message)))

    def _prefetch_now_locked(self) -> int:
        with self._lock:
            return self._prefetch_now()

    def hold(self, messages: Sequence[ReceivedMessage]) -> None:
        """Put the jobs *messages* name in the inbox, ranked by queue and priority, stamped
        with the time; set malformed messages aside for the main loop to quarantine."""
        now = time.monotonic()
        entries: list[tuple[int, int, float, Bell]] = []
        malformed: list[tuple[ReceivedMessage, MalformedMessage]] = []
        for message in messages:
            try:
                doorbells = decode_message(message.body)
            except MalformedMessage as exc:
                malformed.append((message, exc))
                continue
            rank = self._rank(message.queue)
            delivery = Delivery(message=message, jobs=len(doorbells), unsettled=len(doorbells))
            entries.extend((rank, -d.priority, now, Bell(delivery, d)) for d in doorbells)
        named = len(entries)
        with self._lock:
            if messages:
                self._jobs_per_message = max(1.0, named / len(messages))
            for rank, priority, at, bell in entries:
                self._held.append((rank, priority, next(self._order), at, bell))
            self._malformed.extend(malformed)

    def _set_aside_malformed(self) -> None:
        with self._lock:
            malformed, self._malformed = self._malformed, []
        for message, error in malformed:
            self.quarantine(message, error)

    def note_start(self, now: float) -> None:
        """Count a job started at *now* (monotonic): the prefetch follows the starts' pace."""
        with self._lock:
            self._recent_starts.append(now)

    def _prefetch_now(self) -> int:
        """How many jobs to hold ahead: PREFETCH, capped by the starts of the last second, or
        by the jobs a message named lately, if more than one.

        A message naming several jobs was sized by the scheduler from the queue's start rate
        for one worker process: held whole, it lets a worker that just started (or was idle)
        take a busy queue's message without handing most of it back. Called with the lock held.
        """
        horizon = time.monotonic() - 1.0
        while self._recent_starts and self._recent_starts[0] < horizon:
            self._recent_starts.popleft()
        packed = round(self._jobs_per_message) if self._jobs_per_message > 1.5 else 0
        return min(self.prefetch, max(len(self._recent_starts), packed))

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

    def confirm(self, free: int) -> list[Bell]:
        """Receive what any queue holds, asking every server: for a worker about to stop.

        All queues are long-polled at once (one thread each), for CONFIRM_WAIT_SECONDS at most;
        a transport whose short poll sees everything is short-polled instead. Returns up to
        *free* of the jobs received (and held before).
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
        self.hold([message for batch in results if batch for message in batch])
        self._set_aside_malformed()
        bells, extra = self._pop_held(free)
        self.give_back(extra)
        return bells

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
        """Give back the held jobs (those held longer than *older_than* seconds)."""
        limit = time.monotonic() - older_than
        with self._lock:
            held = self._held
            released = [entry[-1] for entry in held if entry[-2] <= limit]
            held[:] = [entry for entry in held if entry[-2] > limit]
        self.give_back(released)

    def give_back(self, bells: Sequence[Bell]) -> None:
        """Let other workers (or this one, later, in priority order) have *bells* (main loop).

        A message none of whose jobs was taken goes back to SQS whole, at once. The jobs left
        of a message that was taken from go back through the ledger: ``scheduled`` again, for
        the scheduler to send anew, and the message is deleted once all of its jobs are settled.
        If the ledger cannot be written, the message is left alone: it comes back after its
        visibility timeout, and the jobs taken from it are dropped then.
        """
        by_delivery: dict[int, list[Bell]] = {}
        for bell in bells:
            by_delivery.setdefault(id(bell.delivery), []).append(bell)
        whole: list[ReceivedMessage] = []
        to_ledger: list[Bell] = []
        for group in by_delivery.values():
            delivery = group[0].delivery
            if not delivery.taken and len(group) == delivery.jobs:
                whole.append(delivery.message)
            else:
                to_ledger.extend(group)
        self.release(whole)
        if to_ledger and self._hand_back([bell.doorbell for bell in to_ledger]):
            for bell in to_ledger:
                bell.delivery.taken += 1
                self.settle(bell)

    def release(self, messages: Sequence[ReceivedMessage]) -> None:
        """Make *messages* visible again at once (none of their jobs was taken)."""
        for message in messages:
            try:
                self.transport.change_visibility(message, timeout_seconds=0)
            except TransportError as exc:
                logger.warning("could not release a message queue=%s error=%s", message.queue, exc)

    def settle(self, bell: Bell, *, hide_seconds: int | None = None) -> None:
        """Count *bell*'s job as done with: claimed, dropped, handed back (main loop).

        With *hide_seconds*, its message must come back after that long (the job could not be
        claimed yet) rather than be deleted. When every job of the message is settled, the
        message is deleted, or hidden for the shortest of those waits.
        """
        delivery = bell.delivery
        delivery.unsettled -= 1
        if hide_seconds is not None:
            hidden = delivery.hide_seconds
            delivery.hide_seconds = hide_seconds if hidden is None else min(hidden, hide_seconds)
        if delivery.unsettled:
            return
        if delivery.hide_seconds is None:
            self.delete([delivery.message])
        else:
            self.change_visibility(delivery.message, delivery.hide_seconds)

    # -- messages the main loop is done with -----------------------------------------------------

    def delete(self, messages: Sequence[ReceivedMessage]) -> None:
        """Delete *messages* (their jobs are settled): soon, in batches."""
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
