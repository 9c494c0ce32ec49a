"""The transport contract: send a batch, receive, delete, change visibility."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..conf import AsyncJobsSettings, get_settings

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


@runtime_checkable
class Transport(Protocol):
    """What the scheduler and the worker need from a message transport.

    Queue arguments are job queue names (``"default"``); mapping them to transport names (the
    ``QUEUE_PREFIX``) is the transport's business. Every method raises
    :class:`~django_asyncjobs.exceptions.TransportError` when the transport cannot be reached.
    """

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

    def list_queues(self) -> list[str]:
        """Return the job queues that exist (names without prefix; dead-letter queues left out)."""
        ...

    def quarantine(self, message: ReceivedMessage) -> bool:
        """Set aside a message that is not ours (its dead-letter queue); ``False`` if deleted."""
        ...

    def ensure_queue(self, queue: str) -> None:
        """Create *queue* if it does not exist (an operator action; workers never need it)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def get_transport(conf: AsyncJobsSettings | None = None) -> Transport:
    """Build the transport that ``ASYNCJOBS["TRANSPORT"]`` names.

    Each call builds a new one; a worker or scheduler builds one at start and keeps it.

    >>> transport = get_transport()
    """
    conf = conf or get_settings()
    if conf.transport == "memory":
        from .memory import MemoryTransport

        return MemoryTransport.shared()
    from .sqs import SQSTransport

    return SQSTransport(conf)
