"""The transport contract: what the scheduler, the worker and the operator tools need.

This module defines the contract and its value objects only; the transports (``sqs.py``,
``memory.py``) import it, never the other way round, and the factory is in ``__init__.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

#: SendMessageBatch, DeleteMessageBatch and ReceiveMessage take at most 10 entries.
#: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-batch-api.html
MAX_BATCH_SIZE = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingMessage:
    """A message to send; *id* is unique within its batch and reported back on failure."""

    id: str
    body: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedMessage:
    """A message a worker received; *receipt* is what delete and visibility calls need."""

    queue: str
    body: str
    receipt: str
    #: How many times the transport has handed this message out (1 on first delivery).
    receive_count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueCounts:
    """How many messages a queue holds, approximately (SQS counts are estimates).

    >>> counts = QueueCounts(visible=3, in_flight=1)
    >>> f"{counts.visible}+{counts.in_flight}"
    '3+1'
    """

    #: Waiting to be received.
    visible: int
    #: Received and neither deleted nor handed back yet.
    in_flight: int
    #: False: the transport has no such queue yet (both counts are 0). Looking does not create
    #: it; the scheduler does on its first send, or an operator with ``asyncjobs create-queues``.
    exists: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A message found in a dead-letter queue."""

    queue: str
    message_id: str
    body: str
    receive_count: int


@runtime_checkable
class Transport(Protocol):
    """What the scheduler, the worker and the operator tools need from a message transport.

    Queue arguments are job queue names (``"default"``); mapping them to transport names (the
    ``QUEUE_PREFIX``) is the transport's business. Every method raises
    :class:`~django_asyncjobs.exceptions.TransportError` when the transport cannot be reached,
    and its subclass :class:`~django_asyncjobs.exceptions.TransportMisconfigured` when the
    transport is configured wrong (no region or credentials, say), which retrying cannot mend.

    Releasing a message is ``change_visibility(message, timeout_seconds=0)``; deleting takes any
    number of messages and batches them as the transport allows.

    The operator tools (``manage.py asyncjobs stats``, ``create-queues``, ``dead-letters``,
    ``redrive`` and the admin's queue overview) also call :meth:`ensure_queue`,
    :meth:`queue_counts`, :meth:`dead_letters` and :meth:`redrive`, and only when
    :attr:`can_inspect_queues` is true.
    """

    #: Whether the queues this transport reaches are those every process shares, so that the
    #: operator tools, which run in processes of their own, can count, create and redrive them.
    #: They check it first: statistics show "-" without it, and the other tools refuse to run.
    #: A transport that cannot inspect its queues at all sets it false too, and may raise
    #: :class:`NotImplementedError` from queue_counts(), dead_letters() and redrive().
    can_inspect_queues: bool
    #: Whether a receive without waiting sees every message that is there. SQS's does not: a
    #: short poll samples some of its servers and may return nothing although messages exist,
    #: so a worker that must know a queue is empty asks again with a long poll.
    short_poll_is_complete: bool

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> set[str]:
        """Send up to :data:`MAX_BATCH_SIZE` messages; return the ids of those that failed."""
        ...

    def receive(
        self, queue: str, *, max_messages: int, wait_seconds: float
    ) -> list[ReceivedMessage]:
        """Return up to *max_messages* messages, waiting up to *wait_seconds* for the first."""
        ...

    def delete(self, messages: Sequence[ReceivedMessage]) -> None:
        """Delete *messages* (any queues, any number) so they are never delivered again."""
        ...

    def change_visibility(self, message: ReceivedMessage, *, timeout_seconds: int) -> None:
        """Hide *message* for *timeout_seconds* more (0 hands it back to other workers at once)."""
        ...

    def quarantine(self, message: ReceivedMessage) -> bool:
        """Set aside a message that is not ours (its dead-letter queue); ``False`` if deleted."""
        ...

    def list_queues(self) -> list[str]:
        """Return the job queues that exist (names without prefix; dead-letter queues left out)."""
        ...

    def verify(self, queue: str) -> None:
        """Make one cheap request that needs what the real work needs, and create nothing.

        ``runworker`` and ``runscheduler`` call it once at start-up. Raises
        :class:`~django_asyncjobs.exceptions.TransportMisconfigured` when the configuration is
        wrong (they then exit) and :class:`~django_asyncjobs.exceptions.TransportError` when
        the transport cannot be reached (they start, and keep retrying). A missing *queue* is
        no error.
        """
        ...

    def describe(self) -> str:
        """Return the kind of transport and where it sends, for a start-up line."""
        ...

    def ensure_queue(self, queue: str) -> str:
        """Create *queue* if it does not exist; return where it is (SQS: the queue's URL).

        An operator action (``asyncjobs create-queues``); workers never need it.
        """
        ...

    def queue_counts(self, queue: str) -> QueueCounts:
        """Return how many messages *queue* holds (dead letters not included).

        A read: a queue that does not exist is reported (``exists=False``), never created.
        """
        ...

    def dead_letters(self, queue: str, *, limit: int = 10) -> tuple[int, list[DeadLetter]]:
        """Return how many messages *queue*'s dead-letter queue holds, and up to *limit* of them.

        The messages are looked at, not removed. A queue without a dead-letter queue has none.
        """
        ...

    def redrive(self, queue: str, *, limit: int | None = None) -> int:
        """Move up to *limit* (default all) dead-lettered messages back to *queue*; return how many.

        A doorbell whose job was sent again meanwhile carries a stale token and claims
        nothing, so redriving is always safe.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...
