"""The heartbeat thread: tell the supervisor we are alive, and keep our leases fresh.

:class:`Heartbeat` owns one thread (``asyncjobs-heartbeat``) and, through Django's per-thread
connections, its own database connection, which it closes when it ends. Only that thread reads
and writes ``_last_beat``. It reads the leases of :class:`~.claimed.ClaimedJobs` under that
object's lock and writes ``heartbeat_at`` outside it. It stops once the worker is stopping and
no job of ours runs or waits for its outcome to be written, so a job finishing during a
graceful stop stays heartbeated until its outcome is recorded.

The same thread keeps the worker's row in the process table (a
:class:`~django_asyncjobs.processes.Presence`): written at its first tick, beaten with the jobs,
deleted when the thread ends cleanly. All of it on this thread's connection, so the main
loop never waits for it, and a database that is away delays none of the worker's own work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import DatabaseError, connections

from ..db import close_if_unusable, retry_on_lost_connection
from ..models import Job
from ..processes import Presence
from .claimed import ClaimedJobs

# The worker package's one logger (see loop.py).
logger = logging.getLogger("django_asyncjobs.worker")

#: How often the heartbeat thread wakes: it reports liveness each time and writes heartbeats
#: every HEARTBEAT_INTERVAL_SECONDS (retrying each tick after a failed write).
HEARTBEAT_TICK_SECONDS = 0.25


class Heartbeat:
    """Report liveness every tick and stamp ``heartbeat_at`` on our jobs every interval."""

    def __init__(
        self,
        *,
        claimed: ClaimedJobs,
        using: str,
        interval_seconds: float,
        stopping: threading.Event,
        on_alive: Callable[[], None] | None = None,
        presence: Presence | None = None,
    ) -> None:
        self._claimed = claimed
        self.using = using
        self.interval_seconds = interval_seconds
        self._stopping = stopping
        self.on_alive = on_alive
        self.presence = presence
        self._last_beat = time.monotonic()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="asyncjobs-heartbeat", daemon=True)
        self._thread.start()

    def join(self, timeout_seconds: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_seconds)

    def _beat(self) -> None:
        """Heartbeat thread: report liveness, and stamp ``heartbeat_at`` on our jobs.

        A thread of its own, with its own database connection, so that a main loop waiting on a
        slow SQS call does not look like a dead worker. A write that fails is retried on the next
        tick, not an interval later, so the heartbeat is fresh as soon as the database is back.
        """
        try:
            while not self._stopping.wait(HEARTBEAT_TICK_SECONDS) or self._claimed.has_work():
                if self.on_alive is not None:
                    self.on_alive()
                if time.monotonic() - self._last_beat >= self.interval_seconds:
                    self._write()
                if self.presence is not None:
                    self.presence.tick()
            # A clean stop only: a worker that died leaves its row to go stale, shown dead.
            if self.presence is not None:
                self.presence.unregister()
        finally:
            connections.close_all()

    def _write(self) -> None:
        leases = self._claimed.leases()
        if not leases:
            self._last_beat = time.monotonic()
            return
        manager = Job.objects.db_manager(self.using)
        try:
            lost = retry_on_lost_connection(lambda: manager.heartbeat(leases), using=self.using)
        except DatabaseError as exc:
            logger.error("heartbeat failed error=%s", exc)
            close_if_unusable(self.using, after_error=True)
            return
        self._last_beat = time.monotonic()
        for job_id in lost:
            logger.warning("lease lost while running id=%s", job_id)
