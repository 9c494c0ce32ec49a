"""``manage.py runjobs``: a scheduler and a worker in one command, for development."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.core.management.base import CommandParser
from django.db import connections

from ...conf import get_settings
from ...transports import get_transport
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
        "them at once. If either exits, the other is stopped. In production run the two "
        "commands as separate services instead.\n\n"
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

    def handle(self, *args: Any, **options: Any) -> None:
        # The children check all this too; checked here first, a mistake is reported once, not
        # by each child. (Their warnings, such as other apps' migrations, are theirs to give.)
        refuse_memory_transport("runjobs")
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
        if options["interval"] is not None:
            scheduler_args += ["--interval", str(options["interval"])]

        def started(pids: list[int]) -> None:
            self.stdout.write(
                startup_line("runjobs", f"runscheduler pid {pids[0]}", f"runworker pid {pids[1]}")
            )
            self.stdout.flush()

        code = run_together(
            [scheduler_args, worker_args], stderr=self.stderr.write, on_started=started
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


def run_together(
    commands: list[list[str]],
    *,
    stderr: Any = print,
    on_started: Callable[[list[int]], None] | None = None,
) -> int:
    """Run the management *commands* as child processes until one exits or we are signalled.

    Each SIGINT/SIGTERM we receive is forwarded once to every child as SIGTERM (the children
    run in their own session, so a terminal's Ctrl+C does not reach them twice): the first
    stops them gracefully, the second at once. Returns the first non-zero exit status, else 0.
    *on_started* receives the children's pids, in the order of *commands*, once all started.

    Example::

        run_together([["runscheduler"], ["runworker"]])
    """
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    children: list[subprocess.Popen[bytes]] = []
    forwarded = 0
    try:
        for arguments in commands:
            argv, env = _django_command(arguments)
            children.append(subprocess.Popen(argv, env=env, start_new_session=True))
        if on_started is not None:
            on_started([child.pid for child in children])
        while any(child.poll() is None for child in children):
            if forwarded < len(received):
                forwarded = len(received)
                how = "gracefully" if forwarded == 1 else "at once"
                stderr(f"{signal.Signals(received[-1]).name} received; stopping {how}.")
                _terminate(children)
            elif not received and any(child.poll() is not None for child in children):
                stderr("a child process exited; stopping the other.")
                received.append(signal.SIGTERM)
                forwarded = 1
                _terminate(children)
            time.sleep(_POLL_SECONDS)
    finally:
        for child in children:
            if child.poll() is None:  # we are leaving on an exception: leave no orphan
                child.kill()
                child.wait()
        for sig, old in previous.items():
            signal.signal(sig, old)
    # A child ended by a signal reports -N; report it the way a shell would.
    codes = [code if code >= 0 else 128 - code for code in (c.returncode for c in children)]
    return next((code for code in codes if code), 0)


def _terminate(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
