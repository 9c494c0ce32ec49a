"""Database connections of the long-running loops: kept open, checked, replaced when lost.

Django ties a connection's life to a request: ``close_old_connections()`` runs when one starts
and ends, and with the default ``CONN_MAX_AGE = 0`` it closes the connection every time. The
scheduler, the worker and the supervisor have no requests. Calling that function in their loops
opened a new PostgreSQL session on nearly every pass (a few a second idle, twenty a second while a
queue was held back by flow control). So they keep one connection per thread, whatever
``CONN_MAX_AGE`` says, and use the two helpers below instead:

- :func:`close_if_unusable` drops a connection that an error left broken, and nothing else;
- :func:`retry_on_lost_connection` runs an operation again, once, on a new connection when the
  one it used turned out to be dead (a PostgreSQL restart or failover since its last use).

Job code is not concerned: the worker treats each job like a request (see ``worker.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

T = TypeVar("T")


def close_if_unusable(using: str, *, after_error: bool = False) -> bool:
    """Close this thread's connection to *using* if it no longer works; keep it otherwise.

    Django's ``close_if_unusable_or_obsolete()`` without the ``CONN_MAX_AGE`` rule: a connection
    whose autocommit was left changed, or that raised an error and fails ``SELECT 1`` since, is
    closed (the next query opens a new one). A healthy connection costs no query here: it is
    only tested after an error. Pass *after_error* when the caller has just caught a database
    error: Django forgets that one occurred when the failed transaction is rolled back, so the
    connection is then tested whatever its flag says. Never closes a connection inside a
    transaction.

    Returns whether the connection is closed now (it was, or this call closed it).

    Example::

        close_if_unusable("default")   # at the top of each pass of a loop
    """
    connection = connections[using]
    if connection.connection is None:
        return True
    if connection.in_atomic_block:
        return False
    if connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]:
        connection.close()
        return True
    if after_error or connection.errors_occurred:
        if connection.is_usable():
            connection.errors_occurred = False
            return False
        connection.close()
        return True
    return False


def retry_on_lost_connection(
    operation: Callable[[], T],
    *,
    using: str,
    on_lost: Callable[[], None] | None = None,
) -> T:
    """Run *operation*; if the connection it used was lost, run it once more on a new one.

    A connection idle in a loop dies unnoticed when PostgreSQL restarts or fails over: its first
    query after that fails. Only that case is retried: the connection was open before the call,
    the error is an ``OperationalError`` or ``InterfaceError``, and the connection does not work
    any more. Any other error (a lock timeout, a refused connection while the server is down) and
    a second failure are raised. *on_lost* is called before the retry. Outside transactions
    only: *operation* must be safe to run twice (each of ours is one conditional statement, or
    a pass of a loop that would run again anyway).

    Example::

        claims = retry_on_lost_connection(lambda: manager.claim_many(...), using="default")
    """
    connection = connections[using]
    used = connection.connection
    if used is None or connection.in_atomic_block:
        return operation()
    try:
        return operation()
    except (OperationalError, InterfaceError) as exc:
        # Django may already have dropped the dead connection (a failed rollback closes it) and
        # opened a new one (restoring autocommit): a replaced connection was lost too.
        replaced = connection.connection is not used
        if not replaced and not close_if_unusable(using, after_error=True):
            raise
        logger.warning(
            "database connection lost; retrying on a new connection using=%s error=%s",
            using,
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
        )
    if on_lost is not None:
        on_lost()
    return operation()
