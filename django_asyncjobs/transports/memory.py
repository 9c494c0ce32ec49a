"""An in-process transport with SQS's semantics, for unit tests.

Messages live in this process only, so it cannot connect a scheduler and a worker running in
different processes; end-to-end tests use SQS (moto_server) instead. For the same reason its
queue statistics, dead letters and redrive see this process's messages only.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..conf import DEAD_LETTER_SUFFIX
from .base import MAX_BATCH_SIZE, DeadLetter, OutgoingMessage, QueueCounts, ReceivedMessage

_message_ids = itertools.count(1)


@dataclass(slots=True, kw_only=True)
class _Stored:
    body: str
    visible_at: float = 0.0
    receive_count: int = 0
    receipt: str = ""
    message_id: str = field(default_factory=lambda: f"m{next(_message_ids)}")


@dataclass(slots=True)
class _Queue:
    messages: list[_Stored] = field(default_factory=list)


class MemoryTransport:
    """Queues in a dict, with visibility timeouts and receipts like SQS.

    >>> transport = MemoryTransport(visibility_timeout_seconds=30)
    >>> transport.send_batch("default", [OutgoingMessage(id="1", body="hi")])
    set()
    >>> [m.body for m in transport.receive("default", max_messages=10, wait_seconds=0)]
    ['hi']
    >>> transport.queue_counts("default")
    QueueCounts(visible=0, in_flight=1, exists=True)
    """

    #: Its queues live in one process: the operator tools, in processes of their own, would
    #: see empty queues. Its inspection methods work, for tests, on this process's messages.
    can_inspect_queues = False
    short_poll_is_complete = True
    #: Its name in spans' ``messaging.system`` (see tracing.py).
    messaging_system = "memory"
    _shared: MemoryTransport | None = None
    _shared_lock = threading.Lock()

    def __init__(self, *, visibility_timeout_seconds: int = 30) -> None:
        self.visibility_timeout_seconds = visibility_timeout_seconds
        self._queues: dict[str, _Queue] = {}
        self._cond = threading.Condition()
        self._receipts = itertools.count(1)

    @classmethod
    def shared(cls) -> MemoryTransport:
        """Return the process-wide instance, so a scheduler and a worker in one process meet."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _queue(self, queue: str) -> _Queue:
        return self._queues.setdefault(queue, _Queue())

    def ensure_queue(self, queue: str) -> str:
        """Create *queue* if missing; return ``memory:<queue>``."""
        with self._cond:
            self._queue(queue)
        return f"memory:{queue}"

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> set[str]:
        """Append *messages* to *queue*."""
        if len(messages) > MAX_BATCH_SIZE:
            raise ValueError(f"at most {MAX_BATCH_SIZE} messages a batch, not {len(messages)}")
        ids = [m.id for m in messages]
        if len(set(ids)) != len(ids):
            # As SQS (BatchEntryIdsNotDistinct): a failed id would not say which message failed.
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"the ids of a batch must be distinct; repeated: {repeated}")
        with self._cond:
            self._queue(queue).messages.extend(_Stored(body=m.body) for m in messages)
            self._cond.notify_all()
        return set()

    def receive(
        self, queue: str, *, max_messages: int, wait_seconds: float
    ) -> list[ReceivedMessage]:
        """Return visible messages, waiting up to *wait_seconds* for one."""
        deadline = time.monotonic() + wait_seconds
        with self._cond:
            while True:
                now = time.monotonic()
                out: list[ReceivedMessage] = []
                for stored in self._queue(queue).messages:
                    if len(out) >= min(max_messages, MAX_BATCH_SIZE):
                        break
                    if stored.visible_at <= now:
                        stored.visible_at = now + self.visibility_timeout_seconds
                        stored.receive_count += 1
                        stored.receipt = f"{queue}:{next(self._receipts)}"
                        out.append(
                            ReceivedMessage(
                                queue=queue,
                                body=stored.body,
                                receipt=stored.receipt,
                                receive_count=stored.receive_count,
                            )
                        )
                if out or now >= deadline:
                    return out
                self._cond.wait(min(0.05, deadline - now))

    def delete(self, messages: Sequence[ReceivedMessage]) -> None:
        """Remove *messages*; a stale receipt deletes nothing, as SQS may do."""
        receipts = {m.receipt for m in messages}
        with self._cond:
            for q in self._queues.values():
                q.messages = [s for s in q.messages if s.receipt not in receipts]

    def change_visibility(self, message: ReceivedMessage, *, timeout_seconds: int) -> None:
        """Hide *message* for *timeout_seconds* from now."""
        with self._cond:
            for stored in self._queue(message.queue).messages:
                if stored.receipt == message.receipt:
                    stored.visible_at = time.monotonic() + timeout_seconds
            self._cond.notify_all()

    def describe(self) -> str:
        """Return ``memory (one process)``."""
        return "memory (one process)"

    def verify(self, queue: str) -> None:
        """Nothing to check: the memory transport has no configuration to get wrong."""

    def list_queues(self) -> list[str]:
        """Return the queues that exist here, dead-letter queues left out."""
        with self._cond:
            return sorted(q for q in self._queues if not q.endswith(DEAD_LETTER_SUFFIX))

    def quarantine(self, message: ReceivedMessage) -> bool:
        """Move *message* to the queue ``<queue>-dlq`` of this transport."""
        with self._cond:
            self._queue(f"{message.queue}{DEAD_LETTER_SUFFIX}").messages.append(
                _Stored(body=message.body)
            )
        self.delete([message])
        return True

    def queue_counts(self, queue: str) -> QueueCounts:
        """Return how many messages of *queue* are visible, and how many are received."""
        now = time.monotonic()
        with self._cond:
            if queue not in self._queues:
                return QueueCounts(visible=0, in_flight=0, exists=False)
            stored = self._queues[queue].messages
            visible = sum(1 for s in stored if s.visible_at <= now)
            return QueueCounts(visible=visible, in_flight=len(stored) - visible)

    def dead_letters(self, queue: str, *, limit: int = 10) -> tuple[int, list[DeadLetter]]:
        """Return how many messages ``<queue>-dlq`` holds, and the first *limit* of them.

        >>> transport = MemoryTransport()
        >>> transport.send_batch("default", [OutgoingMessage(id="1", body="not ours")])
        set()
        >>> (message,) = transport.receive("default", max_messages=1, wait_seconds=0)
        >>> transport.quarantine(message)
        True
        >>> count, (letter,) = transport.dead_letters("default")
        >>> count, letter.body
        (1, 'not ours')
        >>> transport.redrive("default"), transport.queue_counts("default")
        (1, QueueCounts(visible=1, in_flight=0, exists=True))
        """
        with self._cond:
            stored = self._queue(f"{queue}{DEAD_LETTER_SUFFIX}").messages
            return len(stored), [
                DeadLetter(
                    queue=queue,
                    message_id=s.message_id,
                    body=s.body,
                    receive_count=s.receive_count,
                )
                for s in stored[:limit]
            ]

    def redrive(self, queue: str, *, limit: int | None = None) -> int:
        """Move up to *limit* (default all) messages of ``<queue>-dlq`` back to *queue*."""
        with self._cond:
            dead = self._queue(f"{queue}{DEAD_LETTER_SUFFIX}")
            moved = dead.messages if limit is None else dead.messages[:limit]
            dead.messages = dead.messages[len(moved) :]
            self._queue(queue).messages.extend(_Stored(body=s.body) for s in moved)
            self._cond.notify_all()
            return len(moved)

    def purge(self) -> None:
        """Drop every message of every queue."""
        with self._cond:
            self._queues.clear()

    def depth(self, queue: str) -> int:
        """Return how many messages *queue* holds, visible or not."""
        with self._cond:
            return len(self._queue(queue).messages)

    def close(self) -> None:
        """Nothing to release."""
