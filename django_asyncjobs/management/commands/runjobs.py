"""``manage.py runjobs``: a scheduler and a worker in one command, for development."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import connections
from django.utils import autoreload

from ...conf import get_settings
from ...transports import get_transport
from ._logformat import add_log_format_option, apply_log_format
from ._metrics import add_metrics_arguments, require_metrics
from ._options import (
    AsyncJobsCommand,
    non_negative_float,
    positive_float,
    positive_int,
    queue_specs,
    refuse_memory_transport,
)
from ._startup import check_database, check_transport, startup_line

#: How often the parent looks at its two children.
_POLL_SECONDS = 0.2


class Command(AsyncJobsCommand):
    help = (
        "Development: run `runscheduler` and `runworker` together, as two child processes with "
        "their output interleaved. Ctrl+C (or SIGTERM) stops both gracefully; a second one stops "
        "them at once. If either exits, the other is stopped. When a Python file of the project "
        "changes, both are restarted, as runserver restarts itself (--noreload: not). In "
        "production run the two commands as separate services instead.\n\n"
        "Examples:\n  manage.py runjobs\n  manage.py runjobs --queues high,default --concurrency 4"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queues",
            type=queue_specs,
            default=None,
            help="Worker queues, comma-separated, highest priority first (as runworker).",
        )
        parser.add_argument(
            "--concurrency", type=positive_int, default=None, help="As runworker (default 1)."
        )
        parser.add_argument(
            "--processes", type=positive_int, default=None, help="As runworker (default 1)."
        )
        parser.add_argument(
            "--grace",
            type=non_negative_float,
            default=None,
            metavar="SECONDS",
            help="As runworker (default 30).",
        )
        parser.add_argument(
            "--interval",
            type=positive_float,
            default=None,
            help="Scheduler poll interval in seconds, as runscheduler.",
        )
        parser.add_argument(
            "--noreload",
            action="store_false",
            dest="use_reloader",
            help="Do not restart the scheduler and the worker when a Python file changes.",
        )
        add_log_format_option(parser)
        add_metrics_arguments(
            parser,
            port_help="Serve Prometheus metrics: runworker's at http://HOST:PORT/metrics, "
            "runscheduler's at PORT+1 (0: each on a free port, in its start-up line).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The children check all this too; checked here first, a mistake is reported once, not
        # by each child. (Their warnings, such as other apps' migrations, are theirs to give.)
        apply_log_format(self, "runjobs", options["log_format"])
        refuse_memory_transport("runjobs")
        require_metrics("runjobs", options)
        using = check_database("runjobs", stderr=self.stderr.write, warn_other_apps=False)
        connections[using].close()  # the children have their own
        transport = get_transport()
        try:
            check_transport("runjobs", transport, queues=options["queues"] or get_settings().queues)
        finally:
            transport.close()
        worker_args = ["runworker"]
        for option in ("concurrency", "processes", "grace"):
            if options[option] is not None:
                worker_args += [f"--{option}", str(options[option])]
        if options["queues"]:
            worker_args += ["--queues", ",".join(options["queues"])]
        scheduler_args = ["runscheduler"]
        if options["log_format"] != "text":
            worker_args += ["--log-format", options["log_format"]]
            scheduler_args += ["--log-format", options["log_format"]]
        if options["interval"] is not None:
            scheduler_args += ["--interval", str(options["interval"])]
        port = options["metrics_port"]
        if port == 65535:
            raise CommandError("runjobs: --metrics-port 65535 leaves no port for the scheduler")
        if port is not None:
            # Two servers: the worker's on the port, the scheduler's on the next one.
            host = ["--metrics-host", options["metrics_host"]]
            worker_args += ["--metrics-port", str(port), *host]
            scheduler_args += ["--metrics-port", str(port + 1 if port else 0), *host]

        changes = FileChanges() if options["use_reloader"] else None

        def started(pids: list[int]) -> None:
            details = [f"runscheduler pid {pids[0]}", f"runworker pid {pids[1]}"]
            if changes is not None:
                details.append("restarting both when a Python file changes")
            self.stdout.write(startup_line("runjobs", *details))
            self.stdout.flush()

        code = run_together(
            [scheduler_args, worker_args],
            stderr=self.stderr.write,
            on_started=started,
            changes=changes,
        )
        if code:
            raise SystemExit(code)


def _django_command(arguments: list[str]) -> tuple[list[str], dict[str, str]]:
    """Return the argv and environment that run ``django-admin <arguments>`` like this process.

    ``python -m django`` with this process's ``sys.path`` and settings works whether we were
    started by manage.py, django-admin or call_command.
    """
    env = dict(os.environ)
    paths = [os.path.abspath(p or os.curdir) for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    from django.conf import settings

    env.setdefault("DJANGO_SETTINGS_MODULE", settings.SETTINGS_MODULE)
    return [sys.executable, "-m", "django", *arguments], env


class FileChanges:
    """The Python files this process imported (the project's settings, models and jobs among
    them), watched by Django's autoreloader as ``runserver`` watches them, in a thread.

    The children import the same code; when it changes, :func:`run_together` restarts them.

    Example::

        changes = FileChanges()
        ...
        changed = changes.pop()  # a path, or None
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed: Path | None = None
        self._reloader = autoreload.StatReloader()
        # Answering the signal keeps the reloader from exiting this process (its reload).
        autoreload.file_changed.connect(self._on_change, weak=False)
        threading.Thread(target=self._watch, name="runjobs-reloader", daemon=True).start()

    def pop(self) -> Path | None:
        """Return the last file that changed since the last call, if any."""
        with self._lock:
            changed, self._changed = self._changed, None
        return changed

    def _on_change(self, sender: Any, file_path: Path, **kwargs: Any) -> bool:
        if sender is not self._reloader:
            return False
        with self._lock:
            self._changed = file_path
        return True

    def _watch(self) -> None:
        for _ in self._reloader.tick():  # each tick looks at every file, then sleeps a second
            pass


