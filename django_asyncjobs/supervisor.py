"""Run worker processes under supervision: ``runworker --processes P``.

The supervisor forks P worker processes and does no job work itself. It replaces a process that
dies (recording the attempt that process was running), ends a process whose job outlives its
timeout and does not stop (the only way to stop a thread stuck in a blocking call or a C call),
and forwards SIGTERM/SIGINT so that the workers stop gracefully and it exits 0 after them.

What it knows about its workers' jobs it reads from the database: a job row names the worker
(``host:pid``) that runs it, its lease, its start time and its timeout, by the database's clock.
Whether a worker process is alive it learns locally: the process's heartbeat thread stamps a
shared timestamp, so a database outage never makes a healthy process look dead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, NoReturn

from django.db import DatabaseError, connections

from . import retry, tracing
from .conf import get_settings
from .db import close_if_unusable, retry_on_lost_connection
from .logs import job_fields
from .models import Job
from .registry import registry
from .worker import EXIT_RECYCLE, EXIT_UNFINISHED, Worker, default_worker_id

logger = logging.getLogger(__name__)

#: How often the supervisor looks for overdue or silent jobs of its workers.
WATCHDOG_INTERVAL_SECONDS = 1.0
#: A worker process handles its own timeouts; the supervisor steps in only this much later.
HARD_TIMEOUT_SLACK_SECONDS = 5.0
#: After the grace period, workers get this long to hand their jobs back before SIGKILL.
HAND_BACK_SECONDS = 10.0
#: A process that dies sooner than this after its start is restarted with growing delays.
CRASH_LOOP_SECONDS = 10.0
MAX_RESTART_DELAY_SECONDS = 30.0
#: Sent to worker processes on the second stop request: hand running jobs back now.
STOP_NOW_SIGNAL = signal.SIGUSR1


#: What ``runworker`` passes: build the Worker of a new process from its id and liveness hook.
MakeWorker = Callable[[str, Callable[[], None]], Worker]
_CHILD_SIGNALS = {signal.SIGTERM, signal.SIGUSR1}


@dataclass(slots=True, kw_only=True)
class _Child:
    process: multiprocessing.process.BaseProcess
    worker_id: str
    started: float
    #: Monotonic time of the process's last sign of life, in memory shared with it.
    alive: Any
    #: Why the supervisor killed it, per job id, when it did.
    kill_reasons: dict[uuid.UUID, str] = field(default_factory=dict)


class Supervisor:
    """Keep *processes* worker processes running until stopped.

    Example::

        supervisor = Supervisor(processes=2, make_worker=lambda worker_id: Worker(...))
        supervisor.run()        # returns 0 after stop() and the workers' graceful exit

    *make_worker* runs in each new process and receives that process's worker id and a
    liveness hook to pass to the :class:`Worker` (``on_alive``). *on_started* is called once in
    the supervisor, with the pids of the first worker processes, once they are forked. With
    *respawn* false (``--burst``, ``--max-jobs``), a process that exits normally is not
    replaced and :meth:`run` returns once all have.
    """

    def __init__(
        self,
        *,
        processes: int,
        make_worker: MakeWorker,
        grace_seconds: float = 30.0,
        respawn: bool = True,
        worker_id_base: str | None = None,
        on_started: Callable[[list[int]], None] | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be 1 or more, not {processes}")
        conf = get_settings()
        self.processes = processes
        self.make_worker = make_worker
        self.grace_seconds = grace_seconds
        self.respawn = respawn
        self.worker_id_base = worker_id_base
        #: Called once, with the pids of the first worker processes, when they are forked.
        self.on_started = on_started
        # Kill a wedged process (one whose heartbeat thread cannot run: a C call holding the GIL)
        # before the scheduler would rescue its job, so that the job never runs twice at once.
        self.silent_after_seconds = conf.stale_after_seconds * 2 / 3
        self.free_interruptions = conf.free_interruptions
        self._context = multiprocessing.get_context("fork")
        self._children: dict[int, _Child] = {}
        self._signals: list[int] = []
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._stop_deadline: float | None = None
        self._restart_delay = 0.0
        self._restart_at = 0.0
        self._last_watchdog = time.monotonic()
        #: Processes that exited and, without respawn, are not replaced.
        self._finished = 0
        self._crashed = False
        #: A burst worker gave up with jobs of its queues still queued (EXIT_UNFINISHED).
        self._unfinished = False

    # -- lifecycle -------------------------------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a graceful stop (a second call: stop at once). Signal-handler safe."""
        self._signals.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"s")

    def run(self) -> int:
        """Supervise until stopped (or, without respawn, until every worker has exited)."""
        logger.info("supervisor started pid=%d processes=%d", os.getpid(), self.processes)
        handled = 0
        try:
            while True:
                while handled < len(self._signals):
                    handled += 1
                    self._on_stop_request(handled)
                if self._stop_deadline is None:
                    self._fill()
                    if self.on_started is not None and self._children:
                        self.on_started(sorted(self._children))
                        self.on_started = None
                finished = self._stop_deadline is not None or self._finished >= self.processes
                if not self._children and finished:
                    if self._crashed and not self.respawn:
                        return 1
                    return EXIT_UNFINISHED if self._unfinished else 0
                self._wait()
                self._reap()
                if self._stop_deadline is None:
                    self._watchdog()
                elif time.monotonic() >= self._stop_deadline:
                    self._kill_all("did not stop in time")
        finally:
            os.close(self._wake_read)
            os.close(self._wake_write)
            logger.info("supervisor stopped pid=%d", os.getpid())

    def _on_stop_request(self, count: int) -> None:
        now = time.monotonic()
        name = signal.Signals(self._signals[count - 1]).name
        if count == 1 and self._stop_deadline is None:
            logger.warning(
                "%s received; running jobs may finish within %g s, then are handed back "
                "(send it again to hand them back at once)",
                name,
                self.grace_seconds,
            )
            self._stop_deadline = now + self.grace_seconds + HAND_BACK_SECONDS
        else:
            logger.warning("%s received again; handing running jobs back now", name)
            deadline = now + HAND_BACK_SECONDS
            self._stop_deadline = min(deadline, self._stop_deadline or deadline)
        # systemd (KillMode=control-group) and `kill -- -PGID` signal the workers directly too;
        # SIGTERM is therefore idempotent in a worker, and "at once" is a signal of its own.
        forward = signal.SIGTERM if count == 1 else STOP_NOW_SIGNAL
        for child in self._children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid or 0, forward)

    def _fill(self) -> None:
        wanted = self.processes - self._finished
        if len(self._children) >= wanted or time.monotonic() < self._restart_at:
            return
        # Children must not inherit the parent's database sockets.
        connections.close_all()
        while len(self._children) < wanted:
            self._spawn()

    def _spawn(self) -> None:
        alive = self._context.Value("d", time.monotonic(), lock=False)
        process = self._context.Process(
            target=_child_main,
            args=(
                self.make_worker,
                os.getpid(),
                self.worker_id_base,
                (self._wake_read, self._wake_write),
                alive,
            ),
            name="asyncjobs-worker",
            daemon=False,
        )
        # A stop signal arriving between fork and the child's own handlers must wait for them,
        # not run the supervisor's inherited handler (or SIGUSR1's default: death) in the child.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _CHILD_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        assert process.pid is not None
        child = _Child(
            process=process,
            worker_id=default_worker_id(pid=process.pid, base=self.worker_id_base),
            started=time.monotonic(),
            alive=alive,
        )
        self._children[process.pid] = child
        logger.info("worker process started pid=%d worker_id=%s", process.pid, child.worker_id)

    def _wait(self) -> None:
        sentinels: list[Any] = [c.process.sentinel for c in self._children.values()]
        timeout = WATCHDOG_INTERVAL_SECONDS
        if self._restart_at > time.monotonic():
            timeout = min(timeout, self._restart_at - time.monotonic())
        ready = multiprocessing.connection.wait([self._wake_read, *sentinels], timeout)
        if self._wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 1024)

    # -- children that ended ---------------------------------------------------------------------

    def _reap(self) -> None:
        for pid, child in list(self._children.items()):
            if child.process.is_alive():
                continue
            child.process.join()
            del self._children[pid]
            code = child.process.exitcode
            how = _describe_exit(code)
            lived = time.monotonic() - child.started
            stopping = self._stop_deadline is not None
            if code == 0 or code == EXIT_RECYCLE:
                logger.info("worker process exited pid=%d %s", pid, how)
                self._restart_delay = 0.0
            elif code == EXIT_UNFINISHED:
                # The burst worker said why (jobs queued, their messages never came).
                logger.warning("burst worker process left jobs queued pid=%d", pid)
                self._unfinished = True
            else:
                logger.error("worker process died pid=%d %s lived=%.1fs", pid, how, lived)
                if lived < CRASH_LOOP_SECONDS:
                    self._restart_delay = min(
                        MAX_RESTART_DELAY_SECONDS, max(1.0, self._restart_delay * 2)
                    )
                    self._restart_at = time.monotonic() + self._restart_delay
            self._record_leftovers(child, how=how, interrupted=stopping or code == EXIT_RECYCLE)
            if not self.respawn:
                self._finished += 1
                self._crashed = self._crashed or code not in (0, EXIT_RECYCLE, EXIT_UNFINISHED)

    def _record_leftovers(self, child: _Child, *, how: str, interrupted: bool) -> None:
        """Record the attempts a dead worker process left ``running``.

        A job past its timeout failed by timing out; with *interrupted* (a stop, or a process
        that retired) the others are handed back; otherwise their worker was lost.
        """
        try:
            jobs = retry_on_lost_connection(
                lambda: list(Job.objects.filter(status="running", worker=child.worker_id)),
                using=Job.objects.db,
            )
            if not jobs:
                return
            now = Job.objects.database_now()
            for job in jobs:
                timed_out = (
                    job.timeout is not None
                    and job.started_at is not None
                    and (now - job.started_at).total_seconds() >= job.timeout
                )
                self._record_leftover(
                    child, job, how=how, interrupted=interrupted, timed_out=timed_out
                )
        except DatabaseError as exc:
            # The scheduler rescues these jobs once their heartbeat is stale.
            logger.error("cannot record the jobs of worker_id=%s error=%s", child.worker_id, exc)
            close_if_unusable(Job.objects.db, after_error=True)

    def _record_leftover(
        self, child: _Child, job: Job, *, how: str, interrupted: bool, timed_out: bool
    ) -> None:
        assert job.lease_token is not None
        # The row carries the policy (max_retries, at_most_once); only the backoff comes from
        # the code, when this process knows the job's name.
        definition = registry.get(job.name) if job.name in registry.names() else None
        if interrupted and not timed_out and not child.kill_reasons:
            back = Job.objects.end_attempt(
                job=job,
                lease_token=job.lease_token,
                decide=functools.partial(
                    retry.decide,
                    ending=retry.Ending.INTERRUPTED,
                    free_interruptions=self.free_interruptions,
                ),
                error=f"interrupted: worker {child.worker_id} stopped ({how}) "
                f"during attempt {job.total_attempts}",
            )
            if back is not None:
                logger.warning(
                    "job handed back name=%s id=%s attempt=%d status=%s",
                    job.name,
                    job.id,
                    job.total_attempts,
                    back.status,
                    extra=job_fields(job),
                )
            return
        if timed_out:
            # A timeout follows the retry policy, as when the worker records it itself.
            error = f"JobTimeout: timed out after {job.timeout:g} s"
            ending = retry.Ending.FAILED
        else:
            reason = child.kill_reasons.get(job.id) or next(iter(child.kill_reasons.values()), how)
            error = (
                f"WorkerLost: worker process {child.worker_id} {reason} "
                f"during attempt {job.total_attempts}"
            )
            ending = retry.Ending.LOST
        stored = Job.objects.end_attempt(
            job=job,
            lease_token=job.lease_token,
            decide=functools.partial(
                retry.decide,
                ending=ending,
                backoff=definition.resolve_backoff() if definition else None,
            ),
            error=error,
        )
        if stored is not None:
            logger.warning(
                "job attempt ended with its worker process name=%s id=%s attempt=%d status=%s "
                "error=%s",
                job.name,
                job.id,
                job.total_attempts,
                stored.status,
                error,
                extra=job_fields(job),
            )

    # -- hard timeouts and wedged processes ------------------------------------------------------

    def _watchdog(self) -> None:
        now = time.monotonic()
        last, self._last_watchdog = self._last_watchdog, now
        if not self._children:
            return
        if now - last > 3 * WATCHDOG_INTERVAL_SECONDS:
            # We were paused ourselves (SIGSTOP of the process group, a suspended VM): so were
            # our workers, most likely. Give them a round to report before judging them.
            return
        for child in self._children.values():
            silent = now - child.alive.value
            if silent > self.silent_after_seconds and not child.kill_reasons:
                self._kill(child, key=None, reason=f"stopped responding for {silent:.0f} s")
        by_worker = {c.worker_id: c for c in self._children.values()}
        try:
            overdue = retry_on_lost_connection(
                lambda: Job.objects.overdue(
                    workers=list(by_worker), timeout_slack_seconds=HARD_TIMEOUT_SLACK_SECONDS
                ),
                using=Job.objects.db,
            )
        except DatabaseError as exc:
            logger.error("supervisor cannot read its workers' jobs error=%s", exc)
            close_if_unusable(Job.objects.db, after_error=True)
            return
        for problem in overdue:
            child = by_worker[problem.worker]
            if not child.kill_reasons:
                self._kill(child, key=problem.job_id, reason="outlived its job's timeout")

    def _kill(self, child: _Child, *, key: uuid.UUID | None, reason: str) -> None:
        logger.error(
            "killing worker process pid=%s worker_id=%s job_id=%s reason=%s",
            child.process.pid,
            child.worker_id,
            key,
            reason,
            extra={"job_id": str(key)} if key is not None else None,
        )
        child.kill_reasons[key or uuid.UUID(int=0)] = reason
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.process.pid or 0, signal.SIGKILL)

    def _kill_all(self, why: str) -> None:
        for child in self._children.values():
            if child.process.is_alive():
                logger.error("killing worker process pid=%s reason=%s", child.process.pid, why)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid or 0, signal.SIGKILL)
        self._stop_deadline = time.monotonic() + WATCHDOG_INTERVAL_SECONDS


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


