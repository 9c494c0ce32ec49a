#!/usr/bin/env python
"""Measure enqueue throughput, drain throughput, pickup latency and memory of django-asyncjobs.

Usage (from the repository root, with the project's venv)::

    python benchmarks/throughput.py                       # N=1000, one worker, --concurrency 1
    python benchmarks/throughput.py --jobs 5000 --concurrency 1,8

PostgreSQL and moto_server are started through ``tests.services`` unless ``DATABASE_URL`` and
``AWS_ENDPOINT_URL_SQS`` point at running ones. The database ``bench_asyncjobs`` (``--db-name``)
on that server is dropped and recreated each run; every worker/scheduler pair gets SQS queues
with a prefix of its own. The script prints figures; it asserts nothing about timings.

What it measures:

1. ``noop.delay(i)`` N times in autocommit (one transaction each) and N times in one
   ``transaction.atomic()`` block, in this process, with no scheduler running.
2. For each ``--concurrency`` value C: ``runscheduler`` and ``runworker --concurrency C`` as
   subprocesses; N jobs enqueued in autocommit; jobs/s from the first ``created_at`` to the last
   ``finished_at`` (both database times) once all N are ``succeeded``.
3. With the same processes idle: ``--latency-jobs`` jobs enqueued one at a time every 20-50 ms;
   per job ``started_at - created_at`` (database times): median, p95, p99, max.
4. Peak RSS (``VmHWM``) and CPU time of the worker and scheduler (and of moto_server and
   PostgreSQL when this script started them), read from /proc before stopping them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.services import (  # noqa: E402  (needs the repository root on sys.path)
    MotoServer,
    PostgresServer,
    ensure_services,
    stop_services,
)

SETTINGS_MODULE = "benchmarks.settings"
QUEUES = ("high", "default", "low")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the results."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- arguments ------------------------------------------------------------------------------------


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def concurrency_list(value: str) -> list[int]:
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a list like 1,8") from None
    if not numbers or any(n < 1 for n in numbers):
        raise argparse.ArgumentTypeError(f"concurrency values must be 1 or more, not {value!r}")
    return numbers


def interval_ms(value: str) -> tuple[float, float]:
    low, _, high = value.partition("-")
    try:
        bounds = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not MIN-MAX milliseconds") from None
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise argparse.ArgumentTypeError(f"{value!r} is not MIN-MAX milliseconds")
    return bounds


def add_measurement_options(parser: argparse.ArgumentParser) -> None:
    """Add the trickle, drain, seed and log options every benchmark script shares."""
    parser.add_argument(
        "--latency-jobs",
        type=int,
        default=200,
        help="Jobs in the trickle of the latency measurement (default 200; 0 skips it).",
    )
    parser.add_argument(
        "--latency-interval-ms",
        type=interval_ms,
        default=(20.0, 50.0),
        metavar="MIN-MAX",
        help="Random pause between trickled jobs (default 20-50).",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="Give up on a drain when no job finished for this long (default 30).",
    )
    parser.add_argument("--seed", type=int, default=1, help="Seed of the trickle's pauses.")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="Log level of the workers (and scheduler) (default INFO, as in production: a line "
        "or two per job).",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="Keep the workers' logs (path printed)."
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/throughput.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--jobs", type=positive_int, default=1000, help="N (default 1000).")
    parser.add_argument(
        "--concurrency",
        type=concurrency_list,
        default=[1],
        metavar="C[,C...]",
        help="runworker --concurrency values to measure, one worker process each (default 1).",
    )
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        help="runworker --processes: worker processes under the one runworker (default 1).",
    )
    parser.add_argument(
        "--bulk",
        type=concurrency_list,
        default=[10_000, 100_000],
        metavar="N[,N...]",
        help="delay_many() sizes to time (default 10000,100000).",
    )
    add_measurement_options(parser)
    parser.add_argument(
        "--wait",
        type=int,
        choices=range(0, 21),
        default=20,
        metavar="SECONDS",
        help="ASYNCJOBS['WAIT_TIME_SECONDS'], the workers' long-poll wait (default 20, the "
        "library default). Stopping a worker takes up to this long.",
    )
    parser.add_argument("--db-name", default="bench_asyncjobs", help="Database to (re)create.")
    parser.add_argument(
        "--keep-db", action="store_true", help="Leave the database behind for inspection."
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="Record py-spy flame graphs of the worker and scheduler into DIR "
        "(needs `pip install py-spy` and ptrace permission).",
    )
    return parser.parse_args(argv)


# -- /proc helpers --------------------------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int | None:
    """Return a ``kB`` field of /proc/<pid>/status (VmHWM, VmRSS), or None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """Return user + system CPU seconds of *pid* (all its threads), or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # Fields after the command name start at field 3 (state); utime and stime are 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_of(ppid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(stat[1]) == ppid:
            pids.append(int(entry.name))
    return pids


def find_pid(*needles: str) -> int | None:
    """Return the pid whose command line holds every needle (used for moto_server)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(needle in cmdline for needle in needles) and "throughput.py" not in cmdline:
            return int(entry.name)
    return None


