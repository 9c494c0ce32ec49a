"""The heartbeat thread: tell the supervisor we are alive, keep our leases fresh, and learn of
cancels operators request for our running jobs.

:class:`Heartbeat` owns one thread (``asyncjobs-heartbeat``) and, through Django's per-thread
connections, its own database connection, which it closes when it ends. Only that thread reads
and writes ``_last_beat`` and ``_listening``. It reads the leases of
:class:`~.claimed.ClaimedJobs` under that object's lock and writes ``heartbeat_at`` outside it.
It stops once the worker is stopping and no job of ours runs or waits for its outcome to be
written, so a job finishing during a graceful stop stays heartbeated until its outcome is
recorded.

Cancels: every heartbeat reads back, in the same statement, whether an operator asked to cancel
one of our jobs. So that a cancel takes a fraction of a second rather than a heartbeat interval,
the connection also LISTENs on the cancel channel; a NOTIFY naming one of our jobs makes the
next tick heartbeat at once. A NOTIFY that is missed (the connection was replaced) costs only
that delay.

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
from typing import Any

import psycopg
from django.db import DatabaseError, connections

from ..db import close_if_unusable, retry_on_lost_connection
from ..models import Job
from ..processes import Presence
from ..queries import CANCEL_CHANNEL
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
        #: The psycopg connection our LISTEN was issued on (Django may replace it).
        self._listening: Any = None

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
                notified = self._cancel_notified()
                if notified or time.monotonic() - self._last_beat >= self.interval_seconds:
                    self._write()
                if self.presence is not None:
                    self.presence.tick()
            # A clean stop only: a worker that died leaves its row to go stale, shown dead.
            if self.presence is not None:
                self.presence.unregister()
        finally:
            connections.close_all()

    def _cancel_notified(self) -> bool:
        """Return whether a NOTIFY on the cancel channel named one of our jobs since last time.

        LISTENs once a job of ours runs, on a connection that does not yet (a new one after an
        outage), so an idle worker opens no connection for it. Once listening, drains every
        notification each tick (no query: a look at the socket), so none pile up on the server
        for this session.
        """
        leases = self._claimed.leases()
        if not leases and self._listening is None:
            return False
        wrapper = connections[self.using]
        try:
            wrapper.ensure_connection()
            raw = wrapper.connection
            if raw is not self._listening:
                raw.execute(f"LISTEN {CANCEL_CHANNEL}")
                self._listening = raw
            named = {notify.payload for notify in raw.notifies(timeout=0)}
        except (DatabaseError, psycopg.Error) as exc:
            # The heartbeat's read-back still learns of cancels, an interval later.
            logger.debug("cannot listen for cancels error=%s", exc)
            self._listening = None
            close_if_unusable(self.using, after_error=True)
            return False
        if not named:
            return False
        return any(str(job_id) in named for job_id, _ in leases)

    def _write(self) -> None:
        leases = self._claimed.leases()
        if not leases:
            self._last_beat = time.monotonic()
            return
        manager = Job.objects.db_manager(self.using)
        try:
            reply = retry_on_lost_connection(lambda: manager.heartbeat(leases), using=self.using)
        except DatabaseError as exc:
            logger.error("heartbeat failed error=%s", exc)
            close_if_unusable(self.using, after_error=True)
            return
        self._last_beat = time.monotonic()
        # A job whose outcome was written between reading the leases and this write shows as
        # lost here although it just finished: only jobs still running have truly lost theirs.
        for job_id in sorted(self._claimed.still_running(reply.lost)):
            logger.warning("lease lost while running id=%s", job_id, extra={"job_id": str(job_id)})
        if reply.cancel_requests:
            self._claimed.request_cancels(reply.cancel_requests)
