"""Run ``manage.py runscheduler`` and ``runworker`` as real subprocesses in tests.

The processes talk to the same PostgreSQL test database and the same SQS endpoint as the test
that starts them, under the test's own queue prefix, so a process-level test sees exactly what a
user would: rows changing status and messages coming and going. Each process writes its stdout and
stderr to a log file, which failing assertions and the fixture's teardown show.

    with ProcessGroup(env=subprocess_env(queue_prefix=prefix), log_dir=tmp_path) as group:
        worker = group.start("runworker", "--wait", "1")
        ...
        assert worker.stop() == 0
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MODULE = "tests.settings"
#: How much of a process's output an assertion message shows (the end is kept).
OUTPUT_TAIL_CHARS = 8_000

T = TypeVar("T")


class ProcessTimeout(AssertionError):
    """A subprocess did not exit, or did not print what was expected, in time."""


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.05,
) -> T:
    """Call *predicate* until it returns something truthy and return that; fail after *timeout*.

    *message* (or what it returns, computed only on failure so it can include fresh process
    output) explains what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"waited {timeout:g}s in vain: {text}")
        time.sleep(interval)


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """Return a ``postgres://`` URL for a Django ``DATABASES`` entry, in the form tests/settings
    reads from ``DATABASE_URL``.

    During a test, ``django.db.connection.settings_dict["NAME"]`` is the test database's name,
    which is what a subprocess must connect to.
    """
    user = quote(str(settings_dict.get("USER") or ""), safe="")
    password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(settings_dict.get("HOST") or "127.0.0.1")
    port = str(settings_dict.get("PORT") or "")
    name = quote(str(settings_dict["NAME"]), safe="")
    return f"postgres://{credentials}{host}{':' + port if port else ''}/{name}"