@dataclasses.dataclass
class ServiceCpu:
    """CPU time of the services this script started (a process tree for PostgreSQL)."""

    moto_pid: int | None = None
    postmaster_pid: int | None = None
    #: moto_server's log has one line per HTTP request: a count of SQS API calls of all clients.
    moto_log: Path | None = None

    @classmethod
    def of(cls, started: Sequence[PostgresServer | MotoServer]) -> ServiceCpu:
        """Watch the servers this script started (``ensure_services``); none if it started none.

        Example::

            started = ensure_services(durable=True)
            ServiceCpu.of(started).sample()   # {"moto": 1.2, "postgres": 3.4}
        """
        service_cpu = cls()
        for server in started:
            if isinstance(server, MotoServer):
                service_cpu.moto_pid = find_pid("moto", "-p", str(server.port))
                service_cpu.moto_log = server.logfile
            elif isinstance(server, PostgresServer):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    text = (server.datadir / "postmaster.pid").read_text()
                    service_cpu.postmaster_pid = int(text.split()[0])
        return service_cpu

    def sqs_requests(self) -> int | None:
        if self.moto_log is None:
            return None
        try:
            with open(self.moto_log, "rb") as log_file:
                return sum(1 for line in log_file if b'"POST ' in line)
        except OSError:
            return None

    def sample(self) -> dict[str, float]:
        """Return CPU seconds per service; PostgreSQL sums its live backends."""
        result: dict[str, float] = {}
        if self.moto_pid is not None:
            value = cpu_seconds(self.moto_pid)
            if value is not None:
                result["moto"] = value
        if self.postmaster_pid is not None:
            pids = [self.postmaster_pid, *children_of(self.postmaster_pid)]
            result["postgres"] = sum(cpu_seconds(pid) or 0.0 for pid in pids)
        return result


# -- child processes ------------------------------------------------------------------------------


@dataclasses.dataclass
class Child:
    """A runworker or runscheduler subprocess and what we read about it."""

    name: str
    proc: subprocess.Popen[bytes]
    logfile: Path
    spy: subprocess.Popen[bytes] | None = None
    peak_rss_kib: int | None = None
    cpu_at_start: float = 0.0
    stop_requested_at: float | None = None
    stop_seconds: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tree(self) -> list[int]:
        """The process and its children (runworker is a supervisor of worker processes)."""
        return [self.pid, *children_of(self.pid)]

    def tree_cpu(self) -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in self.tree())

    def cpu(self) -> float:
        return self.tree_cpu() - self.cpu_at_start


