"""Start throwaway PostgreSQL and moto (fake AWS SQS) servers for the tests.

The test suite needs a real PostgreSQL server, including tests that crash and
restart it, and an SQS endpoint. Neither needs Docker: PostgreSQL runs from the
distribution's server binaries in a temporary directory, and SQS is served by
``moto_server``. (LocalStack, the second SQS endpoint, is a :class:`ServerProcess`
too: tests/localstack.py.)

Command line::

    python -m tests.services run -- python -m pytest -x

starts whatever the environment does not already provide (``DATABASE_URL``,
``AWS_ENDPOINT_URL_SQS``/``AWS_ENDPOINT_URL``), exports the URLs to the
command, and stops the servers again when the command exits.

Only the standard library is used so that this module works before the
project's dependencies are importable.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Literal, Self

__all__ = [
    "MotoServer",
    "PostgresServer",
    "ServerProcess",
    "ensure_services",
    "find_postgres_bindir",
    "free_port",
    "main",
    "stop_services",
]

ShutdownMode = Literal["smart", "fast", "immediate"]

# Server settings tuned for disposable test clusters. fsync and
# full_page_writes only protect against OS crashes, which a throwaway cluster
# need not survive, and fsync dominates run time on slow disks; a server
# crash (restart(mode="immediate")) still loses nothing.
# synchronous_commit stays on: with it off, commits acknowledged less than
# ~200 ms before an immediate shutdown vanish (the WAL writer never wrote
# them), which would break crash-recovery tests; with fsync off it is cheap.
_PG_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    # Tests run worker threads/processes that each hold connections.
    "max_connections": "200",
}

_START_ATTEMPTS = 3


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    Another process may grab it before the caller binds it, so callers retry
    on "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    # A zombie counts as dead: it is not our child (pg_ctl daemonizes the
    # postmaster), so only its new parent can reap it.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return False
    except OSError:
        pass
    else:
        return stat.rpartition(")")[2].split()[0] != "Z"
    # No /proc (e.g. macOS): probe with signal 0.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def find_postgres_bindir() -> Path:
    """Return the directory holding PostgreSQL's initdb and pg_ctl.

    Raises RuntimeError when no server binaries are installed.
    """
    # Debian ships only client wrappers in /usr/bin; the server binaries live
    # in a versioned directory that pg_config (from libpq-dev) points to.
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            if out and (Path(out) / "initdb").is_file():
                return Path(out)

    def version(bindir: str) -> tuple[int, ...]:
        name = Path(bindir).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates = [
        d
        for d in glob.glob("/usr/lib/postgresql/*/bin")
        if os.path.isfile(os.path.join(d, "initdb"))
    ]
    if candidates:
        return Path(max(candidates, key=version))

    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: "
        "install Debian's postgresql package (apt-get install postgresql) "
        "or set DATABASE_URL to an existing server"
    )


class PostgresServer:
    """Run a throwaway PostgreSQL cluster in a temporary directory.

    The cluster listens on 127.0.0.1 only, trusts every local connection and
    is deleted by ``stop()``. When running as root the server runs as the
    ``postgres`` system user, because PostgreSQL refuses to run as root.

    Example::

        with PostgresServer() as pg:
            print(pg.url)  # postgres://postgres@127.0.0.1:54321/postgres
            pg.restart(mode="immediate")  # simulate a crash; data survives
    """

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        """Prepare a server; ``settings`` are extra postgresql.conf lines.

        Values are written verbatim, so strings need their own quotes:
        ``{"log_statement": "'all'"}``.
        """
        self._settings = dict(settings or {})
        self._bindir: Path | None = None
        self._tmpdir: Path | None = None
        self._port: int | None = None
        self._running = False
        self._user: pwd.struct_passwd | None = None

    # -- public API ---------------------------------------------------------

    @property
    def port(self) -> int:
        """Return the TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError("PostgresServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """Return a libpq/dj-database-url URL for the ``postgres`` database."""
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def datadir(self) -> Path:
        """Return the cluster's data directory."""
        if self._tmpdir is None:
            raise RuntimeError("PostgresServer is not started")
        return self._tmpdir / "data"

    @property
    def logfile(self) -> Path:
        """Return the server log file."""
        if self._tmpdir is None:
            raise RuntimeError("PostgresServer is not started")
        return self._tmpdir / "postgres.log"

    @property
    def running(self) -> bool:
        """Return whether the server was started and not stopped since."""
        return self._running

    def start(self) -> Self:
        """Create the cluster and start the server; return ``self``."""
        if self._tmpdir is not None:
            raise RuntimeError("PostgresServer already started")
        self._bindir = find_postgres_bindir()
        try:
            self._create_cluster()
            for attempt in range(1, _START_ATTEMPTS + 1):
                self._port = free_port()
                self._write_settings({"port": str(self._port)})
                try:
                    self._pg_ctl_start()
                    break
                except RuntimeError as exc:
                    # The free port may have been taken between picking it
                    # and the server binding it; pick another one.
                    if attempt == _START_ATTEMPTS or "already in use" not in str(exc):
                        raise
        except BaseException:
            # Clean up without masking the reason start() failed.
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Stop the server and delete the cluster; do nothing if stopped."""
        if self._tmpdir is None:
            return
        try:
            # Also when not marked running: an interrupted start() may have
            # left a postmaster behind; _pg_ctl_stop checks its pid file.
            self._pg_ctl_stop(mode)
        finally:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self._port = None

    def restart(self, mode: ShutdownMode = "fast") -> None:
        """Stop and start the server, keeping its data and port.

        ``mode="immediate"`` kills the server without a checkpoint, so the
        next start performs crash recovery, as after a server crash.
        Committed data survives; a killed server is simply started again.
        """
        if self._tmpdir is None:
            raise RuntimeError("PostgresServer is not started")
        self._pg_ctl_stop(mode)
        self._pg_ctl_start()

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql and return its unaligned, tuples-only output."""
        psql = self._bin("psql")
        if not psql.is_file():
            psql = Path(shutil.which("psql") or "psql")
        result = subprocess.run(
            [
                str(psql),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                dbname,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "-"
        return f"<PostgresServer port={port} running={self._running}>"

    # -- internals ----------------------------------------------------------

    def _bin(self, name: str) -> Path:
        assert self._bindir is not None
        return self._bindir / name

    def _run_as_server_user(
        self, cmd: list[str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        assert self._tmpdir is not None
        user = self._user
        env = dict(os.environ)
        if user is not None:
            env.update(
                HOME=user.pw_dir,
                USER=user.pw_name,
                LOGNAME=user.pw_name,
            )
        # cwd inside the temp dir: the server user may not be allowed into
        # the caller's cwd (e.g. /root), which makes the tools complain.
        with subprocess.Popen(
            cmd,
            cwd=self._tmpdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Own process group, so that an interrupted initdb can be killed
            # together with the bootstrap backend it runs.
            start_new_session=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        ) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)

    def _create_cluster(self) -> None:
        self._tmpdir = Path(tempfile.mkdtemp(prefix="asyncjobs-pg-"))
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root but there is no 'postgres' user to run "
                    "PostgreSQL as (useradd --system postgres)"
                ) from None
            # initdb (running as postgres) must create the data directory
            # and the log file inside the root-owned temp dir.
            os.chown(self._tmpdir, self._user.pw_uid, self._user.pw_gid)
        result = self._run_as_server_user(
            [
                str(self._bin("initdb")),
                "-D",
                str(self.datadir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                # The caller's locale may not exist on this machine, and C
                # collation keeps ORDER BY results identical everywhere.
                "--locale=C",
                "--no-sync",
            ]
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )
        socket_dir = str(self.datadir).replace("'", "''")
        self._write_settings(
            {**_PG_SETTINGS, "unix_socket_directories": f"'{socket_dir}'", **self._settings}
        )

    def _write_settings(self, settings: dict[str, str]) -> None:
        # Appending keeps the file owned by the server user; PostgreSQL uses
        # the last occurrence of a setting, so re-appending "port" is fine.
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# django-asyncjobs test settings\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def _pg_ctl_start(self) -> None:
        result = self._run_as_server_user(
            [
                str(self._bin("pg_ctl")),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed (exit {result.returncode}): "
                f"{result.stdout}{result.stderr}\n"
                f"--- tail of {self.logfile} ---\n{_tail(self.logfile)}"
            )
        self._running = True

    def _pg_ctl_stop(self, mode: ShutdownMode) -> None:
        pid = self._postmaster_pid()
        if pid is None or not _pid_alive(pid):
            # Already gone (killed by a test, crashed, or an interrupted
            # initdb left a stale pid file): nothing to stop.
            self._running = False
            return
        result = self._run_as_server_user(
            [
                str(self._bin("pg_ctl")),
                "-D",
                str(self.datadir),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ]
        )
        self._running = False
        if result.returncode != 0:
            # Never leave a server behind: kill it outright, then report.
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, timeout=10)
            raise RuntimeError(
                f"pg_ctl stop failed (exit {result.returncode}): "
                f"{result.stdout}{result.stderr}\n"
                f"--- tail of {self.logfile} ---\n{_tail(self.logfile)}"
            )
        # pg_ctl returns once postmaster.pid is removed, a moment before the
        # process exits; callers checking "no server left" must not race it.
        _wait_gone(pid, timeout=10)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


class ServerProcess:
    """A server run as a child process on a free port of 127.0.0.1, its log in a temp directory.

    Subclasses say how to start the server (:meth:`_command`, :meth:`_environment`) and how to
    tell that it is ready (:meth:`_ready`). ``pause()`` freezes the process with SIGSTOP: clients
    connect but get no answer until ``resume()``, like an outage, and the server's state is kept
    (unlike stopping it, which forgets everything).

    Example (with the subclass :class:`MotoServer`)::

        with MotoServer() as moto:
            sqs = boto3.client("sqs", endpoint_url=moto.url)
    """

    #: Names the server in errors and in the file name of its log.
    name = "server"

    def __init__(self, startup_timeout: float = 30.0) -> None:
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._tmpdir: Path | None = None
        self._paused = False
        # Ignore HTTP(S)_PROXY: it never should see requests to 127.0.0.1.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def port(self) -> int:
        """Return the TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._port

    @property
    def url(self) -> str:
        """Return the endpoint URL, e.g. for boto3's ``endpoint_url``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def tmpdir(self) -> Path:
        """Return the server's temporary directory (its log, and any state it writes)."""
        if self._tmpdir is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._tmpdir

    @property
    def logfile(self) -> Path:
        """Return the file that receives the server's stdout and stderr."""
        return self.tmpdir / f"{self.name}.log"

    @property
    def paused(self) -> bool:
        """Return whether the server is frozen by ``pause()``."""
        return self._paused

    def start(self) -> Self:
        """Start the server and wait until it answers; return ``self``."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f"asyncjobs-{self.name}-"))
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    self._start_once()
                    break
                except RuntimeError as exc:
                    # Lost the race for the free port: try another one.
                    if attempt == _START_ATTEMPTS or "already in use" not in str(exc):
                        raise
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server and delete its directory; do nothing if stopped."""
        try:
            self._terminate(timeout)
        finally:
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None
            self._port = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP) to simulate an outage."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Unfreeze a server frozen by ``pause()`` (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "-"
        return f"<{type(self).__name__} port={port} paused={self._paused}>"

    # -- what subclasses say ------------------------------------------------

    def _command(self, port: int) -> list[str]:
        """Return the command line of a server listening on 127.0.0.1:*port*."""
        raise NotImplementedError

    def _environment(self, port: int) -> dict[str, str] | None:
        """Return the server's environment; ``None`` (the default) inherits this process's."""
        return None

    def _ready(self) -> bool:
        """Return whether the started server answers requests yet."""
        raise NotImplementedError

    def _get(self, path: str, *, timeout: float = 1.0) -> bytes | None:
        """Return the body of a 2xx answer to ``GET path``, or ``None`` (error or no answer)."""
        try:
            with self._opener.open(f"{self.url}{path}", timeout=timeout) as response:
                body: bytes = response.read()
                return body if 200 <= response.status < 300 else None
        except (urllib.error.URLError, OSError):
            return None

    # -- internals ----------------------------------------------------------

    def _start_once(self) -> None:
        self._terminate(timeout=5)
        self._port = free_port()
        # The child keeps its own copy of the descriptor; ours can go.
        with open(self.logfile, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(self._port),
                env=self._environment(self._port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: terminal signals meant for the tests must not
                # kill it, and pause()/stop() can signal its process group.
                start_new_session=True,
            )
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self._proc.returncode}:\n{_tail(self.logfile)}"
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not answer within {self._startup_timeout}s:\n"
                    f"{_tail(self.logfile)}"
                )
            time.sleep(0.1)

    def _signal(self, signum: int) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"{self.name} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signum)

    def _terminate(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # A stopped process cannot act on SIGTERM.
                if self._paused:
                    os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._paused = False


class MotoServer(ServerProcess):
    """Run ``moto_server`` on 127.0.0.1 as a fake AWS (SQS) endpoint.

    ``pause()`` freezes it like an SQS outage (see :class:`ServerProcess`); ``reset()`` makes it
    forget every queue and message, as a restarted moto_server would.

    Example::

        with MotoServer() as moto:
            sqs = boto3.client("sqs", endpoint_url=moto.url)
            sqs.create_queue(QueueName="jobs")
            moto.reset()  # forget all queues between tests
    """

    name = "moto_server"

    def reset(self) -> None:
        """Delete all queues and messages (``POST /moto-api/reset``)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with self._opener.open(request, timeout=10) as response:
            response.read()

    def _command(self, port: int) -> list[str]:
        args = ["-H", "127.0.0.1", "-p", str(port)]
        # Prefer the script of the running venv, which may not be on PATH.
        script = Path(sys.executable).parent / "moto_server"
        if script.is_file():
            return [str(script), *args]
        found = shutil.which("moto_server")
        if found:
            return [found, *args]
        return [sys.executable, "-m", "moto.server", *args]

    def _ready(self) -> bool:
        return self._get("/moto-api/") is not None


#: What benchmarks ask for with ``durable=True``: a server that writes to disk like a real one.
DURABLE_PG_SETTINGS = {"fsync": "on", "full_page_writes": "on"}


def ensure_services(
    started: list[PostgresServer | MotoServer] | None = None,
    *,
    durable: bool = False,
) -> list[PostgresServer | MotoServer]:
    """Start the services the environment lacks and export their URLs.

    A PostgreSQL started here runs with fsync off (a throwaway test cluster) unless *durable*:
    benchmarks pass it, so that their figures are those of a server that syncs to disk.

    Sets ``DATABASE_URL`` and ``AWS_ENDPOINT_URL_SQS`` in ``os.environ`` plus
    dummy AWS region/credentials when unset. Appends the servers it starts to
    ``started`` (a new list by default) and returns it, for
    ``stop_services()``; externally supplied services are left alone. Passing
    your own list means that a signal arriving just before this returns
    cannot make you lose track of running servers.

    Example::

        started = ensure_services()
        try:
            run_tests()
        finally:
            stop_services(started)
    """
    if started is None:
        started = []
    try:
        if not os.environ.get("DATABASE_URL"):
            pg = PostgresServer(settings=DURABLE_PG_SETTINGS if durable else None)
            started.append(pg)
            pg.start()
            os.environ["DATABASE_URL"] = pg.url
        sqs_url = os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")
        if not sqs_url:
            moto = MotoServer()
            started.append(moto)
            moto.start()
            sqs_url = moto.url
        # Code that reads only the SQS-specific variable sees the same
        # endpoint boto3 would pick from the generic one.
        os.environ["AWS_ENDPOINT_URL_SQS"] = sqs_url
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        # Environment credentials outrank a profile, so only fill in dummies
        # when no profile was chosen (e.g. to test against real AWS).
        if "AWS_PROFILE" not in os.environ:
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    except BaseException:
        with contextlib.suppress(Exception):
            stop_services(started)
        raise
    return started


def stop_services(started: list[PostgresServer | MotoServer]) -> None:
    """Stop servers from ``ensure_services()``, newest first.

    Every server is stopped even if an earlier one fails; the first error is
    re-raised afterwards.
    """
    error: BaseException | None = None
    for server in reversed(started):
        try:
            server.stop()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error


def _describe(server: PostgresServer | MotoServer) -> str:
    if isinstance(server, PostgresServer):
        return f"PostgreSQL at {server.url} (data in {server.datadir})"
    return f"moto_server (SQS) at {server.url}"


def _foreground_on_terminal() -> bool:
    # When we own the terminal, Ctrl-C already reached the child, which runs
    # in our process group; forwarding it would deliver SIGINT twice.
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def _run(command: list[str]) -> int:
    child: subprocess.Popen[bytes] | None = None
    spawning = False
    deferred: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if spawning:
            # Popen may have forked already; deliver once we hold the child.
            deferred.append(signum)
            return
        if child is not None:
            if child.poll() is None and not (signum == signal.SIGINT and _foreground_on_terminal()):
                child.send_signal(signum)
            return
        # Still starting services: unwind so that the finally clause below
        # stops what was already started.
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started: list[PostgresServer | MotoServer] = []
    try:
        ensure_services(started)
        for server in started:
            print(f"tests.services: started {_describe(server)}", file=sys.stderr)
        spawning = True
        try:
            child = subprocess.Popen(command)
        except OSError as exc:
            print(f"tests.services: cannot run {command[0]}: {exc}", file=sys.stderr)
            return 127
        finally:
            spawning = False
        for signum in deferred:
            on_signal(signum, None)
        returncode = child.wait()
        # Mirror the shell: death by signal N exits with 128 + N.
        return 128 - returncode if returncode < 0 else returncode
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        # Further signals must not interrupt the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_services(started)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the ``run`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.services",
        description="Run a command with PostgreSQL and moto_server available.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser(
        "run",
        help="start missing services, run CMD, stop the services",
        usage="python -m tests.services run -- CMD [ARGS...]",
    )
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command: list[str] = args.command
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        run.error("missing command (usage: run -- CMD [ARGS...])")
    return _run(command)


if __name__ == "__main__":
    sys.exit(main())
