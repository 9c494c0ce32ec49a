"""The table of running processes: each worker and scheduler says it is alive, and what is amiss.

Running ``runworker`` without ``runscheduler`` (the Celery habit) used to leave jobs
``scheduled`` without a word. Now every worker process and scheduler keeps a row in
:class:`~django_asyncjobs.models.Process` through a :class:`Presence`, and :func:`attention`
says what an operator must know:

- due jobs wait and no scheduler is alive: nobody sends them to SQS;
- a queue has waiting jobs and no live worker consumes it (by name or by glob pattern).

``asyncjobs stats`` and the admin (queue overview, job list) show both. Each process also
watches for the one that concerns it and logs a warning when it starts and a line when it ends:
a worker for a missing scheduler, a scheduler for queues nobody consumes.

Registration never stops a process: a write that fails (the database is away) is logged once
and made again with the next heartbeat, which writes the whole row when it is missing.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from django.db import DatabaseError, router

from .conf import get_settings
from .db import close_if_unusable, retry_on_lost_connection
from .models import Job, Process, ProcessKind
from .queries import ProcessInfo

#: Rows of processes silent this long are deleted by the scheduler. Long enough that an operator
#: finds, the next morning, the worker that died in the night.
DEAD_PROCESS_RETENTION_SECONDS = 24 * 3600.0
#: How often the scheduler deletes them.
PRUNE_DEAD_EVERY_SECONDS = 300.0


def consumes(specs: Iterable[str], queue: str) -> bool:
    """Return whether a worker given ``--queues`` *specs* (names or glob patterns) consumes
    *queue*.

    >>> consumes(["high", "reports-*"], "reports-daily"), consumes(["high"], "low")
    (True, False)
    """
    return any(fnmatch.fnmatchcase(queue, spec) for spec in specs)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attention:
    """What an operator must know about the processes: empty when all is well.

    Example::

        for line in attention().messages:
            print(line)
    """

    #: Due jobs wait and no scheduler is alive to send them.
    scheduler_missing: bool = False
    #: Queues with waiting jobs (due, or sent) that no live worker consumes.
    unconsumed_queues: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.scheduler_missing or bool(self.unconsumed_queues)

    @property
    def messages(self) -> list[str]:
        """One sentence per problem, saying what to start."""
        lines = []
        if self.scheduler_missing:
            lines.append(
                "Due jobs are waiting and no scheduler is alive: nothing sends them to their "
                "queues. Start `manage.py runscheduler`."
            )
        for queue in self.unconsumed_queues:
            lines.append(
                f"Queue {queue!r} has waiting jobs and no live worker consumes it. Start "
                f"`manage.py runworker --queues {queue}` (or add it to a worker's --queues)."
            )
        return lines


def scheduler_missing(
    *, using: str | None = None, stale_after_seconds: float | None = None
) -> bool:
    """Return whether due jobs wait while no scheduler is alive.

    "Due jobs" are those the relay would send now (``Job.objects.due_queues()``: scheduled,
    due, not blocked): a look at the process table, then one index probe per such queue.
    """
    alias = using or router.db_for_read(Process)
    live = Process.objects.db_manager(alias).live(stale_after_seconds=stale_after_seconds)
    if live.filter(kind=ProcessKind.SCHEDULER).exists():
        return False
    return bool(Job.objects.db_manager(alias).due_queues())


def unconsumed_queues(
    *, using: str | None = None, stale_after_seconds: float | None = None
) -> list[str]:
    """Return the queues with waiting jobs (due, or sent and not started) that no live worker
    consumes, by name."""
    alias = using or router.db_for_read(Process)
    manager = Job.objects.db_manager(alias)
    waiting = set(manager.due_queues()) | set(manager.queued_counts())
    if not waiting:
        return []
    live = Process.objects.db_manager(alias).live(stale_after_seconds=stale_after_seconds)
    specs = [
        list(queues or ())
        for queues in live.filter(kind=ProcessKind.WORKER).values_list("queues", flat=True)
    ]
    return sorted(q for q in waiting if not any(consumes(s, q) for s in specs))


def attention(*, using: str | None = None, stale_after_seconds: float | None = None) -> Attention:
    """Return what an operator must know now: see :class:`Attention`.

    Example::

        if attention().scheduler_missing:
            ...
    """
    return Attention(
        scheduler_missing=scheduler_missing(using=using, stale_after_seconds=stale_after_seconds),
        unconsumed_queues=tuple(
            unconsumed_queues(using=using, stale_after_seconds=stale_after_seconds)
        ),
    )


class Presence:
    """This process's row in the process table: written at start, beaten, deleted at a clean stop.

    Call :meth:`tick` often and :meth:`unregister` when stopping cleanly, all from one thread
    (its connection is the one used). The first tick writes the row, so a process that ends
    before its first tick (a burst worker that found nothing to do) costs the database nothing;
    later ticks do what is due: a heartbeat every ``HEARTBEAT_INTERVAL_SECONDS``, and a look at
    what concerns this process every ``STALE_AFTER_SECONDS``. Database errors are logged, never
    raised.

    Example::

        presence = Presence(kind=ProcessKind.WORKER, name="web-1:4242", queues=["default"],
                            concurrency=4, logger=logger)
        while running:
            presence.tick()
        presence.unregister()
    """

    def __init__(
        self,
        *,
        kind: ProcessKind,
        logger: logging.Logger,
        name: str | None = None,
        queues: Sequence[str] = (),
        concurrency: int | None = None,
        using: str | None = None,
    ) -> None:
        from . import __version__

        conf = get_settings()
        host = socket.gethostname()
        pid = os.getpid()
        self.info = ProcessInfo(
            id=uuid.uuid4(),
            kind=kind.value,
            name=name or f"{host}:{pid}",
            host=host,
            pid=pid,
            queues=tuple(queues),
            concurrency=concurrency,
            version=__version__,
        )
        self.using = using or router.db_for_write(Process)
        self.logger = logger
        self.interval_seconds = conf.heartbeat_interval_seconds
        self.stale_after_seconds = conf.stale_after_seconds
        self._registered = False
        self._beat_at = self._look_at = 0.0
        self._failing = False
        self._scheduler_missing = False
        self._unconsumed: set[str] = set()

    def tick(self) -> None:
        """Register on the first call; then heartbeat, and look around, when each is due."""
        now = time.monotonic()
        manager = Process.objects.db_manager(self.using)
        if not self._registered:
            # Attempted once: when it fails, the heartbeats write the whole row.
            self._registered = True
            self._beat_at = now
            # Processes started with this one may not have registered yet: the first look
            # comes one stale window later.
            self._look_at = now + self.stale_after_seconds
            self._write(lambda: manager.register(self.info))
            return
        if now - self._beat_at >= self.interval_seconds:
            self._beat_at = now
            self._write(lambda: manager.beat(self.info))
        if now >= self._look_at:
            self._look_at = now + self.stale_after_seconds
            self._write(self._look)

    def unregister(self) -> None:
        """Delete this process's row (a clean stop); nothing if it never registered."""
        if self._registered:
            self._write(lambda: Process.objects.db_manager(self.using).unregister(self.info.id))

    def _write(self, operation: Callable[[], object]) -> bool:
        try:
            retry_on_lost_connection(operation, using=self.using)
        except DatabaseError as exc:
            if not self._failing:
                self.logger.warning(
                    "cannot update the process table; trying again with the next heartbeat "
                    "kind=%s name=%s error=%s",
                    self.info.kind,
                    self.info.name,
                    exc,
                )
                self._failing = True
            close_if_unusable(self.using, after_error=True)
            return False
        self._failing = False
        return True

    def _look(self) -> None:
        if self.info.kind == ProcessKind.WORKER:
            self._look_for_scheduler()
        else:
            self._look_for_consumers()

    def _look_for_scheduler(self) -> None:
        missing = scheduler_missing(using=self.using, stale_after_seconds=self.stale_after_seconds)
        if missing and not self._scheduler_missing:
            self.logger.warning(
                "due jobs are waiting and no scheduler is alive: nothing sends them to their "
                "queues; start manage.py runscheduler (no heartbeat of one within %g s)",
                self.stale_after_seconds,
            )
        elif self._scheduler_missing and not missing:
            self.logger.info("a scheduler is alive again, or no due job waits any more")
        self._scheduler_missing = missing

    def _look_for_consumers(self) -> None:
        unconsumed = set(
            unconsumed_queues(using=self.using, stale_after_seconds=self.stale_after_seconds)
        )
        for queue in sorted(unconsumed - self._unconsumed):
            self.logger.warning(
                "queue has waiting jobs and no live worker consumes it queue=%s; start "
                "manage.py runworker --queues %s",
                queue,
                queue,
            )
        for queue in sorted(self._unconsumed - unconsumed):
            self.logger.info("queue is consumed again, or no job waits in it queue=%s", queue)
        self._unconsumed = unconsumed