@contextlib.contextmanager
def supervisor_signals(supervisor: Supervisor) -> Iterator[None]:
    """Route SIGTERM/SIGINT to *supervisor* while it runs; restore the old handlers after."""

    def handler(signum: int, frame: FrameType | None) -> None:
        supervisor.request_stop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _child_main(
    make_worker: MakeWorker,
    parent_pid: int,
    worker_id_base: str | None,
    inherited_fds: tuple[int, ...],
    alive: Any,
) -> NoReturn:
    """Body of a worker process: run one Worker, then leave with its exit status."""
    code = 1
    try:
        for fd in inherited_fds:
            os.close(fd)
        # A terminal's Ctrl+C reaches the whole process group; the supervisor forwards it as
        # SIGTERM, so counting it here too would turn one Ctrl+C into "stop at once".
        signal.signal(signal.SIGINT, signal.SIG_IGN)

        def report_alive() -> None:
            alive.value = time.monotonic()

        worker = make_worker(default_worker_id(base=worker_id_base), report_alive)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # Attributes only: a handler that took a lock the main thread holds would deadlock.
            worker.request_stop(force=signum == STOP_NOW_SIGNAL)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(STOP_NOW_SIGNAL, on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _CHILD_SIGNALS)
        threading.Thread(
            target=_watch_parent,
            args=(parent_pid, worker),
            name="asyncjobs-watch-parent",
            daemon=True,
        ).start()
        try:
            worker.run()
        finally:
            worker.transport.close()
        code = worker.exit_code
    except BaseException:
        logger.exception("worker process failed pid=%d", os.getpid())
    finally:
        # os._exit skips atexit, where an OpenTelemetry SDK would export its last spans.
        tracing.flush()
        logging.shutdown()
    # os._exit: skip the parent's atexit handlers, and end threads stuck in blocking calls.
    os._exit(code)


def _watch_parent(parent_pid: int, worker: Worker) -> None:
    # An orphaned worker (its supervisor was SIGKILLed) hands its jobs back and leaves.
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    logger.error("supervisor is gone; stopping worker pid=%d", os.getpid())
    worker.request_stop(force=True)
