"""Where jobs run: reused job threads for sync functions, one event loop for ``async def``.

:class:`Runners` owns these threads:

- job threads (``asyncjobs-job``), started on demand and reused. A thread that finished a job
  counts itself in ``_idle`` and waits on ``_handoff`` for the next one. ``_idle`` and
  ``_closed`` are guarded by ``Runners._lock``; ``_handoff`` is a thread-safe queue.
- the event loop thread (``asyncjobs-event-loop``), started by the main loop with the first
  ``async def`` job. ``_loop`` and ``_loop_thread`` are read and written by the main loop only.

Only the main loop calls :meth:`~Runners.start` and :meth:`~Runners.close`. A job thread, or
the event loop thread, reports each outcome through the *completed* callback, which stores it in
:class:`~.claimed.ClaimedJobs` and wakes the main loop. No lock of this module is held then.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections

from .. import execution
from ..context import JobContext
from .claimed import Running

# The worker package's one logger (see loop.py).
logger = logging.getLogger("django_asyncjobs.worker")


class Runners:
    """Run claimed jobs off the main loop, and report each outcome to *completed*."""

    def __init__(self, *, completed: Callable[[Running, execution.Outcome], None]) -> None:
        self._completed = completed
        self._lock = threading.Lock()
        #: Sync jobs for idle job threads; ``None`` tells a thread to end.
        self._handoff: SimpleQueue[Running | None] = SimpleQueue()
        self._idle = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    def start(self, entry: Running) -> None:
        """Start *entry*'s job: on the event loop if it is ``async def``, else on a job thread."""
        if entry.definition.is_async:
            job = entry.job
            loop = self._event_loop()
            future = asyncio.run_coroutine_threadsafe(
                execution.run_async(
                    entry.definition,
                    job.args,
                    job.kwargs,
                    timeout_seconds=job.timeout,
                    context=JobContext.for_job(job, cancel=entry.cancel),
                    trace=entry.trace,
                ),
                loop,
            )
            future.add_done_callback(lambda f: self._async_done(entry, f))
        else:
            self._submit_sync(entry)

    def close(self) -> None:
        """End the idle job threads (busy ones end after their job) and stop the event loop."""
        with self._lock:
            idle, self._idle = self._idle, 0
            self._closed = True  # threads busy now end after their job
        for _ in range(idle):
            self._handoff.put(None)
        if self._loop is not None:
            self._stop_event_loop(self._loop)

    # -- async jobs ------------------------------------------------------------------------------

    def _async_done(self, entry: Running, future: Any) -> None:
        if future.cancelled():
            return  # cancelled at shutdown: the job is being handed back
        error = future.exception()
        if error is not None:  # run_async returns outcomes; this is a bug or SystemExit & co.
            self._completed(entry, execution.failure(error, started=entry.started))
        else:
            self._completed(entry, future.result())

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=self._loop.run_forever, name="asyncjobs-event-loop", daemon=True
            )
            self._loop_thread.start()
        return self._loop

    def _stop_event_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        async def cancel_abandoned() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Async jobs reach the ORM through sync_to_async's shared thread: close the
            # connection they opened there, or it outlives the worker's use of the database.
            await sync_to_async(connections.close_all)()

        try:
            asyncio.run_coroutine_threadsafe(cancel_abandoned(), loop).result(timeout=5)
        except Exception:  # a coroutine that ignores cancellation must not block the exit
            logger.warning("async jobs did not stop when cancelled")
        loop.call_soon_threadsafe(loop.stop)
        if self._loop_thread is not None:
            self._loop_thread.join(5)
        if not loop.is_running():
            loop.close()

    # -- sync jobs -------------------------------------------------------------------------------

    def _submit_sync(self, entry: Running) -> None:
        """Run a sync job on an idle job thread, or on a new one when none is idle.

        Threads are reused (starting one per job cost more than a no-op job), and never capped:
        a thread stuck past its job's timeout is abandoned, and the next job gets a fresh one.
        """
        with self._lock:
            idle = self._idle > 0
            if idle:
                self._idle -= 1
        if idle:
            self._handoff.put(entry)
        else:
            threading.Thread(
                target=self._sync_thread, args=(entry,), name="asyncjobs-job", daemon=True
            ).start()

    def _sync_thread(self, first: Running) -> None:
        entry: Running | None = first
        try:
            while entry is not None:
                # A fresh context per job: what one job activates (a translation, a time zone, a
                # context variable) must not leak into the next job on this thread.
                reusable = contextvars.Context().run(self._run_sync, entry)
                with self._lock:
                    if self._closed or not reusable:
                        return
                    self._idle += 1
                entry = self._handoff.get()
        finally:
            # Connections CONN_MAX_AGE kept open between jobs end with their thread.
            connections.close_all()

    def _run_sync(self, entry: Running) -> bool:
        """Run one sync job; return whether its thread can run another.

        The job's own database connections are handled as Django handles a request's: they are
        checked before and after it with ``close_old_connections()``, so ``CONN_MAX_AGE`` and
        ``CONN_HEALTH_CHECKS`` mean for job code what they mean for views. With the default
        ``CONN_MAX_AGE = 0`` a job's connection is closed when it ends; a broken one always is.
        """
        close_old_connections()
        try:
            outcome = execution.run_sync(
                entry.definition,
                entry.job.args,
                entry.job.kwargs,
                context=JobContext.for_job(entry.job, cancel=entry.cancel),
                trace=entry.trace,
            )
        finally:
            # A job that left an atomic block open spoils this thread's connection handlers
            # for good: such a thread runs nothing more. Others start the next job afresh.
            reusable = not any(c.in_atomic_block for c in connections.all(initialized_only=True))
            if reusable:
                close_old_connections()
            else:
                connections.close_all()
        self._completed(entry, outcome)
        return reusable
