"""The worker: receive doorbells, claim jobs, run them, record what happened.

The names below were importable from ``django_asyncjobs.worker`` when it was one module, and
still are.
"""

from __future__ import annotations

from .heartbeat import HEARTBEAT_TICK_SECONDS
from .inbox import (
    DELETE_DELAY_SECONDS,
    HOLD_SECONDS,
    MAX_ERROR_BACKOFF_SECONDS,
    POLL_JOIN_SECONDS,
    is_pattern,
)
from .loop import (
    ASYNC_CANCEL_GRACE_SECONDS,
    BUSY_RETRY_SECONDS,
    EXIT_RECYCLE,
    TICK_SECONDS,
    UNREGISTERED_MAX_DELIVERIES,
    Worker,
    default_worker_id,
)

__all__ = [
    "ASYNC_CANCEL_GRACE_SECONDS",
    "BUSY_RETRY_SECONDS",
    "DELETE_DELAY_SECONDS",
    "EXIT_RECYCLE",
    "HEARTBEAT_TICK_SECONDS",
    "HOLD_SECONDS",
    "MAX_ERROR_BACKOFF_SECONDS",
    "POLL_JOIN_SECONDS",
    "TICK_SECONDS",
    "UNREGISTERED_MAX_DELIVERIES",
    "Worker",
    "default_worker_id",
    "is_pattern",
]
