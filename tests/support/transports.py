"""Transport wrappers that make a test transport behave as real SQS can."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from django_asyncjobs.transports.base import ReceivedMessage, Transport


class BlindShortPolls:
    """Wrap *transport* so that a receive without waiting returns nothing, as SQS's may.

    AWS documents that a short poll samples a subset of its servers and can return no message
    although the queue has some; a long poll asks them all. ``blind_queues`` limits the
    blindness to those queues (all by default); ``misses`` counts the short polls it swallowed.

    Example::

        transport = BlindShortPolls(MemoryTransport())
        transport.receive("default", max_messages=10, wait_seconds=0)  # [] whatever is there
    """

    short_poll_is_complete = False

    def __init__(self, transport: Transport, *, blind_queues: Collection[str] | None = None):
        self.transport = transport
        self.blind_queues = None if blind_queues is None else set(blind_queues)
        self.misses = 0

    def receive(
        self, queue: str, *, max_messages: int, wait_seconds: float
    ) -> list[ReceivedMessage]:
        """Return nothing for a short poll of a blind queue; pass long polls through."""
        if wait_seconds == 0 and (self.blind_queues is None or queue in self.blind_queues):
            self.misses += 1
            return []
        return self.transport.receive(queue, max_messages=max_messages, wait_seconds=wait_seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)
