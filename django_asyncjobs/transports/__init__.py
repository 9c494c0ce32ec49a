"""Transports carry doorbell messages from the scheduler to workers.

``sqs`` is the production transport; ``memory`` is an in-process twin for unit tests. Both satisfy
:class:`~django_asyncjobs.transports.base.Transport`; :func:`get_transport` builds the one the
settings name.
"""

from __future__ import annotations

from ..conf import AsyncJobsSettings, get_settings
from .base import DeadLetter, OutgoingMessage, QueueCounts, ReceivedMessage, Transport

__all__ = [
    "DeadLetter",
    "OutgoingMessage",
    "QueueCounts",
    "ReceivedMessage",
    "Transport",
    "get_transport",
]


def get_transport(conf: AsyncJobsSettings | None = None) -> Transport:
    """Build the transport that ``ASYNCJOBS["TRANSPORT"]`` names.

    Each call builds a new SQS transport; a worker or scheduler builds one at start and keeps
    it. The memory transport is one per process, so that a scheduler and a worker meet.

    Example::

        transport = get_transport()
        try:
            failed = transport.send_batch("default", [OutgoingMessage(id="1", body="...")])
        finally:
            transport.close()
    """
    conf = conf or get_settings()
    # Imported here so that boto3 is loaded only by processes that build an SQS transport.
    if conf.transport == "memory":
        from .memory import MemoryTransport

        return MemoryTransport.shared()
    from .sqs import SQSTransport

    return SQSTransport(conf)