class Children:
    """Start and stop the worker/scheduler subprocesses, also on Ctrl+C."""

    def __init__(self, *, logdir: Path, env: dict[str, str], py_spy: Path | None) -> None:
        self.logdir = logdir
        self.env = env
        self.py_spy = py_spy
        self.running: list[Child] = []

    def start(
        self,
        name: str,
        args: list[str],
        *,
        extra_env: dict[str, str],
        program: Sequence[str] = (sys.executable, "-m", "django"),
    ) -> Child:
        """Start ``program *args`` (a management command by default) from the repository root."""
        logfile = self.logdir / f"{name}.log"
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                [*program, *args],
                cwd=REPO_ROOT,
                env={**self.env, **extra_env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own session: the terminal's Ctrl+C reaches only this script, which stops them.
                start_new_session=True,
            )
        child = Child(name=name, proc=proc, logfile=logfile)
        self.running.append(child)
        return child

    def attach_py_spy(self, child: Child) -> None:
        if self.py_spy is None:
            return
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.py_spy.mkdir(parents=True, exist_ok=True)
        out = self.py_spy / f"{child.name}.txt"
        child.spy = subprocess.Popen(
            [
                exe,
                "record",
                "--subprocesses",  # runworker's supervisor forks the worker processes
                "--pid",
                str(child.pid),
                "--rate",
                "100",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.logdir / f"{child.name}.py-spy.log", "ab"),  # noqa: SIM115
            start_new_session=True,
        )

    def wait_for_log(self, child: Child, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in child.logfile.read_text(errors="replace"):
                return
            if child.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(
            f"{child.name} did not log {text!r} (exit code {child.proc.poll()}):\n"
            + "\n".join(child.logfile.read_text(errors="replace").splitlines()[-30:])
        )

    def request_stop(self, child: Child) -> None:
        """Read the peak RSS, then send the first SIGTERM (graceful stop)."""
        if child.stop_requested_at is not None:
            return
        # The largest process of the tree: for runworker, its worker process.
        peaks = [proc_status_kib(pid, "VmHWM") or 0 for pid in child.tree()]
        child.peak_rss_kib = max(peaks) or child.peak_rss_kib
        child.stop_requested_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)

    def stop(self, *targets: Child, grace: float) -> None:
        """SIGTERM (graceful stop), then a second SIGTERM (exit now), then SIGKILL.

        Each child's ``stop_seconds`` is measured from its first SIGTERM to its own exit.
        """
        for child in targets:
            self.request_stop(child)
        pending = list(targets)
        for signum, wait in ((None, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            for child in pending:
                if signum is not None:
                    log(f"{child.name} still running; sending {signal.Signals(signum).name}")
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(signum)
            deadline = time.monotonic() + wait
            while pending and time.monotonic() < deadline:
                for child in list(pending):
                    if child.proc.poll() is not None:
                        assert child.stop_requested_at is not None
                        child.stop_seconds = time.monotonic() - child.stop_requested_at
                        pending.remove(child)
                time.sleep(0.02)
            if not pending:
                break
        for child in targets:
            if child.proc.poll() is None:
                child.proc.wait()
            if child.spy is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.spy.wait(30)
                if child.spy.poll() is None:
                    child.spy.kill()
                    child.spy.wait()
            if child in self.running:
                self.running.remove(child)

    def stop_all(self, *, grace: float) -> None:
        self.stop(*self.running, grace=grace)


# -- database -------------------------------------------------------------------------------------


def _drop_sql(name: str) -> Any:
    from psycopg import sql

    return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))


