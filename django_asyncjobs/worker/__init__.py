"""The worker: receive doorbells, claim jobs, run them, record what happened.

One worker process has five kinds of thread. Each module's object owns some of them, and the
state they share:

==============  ================================  ==============================================
module          threads                           state it owns (and the lock guarding it)
==============  ================================  ==============================================
``loop``        the main loop (caller of run())   ``Worker``: composes the others; stop request
``inbox``       one long-poll thread per queue    ``Inbox``: held messages, queues, prefetch
                                                  (``Inbox._lock``); deletes (main loop only)
``claimed``     none (shared table)               ``ClaimedJobs``: running jobs, outcomes not
                                                  yet written (``ClaimedJobs._lock``)
``runners``     job threads, the event loop       ``Runners``: idle job threads
                                                  (``Runners._lock``), the event loop
``heartbeat``   the heartbeat thread              ``Heartbeat``: its connection, last write
==============  ================================  ==============================================

None of these locks is held while another of them is taken. The names below were importable from
``django_asyncjobs.worker`` when it was one module, and still are.
"""

from __future__ import annotations

from .burst import EXIT_UNFINISHED
from .heartbeat import HEARTBEAT_TICK_SECONDS
from .inbox import (
    CONFIRM_WAIT_SECONDS,
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
    "CONFIRM_WAIT_SECONDS",
    "DELETE_DELAY_SECONDS",
    "EXIT_RECYCLE",
    "EXIT_UNFINISHED",
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
