"""Ledger writes that survive a PostgreSQL restart, for the fault tests that cause one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

T = TypeVar("T")


def retry_through_restart(write: Callable[[], T], *, patience: float = 60.0) -> T:
    """Call *write* until it succeeds on a live connection, for at most *patience* seconds.

    The ledgers must not miss an event because the server restarted under the write. *write*
    must be idempotent: a commit can succeed on a server that dies before answering, so callers
    tag rows with a token and skip the insert when the token is already there.

    >>> retry_through_restart(lambda: Execution.objects.count())  # doctest: +SKIP
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError):
            if time.monotonic() > deadline:
                raise
            connection.close()
            time.sleep(0.2)
