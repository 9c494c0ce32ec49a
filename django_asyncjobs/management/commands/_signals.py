"""SIGTERM/SIGINT handling shared by runworker and runscheduler."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def graceful_stop(stop: Callable[[], None], *, on_first: Callable[[str], None]) -> Iterator[None]:
    """Call *stop* on the first SIGTERM/SIGINT and exit at once on the second.

    The previous handlers are restored afterwards, so tests calling the command in-process keep
    theirs.
    """
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            on_first(signal.Signals(signum).name)
            stop()
        else:
            os._exit(128 + signum)

    previous: dict[int, Any] = {}
    for sig in _SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