def run_together(
    commands: list[list[str]],
    *,
    stderr: Any = print,
    on_started: Callable[[list[int]], None] | None = None,
    changes: FileChanges | None = None,
) -> int:
    """Run the management *commands* as child processes until one exits or we are signalled.

    Each SIGINT/SIGTERM we receive is forwarded once to every child as SIGTERM (the children
    run in their own session, so a terminal's Ctrl+C does not reach them twice): the first
    stops them gracefully, the second at once. Returns the first non-zero exit status, else 0.
    *on_started* receives the children's pids, in the order of *commands*, each time they start.

    With *changes*, a changed file stops the children gracefully and starts them again; and
    when one exits by itself (say, on a syntax error just saved), the others are stopped and
    all start again at the next change, as ``runserver`` waits for a fix.

    Example::

        run_together([["runscheduler"], ["runworker"]])
    """
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    children: list[subprocess.Popen[bytes]] = []
    handled = 0  # of the signals received
    try:
        while True:
            children[:] = []
            for arguments in commands:
                argv, env = _django_command(arguments)
                children.append(subprocess.Popen(argv, env=env, start_new_session=True))
            if on_started is not None:
                on_started([child.pid for child in children])
            terminations = 0  # sent to these children
            asked = 0  # signals received while these children ran
            why = ""  # they are being stopped: "signal", "change" or "exit"
            while any(child.poll() is None for child in children):
                changed = changes.pop() if changes is not None and not why else None
                if handled < len(received):
                    asked += len(received) - handled
                    handled = len(received)
                    at_once = asked > 1
                    how = "at once" if at_once else "gracefully"
                    stderr(f"{signal.Signals(received[-1]).name} received; stopping {how}.")
                    why = "signal"
                    # Children already stopping gracefully (for a change, or because one
                    # exited) are doing what a first signal asks: a second SIGTERM would tell
                    # them to stop at once.
                    if at_once or not terminations:
                        terminations += 1
                        _terminate(children)
                elif changed is not None:
                    stderr(f"{changed} changed; restarting.")
                    terminations, why = 1, "change"
                    _terminate(children)
                elif not why and any(child.poll() is not None for child in children):
                    stderr("a child process exited; stopping the other.")
                    terminations, why = 1, "exit"
                    _terminate(children)
                time.sleep(_POLL_SECONDS)
            if why == "change" and handled == len(received):
                continue
            if why in ("exit", "") and changes is not None and handled == len(received):
                stderr("waiting for a Python file to change to start them again.")
                if _wait_for_change(changes, received, handled, stderr):
                    continue
            break
    finally:
        for child in children:
            if child.poll() is None:  # we are leaving on an exception: leave no orphan
                child.kill()
                child.wait()
        for sig, old in previous.items():
            signal.signal(sig, old)
    # A child ended by a signal reports -N; report it the way a shell would. A child that
    # ended on the SIGTERM this process sent it, because it was asked to stop, stopped as asked
    # (one that had just started again may not have its own handler yet).
    codes = [
        0 if why == "signal" and code == -signal.SIGTERM else (code if code >= 0 else 128 - code)
        for code in (c.returncode for c in children)
    ]
    return next((code for code in codes if code), 0)


def _wait_for_change(changes: FileChanges, received: list[int], handled: int, stderr: Any) -> bool:
    """Wait until a file changes (True) or a signal arrives (False)."""
    while len(received) == handled:
        changed = changes.pop()
        if changed is not None:
            stderr(f"{changed} changed; starting again.")
            return True
        time.sleep(_POLL_SECONDS)
    return False


def _terminate(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
