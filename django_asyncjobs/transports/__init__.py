"""Transports carry doorbell messages from the scheduler to workers.

``sqs`` is the production transport; ``memory`` is an in-process twin for unit tests. Both satisfy
:class:`~django_asyncjobs.transports.base.Transport`.
"""

from __future__ import annotations

from .base import OutgoingMessage, ReceivedMessage, Transport, get_transport

__all__ = ["OutgoingMessage", "ReceivedMessage", "Transport", "get_transport"]