@contextlib.contextmanager
def private_database(stem: str) -> Iterator[dict[str, Any]]:
    """Create an empty database named ``<stem>_<random>`` next to the test database; yield
    its ``DATABASES`` entry (for :func:`subprocess_env`); drop it afterwards.

    For processes that must see a database of their own: another project's, or one in a state
    the shared test database must never be in (migrations missing).
    """
    import psycopg
    from django.db import connection

    name = f"{stem}_{uuid.uuid4().hex[:10]}"
    server = database_url({**connection.settings_dict, "NAME": "postgres"})
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {**connection.settings_dict, "NAME": name}
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def subprocess_env(
    *, queue_prefix: str, settings_dict: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Return the environment of a subprocess that shares this test's database and queues.

    The test process's environment is the base (PATH, and the AWS_* variables that point boto3 at
    moto_server with dummy credentials); Django and asyncjobs variables are replaced, so nothing
    from the developer's shell can point the subprocess elsewhere.
    """
    if settings_dict is None:
        from django.db import connection

        settings_dict = connection.settings_dict
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "ASYNCJOBS_")) and key != "DATABASE_URL"
    }
    env.update(
        DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
        DATABASE_URL=database_url(settings_dict),
        ASYNCJOBS_QUEUE_PREFIX=queue_prefix,
        # Log lines must reach the file as they happen, not when the process exits.
        PYTHONUNBUFFERED="1",
    )
    return env


def _tail(text: str, limit: int = OUTPUT_TAIL_CHARS) -> str:
    return (
        text
        if len(text) <= limit
        else f"... [{len(text) - limit:,} characters cut]\n" + text[-limit:]
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class ManagedProcess:
    """One ``python -m django <command>`` subprocess in a session of its own.

    Its own session (process group) means signals sent by the test reach it alone, and a
    terminal's Ctrl-C does not.
    """

    def __init__(
        self,
        command: str,
        args: tuple[str, ...],
        *,
        env: Mapping[str, str],
        log_path: Path,
        stderr_apart: bool = False,
    ) -> None:
        self.command = command
        self.args = args
        self.log_path = log_path
        #: Where stderr goes with *stderr_apart*; otherwise it shares the log with stdout.
        self.stderr_path = log_path.with_suffix(".stderr.log") if stderr_apart else None
        self.started_at = time.monotonic()
        with contextlib.ExitStack() as files:
            # The child keeps its own copies of the descriptors.
            log = files.enter_context(open(log_path, "wb"))
            errors = (
                files.enter_context(open(self.stderr_path, "wb"))
                if self.stderr_path
                else subprocess.STDOUT
            )
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "django", command, *args],
                cwd=REPO_ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=errors,
                start_new_session=True,
            )

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"exit {self.returncode}"
        return f"<{self.command} {' '.join(self.args)} pid={self.pid} {state}>"

    @property
    def pid(self) -> int:
        """Return the process id (also its process group id)."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Return the exit code (negative: killed by that signal), or ``None`` while running."""
        return self._popen.poll()

    def output(self) -> str:
        """Return everything the process wrote to stdout and stderr so far.

        With stderr apart, stdout comes first, then stderr.
        """
        return self.stdout() + self.stderr()

    def stdout(self) -> str:
        """Return what the process wrote to stdout (and stderr, unless kept apart) so far."""
        return _read(self.log_path)

    def stderr(self) -> str:
        """Return what the process wrote to stderr so far, if kept apart; else ``""``."""
        return _read(self.stderr_path) if self.stderr_path else ""

    def describe(self) -> str:
        """Return the command, its state and the end of its output, for assertion messages."""
        return f"{self!r} output:\n{_tail(self.output())}"

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and return its exit code; it is left running on timeout."""
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ProcessTimeout(
                f"{self.command} did not exit within {timeout:g}s\n{self.describe()}"
            ) from None

    def send_signal(self, sig: signal.Signals) -> None:
        """Send *sig* to the process group; a process that already exited is ignored."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send *sig* (graceful stop by default) and return the exit code.

        A process still running after *timeout* is killed and :class:`ProcessTimeout` raised, so
        a hanging shutdown fails the test instead of hanging it.
        """
        self.send_signal(sig)
        try:
            return self.wait(timeout)
        except ProcessTimeout as exc:
            self.kill()
            raise ProcessTimeout(f"{exc}\n(killed after ignoring {sig.name})") from None

    def kill(self) -> int:
        """Kill the process group with SIGKILL and return the exit code."""
        self.send_signal(signal.SIGKILL)
        return self._popen.wait()

    def wait_for_output(self, pattern: str, *, timeout: float = 30.0) -> re.Match[str]:
        """Wait until the output matches the regular expression *pattern*; return the match.

        Fails at once if the process exits without printing it.
        """
        compiled = re.compile(pattern)

        def found() -> re.Match[str] | None:
            match = compiled.search(self.output())
            if match is None and self.returncode is not None:
                raise AssertionError(
                    f"{self.command} exited before printing {pattern!r}\n{self.describe()}"
                )
            return match

        return wait_until(
            found,
            timeout=timeout,
            message=lambda: f"{self.command} never printed {pattern!r}\n{self.describe()}",
        )


class ProcessGroup:
    """Start management commands as subprocesses, and stop every one of them on :meth:`close`."""

    def __init__(self, *, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.started: list[ManagedProcess] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(
        self,
        command: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        stderr_apart: bool = False,
    ) -> ManagedProcess:
        """Start ``python -m django <command> <args>`` and return it without waiting.

        *env* replaces the group's environment for this process; with *stderr_apart* its
        stderr is kept apart from its stdout (:meth:`ManagedProcess.stderr`).
        """
        log_path = self.log_dir / f"{len(self.started) + 1:02d}-{command}.log"
        process = ManagedProcess(
            command,
            args,
            env=self.env if env is None else env,
            log_path=log_path,
            stderr_apart=stderr_apart,
        )
        self.started.append(process)
        return process

    def run(
        self,
        command: str,
        *args: str,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        stderr_apart: bool = False,
    ) -> ManagedProcess:
        """Start a command that exits by itself (``--once``, ``--burst``) and wait for it."""
        process = self.start(command, *args, env=env, stderr_apart=stderr_apart)
        try:
            process.wait(timeout)
        except ProcessTimeout:
            process.kill()
            raise
        return process

    def close(self, timeout: float = 15.0) -> list[str]:
        """Stop every process still running, gracefully first; return what went wrong.

        Never raises: it runs in teardown, also after a failed test, and must not hide that
        failure. A process that ignores SIGTERM for *timeout* seconds is killed.
        """
        problems: list[str] = []
        running = [p for p in self.started if p.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except ProcessTimeout:
                process.kill()
                problems.append(f"{process!r} ignored SIGTERM for {timeout:g}s and was killed")
        return problems

    def report(self) -> str:
        """Return the output of every process started, for a failing test's report."""
        return "\n\n".join(f"===== {p.describe()}" for p in self.started)