def recreate_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.info.dbname == name:
            raise SystemExit(
                f"DATABASE_URL names the database {name!r}, which this script drops; "
                "point it at another database (e.g. postgres) or pass --db-name"
            )
        conn.execute(_drop_sql(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(_drop_sql(name))


def truncate_jobs() -> None:
    from django.db import connection

    from django_asyncjobs.models import Job

    with connection.cursor() as cursor:
        # CASCADE: the attempt history references the jobs.
        cursor.execute(f"TRUNCATE {connection.ops.quote_name(Job._meta.db_table)} CASCADE")


def status_counts() -> dict[str, int]:
    from django.db.models import Count

    from django_asyncjobs.models import Job

    return {row["status"]: row["n"] for row in Job.objects.values("status").annotate(n=Count("id"))}


# -- measurements ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    label: str
    value: str


def rate(count: int, seconds: float) -> str:
    if seconds <= 0:
        return "n/a"
    return f"{count / seconds:,.0f} jobs/s ({seconds * 1000 / count:.2f} ms/job, {seconds:.2f} s)"


def time_delay(n: int, *, atomic: bool = False) -> float:
    """Return the seconds N ``noop.delay(i)`` calls take, in autocommit or in one atomic() block.

    The jobs are deleted afterwards; no scheduler should be running.
    """
    from django.db import transaction

    from benchmarks.benchjobs.jobs import noop

    log(f"delay(): {n} calls in " + ("one atomic() block" if atomic else "autocommit"))
    started = time.perf_counter()
    with transaction.atomic() if atomic else contextlib.nullcontext():
        for i in range(n):
            noop.delay(i)
    elapsed = time.perf_counter() - started
    truncate_jobs()
    return elapsed


def measure_delay(n: int) -> list[Row]:
    from benchmarks.benchjobs.jobs import noop

    for i in range(20):  # warm up the connection and code paths
        noop.delay(i)
    truncate_jobs()
    autocommit = time_delay(n)
    atomic = time_delay(n, atomic=True)
    return [
        Row("delay() in autocommit (one transaction each)", rate(n, autocommit)),
        Row("delay() in one atomic() block", rate(n, atomic)),
    ]


def measure_bulk(sizes: Sequence[int]) -> list[Row]:
    """Time ``delay_many()`` (one INSERT, one NOTIFY) for each size, in autocommit."""
    from benchmarks.benchjobs.jobs import noop

    rows = []
    for n in sizes:
        log(f"delay_many(): {n:,} jobs in one call")
        arguments: list[tuple[tuple[int], dict[str, object]]] = [((i,), {}) for i in range(n)]
        started = time.perf_counter()
        noop.delay_many(arguments)
        elapsed = time.perf_counter() - started
        truncate_jobs()
        rows.append(Row(f"delay_many() of {n:,} jobs (one statement)", rate(n, elapsed)))
    return rows


@dataclasses.dataclass
class DrainResult:
    finished: bool
    counts: dict[str, int]
    db_seconds: float | None
    wall_seconds: float
    enqueue_seconds: float
    #: Most rows seen ``queued`` at once: sent to SQS and not claimed yet, i.e. the queue depth.
    #: Read from PostgreSQL, because asking moto for queue attributes slows it down further.
    peak_queued: int


def wait_for_jobs(n: int, *, stall_timeout: float) -> tuple[bool, dict[str, int], int]:
    """Poll until N jobs are final; return whether they all are, the status counts, and the
    most jobs seen ``queued`` at once. Gives up when none finished for ``stall_timeout`` s."""
    peak_queued = 0
    last_done, last_progress, last_report = -1, time.monotonic(), time.monotonic()
    while True:
        counts = status_counts()
        done = counts.get("succeeded", 0) + counts.get("failed", 0)
        if done >= n:
            return True, counts, peak_queued
        peak_queued = max(peak_queued, counts.get("queued", 0))
        now = time.monotonic()
        if done != last_done:
            last_done, last_progress = done, now
        elif now - last_progress > stall_timeout:
            log(f"  no progress for {stall_timeout:.0f} s; giving up: {counts}")
            return False, counts, peak_queued
        if now - last_report >= 5:
            last_report = now
            log(f"  {done}/{n} done: {counts}")
        time.sleep(0.2)


def measure_drain(n: int, *, stall_timeout: float) -> DrainResult:
    from django.db import connection

    from benchmarks.benchjobs.jobs import noop
    from django_asyncjobs.models import Job

    started = time.perf_counter()
    for i in range(n):
        noop.delay(i)
    enqueue_seconds = time.perf_counter() - started
    log(f"  enqueued {n} jobs in {enqueue_seconds:.2f} s; waiting for the worker")
    finished, counts, peak_queued = wait_for_jobs(n, stall_timeout=stall_timeout)
    wall = time.perf_counter() - started

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXTRACT(EPOCH FROM max(finished_at) - min(created_at)) "
            f"FROM {connection.ops.quote_name(Job._meta.db_table)}"
        )
        (seconds,) = cursor.fetchone()
    return DrainResult(
        finished=finished,
        counts=counts,
        db_seconds=float(seconds) if seconds is not None else None,
        wall_seconds=wall,
        enqueue_seconds=enqueue_seconds,
        peak_queued=peak_queued,
    )


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summary_ms(values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"median {statistics.median(ordered):.1f}, p95 {percentile(ordered, 0.95):.1f}, "
        f"p99 {percentile(ordered, 0.99):.1f}, max {ordered[-1]:.1f} ms"
    )


def trickle_latencies(
    count: int, *, pause_ms: tuple[float, float], seed: int, stall_timeout: float
) -> list[tuple[float, float, float, float]]:
    """Trickle COUNT jobs, wait for them, and return four spans in ms per started job.

    The spans, from database times: ``started_at - created_at``, the relay (``enqueued_at -
    created_at``), SQS + claim (``started_at - enqueued_at``), run + record (``finished_at -
    started_at``).
    """
    from django.db import connection

    from benchmarks.benchjobs.jobs import noop
    from django_asyncjobs.models import Job

    truncate_jobs()
    rng = random.Random(seed)
    log(f"  trickling {count} jobs, one every {pause_ms[0]:g}-{pause_ms[1]:g} ms")
    for i in range(count):
        noop.delay(i)
        time.sleep(rng.uniform(*pause_ms) / 1000)
    last_done, last_progress = -1, time.monotonic()
    while True:
        counts = status_counts()
        done = counts.get("succeeded", 0) + counts.get("failed", 0)
        if done >= count:
            break
        if done != last_done:
            last_done, last_progress = done, time.monotonic()
        elif time.monotonic() - last_progress > stall_timeout:
            log(f"  latency trickle stalled: {counts}")
            break
        time.sleep(0.2)

    table = connection.ops.quote_name(Job._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXTRACT(EPOCH FROM started_at - created_at) * 1000, "
            f"EXTRACT(EPOCH FROM enqueued_at - created_at) * 1000, "
            f"EXTRACT(EPOCH FROM started_at - enqueued_at) * 1000, "
            f"EXTRACT(EPOCH FROM finished_at - started_at) * 1000 "
            f"FROM {table} WHERE started_at IS NOT NULL"
        )
        return [
            (float(total), float(relay), float(pickup), float(run))
            for total, relay, pickup, run in cursor.fetchall()
        ]


def measure_latency(
    count: int, *, pause_ms: tuple[float, float], seed: int, stall_timeout: float
) -> list[Row]:
    rows = trickle_latencies(count, pause_ms=pause_ms, seed=seed, stall_timeout=stall_timeout)
    if not rows:
        return [Row("enqueue-to-start latency", "no job started")]
    total, relay, pickup, run = (list(column) for column in zip(*rows, strict=True))
    started_note = "" if len(rows) == count else f" (only {len(rows)}/{count} started)"
    return [
        Row(f"latency started_at - created_at ({count} jobs){started_note}", summary_ms(total)),
        Row("  of which relay: enqueued_at - created_at", summary_ms(relay)),
        Row("  of which SQS + claim: started_at - enqueued_at", summary_ms(pickup)),
        Row("  run + record: finished_at - started_at", summary_ms(run)),
    ]


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def run_pair(
    *,
    concurrency: int,
    args: argparse.Namespace,
    children: Children,
    run_id: str,
    service_cpu: ServiceCpu,
) -> list[Row]:
    """Start a scheduler and one worker, drain N jobs, trickle the latency jobs, stop them."""
    from django_asyncjobs.conf import get_settings
    from django_asyncjobs.transports.sqs import SQSTransport

    prefix = f"bench{run_id}c{concurrency}-"
    conf = dataclasses.replace(get_settings(), queue_prefix=prefix)
    transport = SQSTransport(conf)
    for queue in QUEUES:
        # Created here, so that queue creation is not part of any measurement.
        transport.ensure_queue(queue)
    extra_env = {"ASYNCJOBS_BENCH_QUEUE_PREFIX": prefix}
    truncate_jobs()

    log(f"C={concurrency}: starting runscheduler and runworker --concurrency {concurrency}")
    scheduler = children.start(f"scheduler-c{concurrency}", ["runscheduler"], extra_env=extra_env)
    worker = children.start(
        f"worker-c{concurrency}",
        ["runworker", "--concurrency", str(concurrency), "--processes", str(args.processes)],
        extra_env=extra_env,
    )
    rows: list[Row] = []
    try:
        children.wait_for_log(scheduler, "scheduler started")
        children.wait_for_log(worker, "worker started")
        time.sleep(1.0)  # let the worker's first short polls pass and its long polls begin
        for child in (scheduler, worker):
            child.cpu_at_start = child.tree_cpu()
            children.attach_py_spy(child)
        services_before = service_cpu.sample()
        requests_before = service_cpu.sqs_requests()

        log(f"C={concurrency}: drain of {args.jobs} jobs")
        drain = measure_drain(args.jobs, stall_timeout=args.stall_timeout)
        worker_cpu, scheduler_cpu = worker.cpu(), scheduler.cpu()
        services_after = service_cpu.sample()
        requests_after = service_cpu.sqs_requests()
        label = f"drain, runworker --processes {args.processes} --concurrency {concurrency}"
        done = drain.counts.get("succeeded", 0) + drain.counts.get("failed", 0)
        timing = rate(done, drain.db_seconds) if done and drain.db_seconds else "n/a"
        rows.append(Row(f"{label}: first created_at -> last finished_at", timing))
        if not drain.finished:
            left = {k: v for k, v in drain.counts.items() if k not in ("succeeded", "failed")}
            rows.append(
                Row(
                    "  NOT FINISHED (rate above is over the finished jobs)",
                    f"{args.jobs - done} of {args.jobs} stuck after {args.stall_timeout:.0f} s "
                    f"without progress: {left}",
                )
            )
        rows.append(
            Row("  enqueue part of it (autocommit delay())", f"{drain.enqueue_seconds:.2f} s")
        )
        rows.append(Row("  peak jobs queued in SQS, not yet claimed", f"{drain.peak_queued:,}"))
        cpu_parts = [f"worker {worker_cpu:.1f}", f"scheduler {scheduler_cpu:.1f}"]
        for name in ("moto", "postgres"):
            if name in services_after and name in services_before:
                cpu_parts.append(f"{name} {services_after[name] - services_before[name]:.1f}")
        rows.append(Row("  CPU seconds during the drain", ", ".join(cpu_parts)))
        if requests_before is not None and requests_after is not None and done:
            requests = requests_after - requests_before
            rows.append(
                Row(
                    "  SQS API requests during the drain",
                    f"{requests:,} ({requests / done:.2f} per job)",
                )
            )

        if args.latency_jobs > 0:
            time.sleep(1.0)  # idle: the worker is in its long poll, as between requests
            log(f"C={concurrency}: latency trickle")
            rows.extend(
                measure_latency(
                    args.latency_jobs,
                    pause_ms=args.latency_interval_ms,
                    seed=args.seed,
                    stall_timeout=args.stall_timeout,
                )
            )
    finally:
        log(f"C={concurrency}: stopping worker and scheduler (graceful, up to {args.wait + 20} s)")
        # Stop both at once: the worker's graceful stop waits out its long poll.
        children.stop(worker, scheduler, grace=args.wait + 20)
        transport.close()
    rows.append(
        Row(
            "  peak RSS (VmHWM) worker / scheduler",
            f"{mib(worker.peak_rss_kib)} / {mib(scheduler.peak_rss_kib)}",
        )
    )
    rows.append(
        Row(
            "  graceful stop (SIGTERM -> exit) worker / scheduler",
            f"{worker.stop_seconds or 0:.1f} s / {scheduler.stop_seconds or 0:.1f} s",
        )
    )
    return rows


# -- the machine ----------------------------------------------------------------------------------


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_line(*, moto_started: bool) -> str:
    import django
    from django.db import connection

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (pg_version,) = cursor.fetchone()
    sqs = (
        f"moto_server {version('moto')}"
        if moto_started
        else f"SQS at {os.environ.get('AWS_ENDPOINT_URL_SQS', '?')} "
        f"(moto installed: {version('moto')})"
    )
    return (
        f"{os.cpu_count()} CPUs ({model or platform.processor() or '?'}){mem}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"Django {django.get_version()}, PostgreSQL {pg_version}, {sqs}, "
        f"boto3 {version('boto3')}, psycopg {version('psycopg')}"
    )


def print_table(title: str, machine: str, rows: list[Row]) -> None:
    width = max(len(row.label) for row in rows)
    value_width = max(len(row.value) for row in rows)
    print()
    print(title)
    print(f"machine: {machine}")
    print()
    print(f"| {'measurement'.ljust(width)} | {'result'.ljust(value_width)} |")
    print(f"| {'-' * width} | {'-' * value_width} |")
    for row in rows:
        print(f"| {row.label.ljust(width)} | {row.value.ljust(value_width)} |")
    sys.stdout.flush()


# -- a benchmark session ---------------------------------------------------------------------------


@dataclasses.dataclass
class Session:
    """What :func:`bench_session` set up: servers, the processes' launcher, the machine line."""

    started: list[PostgresServer | MotoServer]
    logdir: Path
    children: Children
    service_cpu: ServiceCpu
    machine: str
    #: Set when Ctrl+C or SIGTERM ended the body (the session suppresses it).
    interrupted: bool = False


@contextlib.contextmanager
def bench_session(
    *,
    databases: Sequence[str],
    env: dict[str, str],
    keep_db: bool = False,
    keep_logs: bool = False,
    py_spy: Path | None = None,
    logdir_prefix: str = "asyncjobs-bench-",
) -> Iterator[Session]:
    """Start the services, (re)create *databases*, set Django up on the first; clean up after.

    PostgreSQL (fsync on) and moto_server start through ``tests.services`` unless
    ``DATABASE_URL`` and ``AWS_ENDPOINT_URL_SQS`` name running ones. *env* goes into
    ``os.environ`` before ``django.setup()`` (``ASYNCJOBS_BENCH_*``). On the way out, also on
    Ctrl+C or SIGTERM (which end the body and set ``interrupted``), the subprocesses are stopped,
    the databases dropped (unless *keep_db*) and the services stopped. Example::

        with bench_session(databases=["bench_x"], env={"ASYNCJOBS_BENCH_DB_NAME": "bench_x"}) as s:
            worker = s.children.start("worker", ["runworker"], extra_env={})
    """
    started: list[PostgresServer | MotoServer] = []
    created: list[str] = []
    logdir = Path(tempfile.mkdtemp(prefix=logdir_prefix))
    session: Session | None = None
    failed = False
    with sigterm_as_interrupt():
        try:
            ensure_services(started, durable=True)
            for server in started:
                log(f"started {server!r}")
            admin_url = os.environ["DATABASE_URL"]
            for name in databases:
                recreate_database(admin_url, name)
                created.append(name)
            os.environ.update(DJANGO_SETTINGS_MODULE=SETTINGS_MODULE, **env)
            import django
            from django.core.management import call_command

            django.setup()
            call_command("migrate", verbosity=0)
            pythonpath = os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            )
            session = Session(
                started=started,
                logdir=logdir,
                children=Children(
                    logdir=logdir, env={**os.environ, "PYTHONPATH": pythonpath}, py_spy=py_spy
                ),
                service_cpu=ServiceCpu.of(started),
                machine=machine_line(moto_started=any(isinstance(s, MotoServer) for s in started)),
            )
            log(f"databases {', '.join(databases)} ready; logs in {logdir}")
            yield session
        except KeyboardInterrupt:
            log("interrupted; stopping everything this script started")
            if session is None:
                raise
            session.interrupted = True
        except BaseException:
            failed = True
            raise
        finally:
            # A second Ctrl+C must not leave servers behind half-stopped.
            previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                if session is not None:
                    session.children.stop_all(grace=3.0)
                with contextlib.suppress(Exception):
                    from django.db import connections

                    connections.close_all()
                if not keep_db:
                    for name in created:
                        with contextlib.suppress(Exception):
                            drop_database(os.environ["DATABASE_URL"], name)
                stop_services(started)
                if keep_logs or failed or (session is not None and session.interrupted):
                    log(f"logs kept in {logdir}")
                else:
                    shutil.rmtree(logdir, ignore_errors=True)
            finally:
                signal.signal(signal.SIGINT, previous_int)


# -- main -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    rows: list[Row] = []
    env = {
        "ASYNCJOBS_BENCH_DB_NAME": args.db_name,
        "ASYNCJOBS_BENCH_QUEUE_PREFIX": f"bench{run_id}-",
        "ASYNCJOBS_BENCH_WAIT_SECONDS": str(args.wait),
        "ASYNCJOBS_BENCH_LOG_LEVEL": args.log_level,
    }
    with bench_session(
        databases=[args.db_name],
        env=env,
        keep_db=args.keep_db,
        keep_logs=args.keep_logs,
        py_spy=args.py_spy,
    ) as session:
        rows.extend(measure_delay(args.jobs))
        rows.extend(measure_bulk(args.bulk))
        for concurrency in args.concurrency:
            rows.extend(
                run_pair(
                    concurrency=concurrency,
                    args=args,
                    children=session.children,
                    run_id=run_id,
                    service_cpu=session.service_cpu,
                )
            )
    if rows:
        print_table(
            f"django-asyncjobs throughput, N={args.jobs}"
            + (" (interrupted: partial figures)" if session.interrupted else ""),
            session.machine,
            rows,
        )
    return 130 if session.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
