#!/usr/bin/env python
"""Measure django-asyncjobs and Celery + SQS side by side, on the same PostgreSQL and SQS.

Usage (from the repository root, with the project's venv)::

    python benchmarks/compare_celery.py                  # N=1000, the configurations below
    python benchmarks/compare_celery.py --jobs 2000 --processes 1
    python benchmarks/compare_celery.py --help

Celery is not a dependency of this project: the script makes (or reuses) a virtual environment
of its own, ``benchmarks/.celery-venv``, with ``celery[sqs]`` (kombu's SQS transport, which needs
pycurl), django-celery-results, and the Django, psycopg and boto3 versions of this venv. Celery's
worker and the Celery-side measurements (``benchmarks/celery_project/measure.py``) run from it as
subprocesses, with the tiny Django project ``benchmarks/celery_project``.

PostgreSQL and moto_server are started through ``tests.services`` unless ``DATABASE_URL`` and
``AWS_ENDPOINT_URL_SQS`` point at running ones. Each system gets a database of its own on that
server (``bench_compare_asyncjobs`` and ``bench_compare_celery``, dropped and recreated) and SQS
queues with a prefix of its own. For N no-op jobs, one system after the other:

1. enqueue: N ``delay()`` calls from one process, in autocommit, with no worker running. Celery's
   ``delay()`` writes nothing to the database by itself, so its headline figure includes the
   task's PENDING row in the django-db result backend (written before the message is sent, as
   django-asyncjobs writes its row); plain ``delay()`` and a shallow-queue variant are shown too.
2. backlog: N jobs enqueued with no worker running, then the workers started; from the first
   job's start to the last result stored (what the workers alone sustain).
3. drain: the workers idle, then N jobs enqueued as fast as one process can; from the first
   enqueue to the last result stored. django-asyncjobs: ``runscheduler`` + ``runworker``. Celery:
   ``celery worker`` with the django-db result backend.
4. latency: on the same, idle, workers, jobs enqueued one at a time every 20-50 ms; per job
   from enqueue to start, p50 and p99. django-asyncjobs: ``started_at - created_at``; Celery:
   the task's own ``time.time()`` (its result) minus ``time.time()`` before ``delay()``.

It prints one table with the ratios; it asserts nothing about timings. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.throughput import (  # noqa: E402  (needs the repository root on sys.path)
    QUEUES,
    Child,
    Children,
    ServiceCpu,
    add_measurement_options,
    bench_session,
    log,
    measure_drain,
    percentile,
    positive_int,
    time_delay,
    trickle_latencies,
    truncate_jobs,
    version,
    wait_for_jobs,
)

CELERY_SETTINGS_MODULE = "benchmarks.celery_project.settings"
CELERY_APP = "benchmarks.celery_project.celery_app"
DEFAULT_CELERY_VENV = REPO_ROOT / "benchmarks" / ".celery-venv"
#: What the Celery venv needs; Django, psycopg and boto3 are pinned to this venv's versions.
CELERY_PACKAGES = ("celery[sqs]", "django-celery-results")
CELERY_IMPORTS = "import celery, kombu.transport.SQS, django_celery_results, pycurl, psycopg"
SYSTEMS = ("asyncjobs", "celery")


# -- arguments ------------------------------------------------------------------------------------


def add_server_options(group: argparse._ActionsContainer) -> None:
    """Add ``--max-queued`` and ``--wait``, the django-asyncjobs settings the scripts vary."""
    group.add_argument(
        "--max-queued",
        type=positive_int,
        default=1000,
        help="ASYNCJOBS['MAX_QUEUED_PER_QUEUE'], flow control's ceiling (default 1000, the "
        "library default).",
    )
    group.add_argument(
        "--wait",
        type=int,
        choices=range(0, 21),
        default=20,
        metavar="SECONDS",
        help="ASYNCJOBS['WAIT_TIME_SECONDS'], the long-poll wait (default 20, the default).",
    )
    group.add_argument(
        "--prepared-statements",
        action="store_true",
        help="ASYNCJOBS['PREPARED_STATEMENTS'] = True (default off, the default).",
    )


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment that carries the options of :func:`add_server_options` to
    ``benchmarks/settings.py``, in this process and the ones it starts."""
    return {
        "ASYNCJOBS_BENCH_MAX_QUEUED": str(args.max_queued),
        "ASYNCJOBS_BENCH_PREPARED": "1" if args.prepared_statements else "",
    }


def server_note(args: argparse.Namespace) -> str:
    """The options of :func:`add_server_options`, for a header line."""
    return (
        f"MAX_QUEUED_PER_QUEUE={args.max_queued}, WAIT_TIME_SECONDS={args.wait}, "
        f"PREPARED_STATEMENTS={args.prepared_statements}"
    )


def add_celery_options(group: argparse._ActionsContainer) -> None:
    """Add the Celery worker and transport options compare_celery.py and compare.py share."""
    group.add_argument(
        "--celery-concurrency",
        type=positive_int,
        default=8,
        help="celery worker --concurrency (default 8).",
    )
    group.add_argument(
        "--celery-prefetch-multiplier",
        type=positive_int,
        default=10,
        help="celery worker --prefetch-multiplier (default 10).",
    )
    group.add_argument(
        "--celery-polling-interval",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="broker_transport_options polling_interval (default 0.1; kombu's default is 1).",
    )
    group.add_argument(
        "--celery-wait",
        type=int,
        choices=range(0, 21),
        default=10,
        metavar="SECONDS",
        help="broker_transport_options wait_time_seconds (default 10, kombu's default).",
    )
    group.add_argument(
        "--celery-venv",
        type=Path,
        default=DEFAULT_CELERY_VENV,
        help=f"Virtual environment for Celery, made if missing (default {DEFAULT_CELERY_VENV}).",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/compare_celery.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--jobs", type=positive_int, default=1000, help="N (default 1000).")
    ours = parser.add_argument_group("django-asyncjobs")
    ours.add_argument(
        "--processes", type=positive_int, default=2, help="runworker --processes (default 2)."
    )
    ours.add_argument(
        "--concurrency", type=positive_int, default=8, help="runworker --concurrency (default 8)."
    )
    add_server_options(ours)
    celery = parser.add_argument_group("Celery")
    celery.add_argument(
        "--celery-pool",
        default="prefork",
        choices=["prefork", "threads", "solo"],
        help="celery worker --pool (default prefork, Celery's default).",
    )
    add_celery_options(celery)
    celery.add_argument(
        "--celery-conn-max-age",
        default="none",
        metavar="SECONDS|none",
        help="CONN_MAX_AGE of the Celery project (default none: persistent connections; "
        "Django's default 0 makes every task open a new connection).",
    )
    add_measurement_options(parser)
    parser.add_argument(
        "--only", choices=SYSTEMS, default=None, help="Measure one system (to try configurations)."
    )
    parser.add_argument("--db-name", default="bench_compare_asyncjobs")
    parser.add_argument("--celery-db-name", default="bench_compare_celery")
    return parser.parse_args(argv)


# -- results --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Figures:
    """What one system measured; None (or empty) where a phase did not run."""

    enqueue_seconds: float | None = None
    #: Celery only: other ways of enqueueing, by name.
    enqueue_variants: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Backlog: N jobs enqueued before the workers start; first start -> last result.
    backlog_seconds: float | None = None
    backlog_done: int = 0
    backlog_finished: bool = False
    drain_seconds: float | None = None
    drain_done: int = 0
    drain_finished: bool = False
    drain_enqueue_seconds: float | None = None
    #: CPU seconds during the drain: "workers" (worker processes, plus the scheduler for
    #: django-asyncjobs), and "moto" / "postgres" when this script started them.
    drain_cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    drain_sqs_requests: int | None = None
    latency_ms: list[float] = dataclasses.field(default_factory=list)
    #: django-asyncjobs only: the scheduler's part of it (created_at -> sent to SQS).
    relay_ms: list[float] = dataclasses.field(default_factory=list)
    config: str = ""


# -- django-asyncjobs -----------------------------------------------------------------------------


def measure_asyncjobs(
    args: argparse.Namespace, *, children: Children, run_id: str, service_cpu: ServiceCpu
) -> Figures:
    """Enqueue rate, backlog, drain and latency of django-asyncjobs, with throughput.py's code."""
    from benchmarks.benchjobs.jobs import noop
    from django_asyncjobs.conf import get_settings
    from django_asyncjobs.transports.sqs import SQSTransport

    figures = Figures(
        config=f"runscheduler + runworker --processes {args.processes} --concurrency "
        f"{args.concurrency}; {server_note(args)}, other settings default"
    )
    for i in range(20):  # warm up the connection and code paths
        noop.delay(i)
    truncate_jobs()
    figures.enqueue_seconds = time_delay(args.jobs)

    log(f"django-asyncjobs: backlog of {args.jobs} jobs, enqueued before the workers start")
    for i in range(args.jobs):
        noop.delay(i)
    prefix = f"cmp{run_id}a-"
    conf = dataclasses.replace(get_settings(), queue_prefix=prefix)
    transport = SQSTransport(conf)
    for queue in QUEUES:
        transport.ensure_queue(queue)  # created here: queue creation is in no measurement
    extra_env = {"ASYNCJOBS_BENCH_QUEUE_PREFIX": prefix}
    log(f"django-asyncjobs: starting {figures.config}")
    scheduler = children.start("asyncjobs-scheduler", ["runscheduler"], extra_env=extra_env)
    worker = children.start(
        "asyncjobs-worker",
        [
            "runworker",
            "--processes",
            str(args.processes),
            "--concurrency",
            str(args.concurrency),
        ],
        extra_env=extra_env,
    )
    try:
        children.wait_for_log(scheduler, "scheduler started")
        children.wait_for_log(worker, "worker started")
        finished, counts, _peak = wait_for_jobs(args.jobs, stall_timeout=args.stall_timeout)
        figures.backlog_seconds = first_start_to_last_finish()
        figures.backlog_done = counts.get("succeeded", 0) + counts.get("failed", 0)
        figures.backlog_finished = finished
        truncate_jobs()
        time.sleep(1.0)  # idle: the workers are in their long polls
        with Drain(figures, service_cpu, scheduler, worker):
            log(f"django-asyncjobs: drain of {args.jobs} jobs")
            drain = measure_drain(args.jobs, stall_timeout=args.stall_timeout)
        figures.drain_seconds = drain.db_seconds
        figures.drain_done = drain.counts.get("succeeded", 0) + drain.counts.get("failed", 0)
        figures.drain_finished = drain.finished
        figures.drain_enqueue_seconds = drain.enqueue_seconds

        if args.latency_jobs > 0:
            time.sleep(1.0)  # idle: the workers are in their long polls
            log("django-asyncjobs: latency trickle")
            spans = trickle_latencies(
                args.latency_jobs,
                pause_ms=args.latency_interval_ms,
                seed=args.seed,
                stall_timeout=args.stall_timeout,
            )
            figures.latency_ms = [total for total, _relay, _pickup, _run in spans]
            figures.relay_ms = [relay for _total, relay, _pickup, _run in spans]
    finally:
        log("django-asyncjobs: stopping the worker and the scheduler")
        children.stop(worker, scheduler, grace=args.wait + 20)
        transport.close()
    return figures


def first_start_to_last_finish() -> float | None:
    """Return the seconds from the first job's ``started_at`` to the last ``finished_at``."""
    from django.db import connection

    from django_asyncjobs.models import Job

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(started_at)) FROM "
            + connection.ops.quote_name(Job._meta.db_table)
        )
        (seconds,) = cursor.fetchone()
    return None if seconds is None else float(seconds)


class Drain:
    """Read CPU seconds and SQS requests around a drain, into ``figures``."""

    def __init__(self, figures: Figures, service_cpu: ServiceCpu, *processes: Child) -> None:
        self.figures = figures
        self.service_cpu = service_cpu
        self.processes = processes
        self.services_before: dict[str, float] = {}
        self.requests_before: int | None = None

    def __enter__(self) -> None:
        for child in self.processes:
            child.cpu_at_start = child.tree_cpu()
        self.services_before = self.service_cpu.sample()
        self.requests_before = self.service_cpu.sqs_requests()

    def __exit__(self, *exc_info: object) -> None:
        cpu = {"workers": sum(child.cpu() for child in self.processes)}
        after = self.service_cpu.sample()
        for name, before in self.services_before.items():
            if name in after:
                cpu[name] = after[name] - before
        self.figures.drain_cpu = cpu
        requests_after = self.service_cpu.sqs_requests()
        if self.requests_before is not None and requests_after is not None:
            self.figures.drain_sqs_requests = requests_after - self.requests_before


# -- Celery ---------------------------------------------------------------------------------------


def ensure_venv(
    venv: Path, *, name: str, packages: Sequence[str], imports: str, pins: Sequence[str] = ()
) -> Path:
    """Return *venv*'s python, creating the venv or installing what it lacks.

    Django and psycopg (and whatever else *pins* names) get this venv's versions, so that only
    the job system differs. *imports* is Python that must run in the venv once it is ready.
    Example::

        ensure_venv(Path("benchmarks/.x-venv"), name="x", packages=["x"], imports="import x")
    """
    python = venv / "bin" / "python"
    pins = [f"Django=={version('django')}", f"psycopg[binary]=={version('psycopg')}", *pins]
    check = (
        f"{imports}; import django, psycopg; "
        f"assert (django.get_version(), psycopg.__version__) == "
        f"({version('django')!r}, {version('psycopg')!r})"
    )

    def ready() -> bool:
        result = subprocess.run([str(python), "-c", check], capture_output=True, check=False)
        return result.returncode == 0

    if python.exists() and ready():
        return python
    if not python.exists():
        log(f"creating the {name} venv {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log(f"installing {', '.join([*packages, *pins])} into {venv}")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages, *pins], check=True)
    if not ready():
        raise SystemExit(f"the {name} venv {venv} cannot import what it needs ({check})")
    return python


def ensure_celery_venv(venv: Path) -> Path:
    """Return the Celery venv's python (boto3 pinned too: kombu's SQS transport uses it)."""
    return ensure_venv(
        venv,
        name="Celery",
        packages=CELERY_PACKAGES,
        imports=f"{CELERY_IMPORTS}; import boto3; assert boto3.__version__ == {version('boto3')!r}",
        pins=[f"boto3=={version('boto3')}"],
    )


def run_phase(
    python: Path, module: str, phase: str, options: list[str], *, env: dict[str, str]
) -> dict[str, Any]:
    """Run one phase of a side's ``measure`` module (``python -m MODULE PHASE ...``) and return
    the JSON of its last stdout line."""
    result = subprocess.run(
        [str(python), "-m", module, phase, *options],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the phase {module} {phase!r} failed (exit code {result.returncode})")
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def run_celery_phase(
    python: Path, phase: str, options: list[str], *, env: dict[str, str]
) -> dict[str, Any]:
    """Run one phase of ``benchmarks/celery_project/measure.py`` and return its JSON."""
    return run_phase(python, "benchmarks.celery_project.measure", phase, options, env=env)


def delete_sqs_queues(prefix: str) -> None:
    """Delete the queues whose names start with *prefix* (and the messages left in them)."""
    import boto3

    sqs = boto3.client("sqs")
    for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
        sqs.delete_queue(QueueUrl=url)


def measure_celery(
    args: argparse.Namespace,
    *,
    children: Children,
    run_id: str,
    service_cpu: ServiceCpu,
    python: Path,
) -> tuple[Figures, dict[str, str]]:
    """Enqueue rate, backlog, drain and latency of Celery + SQS; return them and its versions."""
    env = {
        **children.env,
        "DJANGO_SETTINGS_MODULE": CELERY_SETTINGS_MODULE,
        "CELERY_BENCH_DB_NAME": args.celery_db_name,
        "CELERY_BENCH_POLLING_INTERVAL": str(args.celery_polling_interval),
        "CELERY_BENCH_WAIT_SECONDS": str(args.celery_wait),
        "CELERY_BENCH_CONN_MAX_AGE": args.celery_conn_max_age,
    }
    worker_options = [
        "--pool",
        args.celery_pool,
        "--concurrency",
        str(args.celery_concurrency),
        "--prefetch-multiplier",
        str(args.celery_prefetch_multiplier),
    ]
    figures = Figures(
        config=f"celery worker {' '.join(worker_options)}; polling_interval "
        f"{args.celery_polling_interval:g}, wait_time_seconds {args.celery_wait}, CONN_MAX_AGE "
        f"{args.celery_conn_max_age}; result backend django-db, PENDING row before publish"
    )
    versions: dict[str, str] = run_celery_phase(python, "setup", [], env=env)["versions"]
    common = ["--jobs", str(args.jobs), "--stall-timeout", str(args.stall_timeout)]

    prefix = f"cmp{run_id}ce-"
    try:
        enqueue = run_celery_phase(
            python, "enqueue", common, env={**env, "CELERY_BENCH_QUEUE_PREFIX": prefix}
        )
    finally:
        delete_sqs_queues(prefix)
    figures.enqueue_seconds = enqueue["stored"]
    figures.enqueue_variants = {k: v for k, v in enqueue.items() if k != "stored"}

    env["CELERY_BENCH_QUEUE_PREFIX"] = f"cmp{run_id}cw-"
    log(f"Celery: backlog of {args.jobs} tasks, enqueued before the worker starts")
    run_celery_phase(python, "fill", common, env=env)
    log(f"Celery: starting {figures.config}")
    worker = children.start(
        "celery-worker",
        [
            "-A",
            CELERY_APP,
            "worker",
            *worker_options,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            args.log_level,
            "--hostname",
            f"bench{run_id}@%h",
        ],
        extra_env=env,
        program=[str(python.parent / "celery")],
    )
    try:
        children.wait_for_log(worker, " ready.", timeout=60)
        backlog = run_celery_phase(python, "wait", common, env=env)
        figures.backlog_seconds = backlog["seconds"]
        figures.backlog_done = backlog["done"]
        figures.backlog_finished = backlog["finished"]
        time.sleep(1.0)  # idle, as for django-asyncjobs
        with Drain(figures, service_cpu, worker):
            log(f"Celery: drain of {args.jobs} tasks")
            drain = run_celery_phase(python, "drain", common, env=env)
        figures.drain_seconds = drain["seconds"]
        figures.drain_done = drain["done"]
        figures.drain_finished = drain["finished"]
        figures.drain_enqueue_seconds = drain["enqueue_seconds"]

        if args.latency_jobs > 0:
            time.sleep(1.0)
            log("Celery: latency trickle")
            low, high = args.latency_interval_ms
            latency = run_celery_phase(
                python,
                "latency",
                [
                    "--jobs",
                    str(args.latency_jobs),
                    "--pause-ms",
                    f"{low:g}-{high:g}",
                    "--seed",
                    str(args.seed),
                    "--stall-timeout",
                    str(args.stall_timeout),
                ],
                env=env,
            )
            figures.latency_ms = latency["latency_ms"]
    finally:
        log("Celery: stopping the worker")
        children.stop(worker, grace=args.celery_wait + 20)
    return figures, versions


# -- the table ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Line:
    label: str
    ours: float | None
    celery: float | None
    #: Format of both values, e.g. "{:,.0f}".
    fmt: str


def table_lines(n: int, ours: Figures, celery: Figures) -> list[Line]:
    def per_second(count: float, seconds: float | None) -> float | None:
        return count / seconds if seconds else None

    def pct(values: list[float], fraction: float) -> float | None:
        return percentile(sorted(values), fraction) if values else None

    lines = [
        Line(
            f"enqueue: {n:,} delay() in autocommit, jobs/s (Celery: + PENDING row)",
            per_second(n, ours.enqueue_seconds),
            per_second(n, celery.enqueue_seconds),
            "{:,.0f}",
        )
    ]
    variant_labels = {
        "plain": "  Celery plain delay() (no row until the task ends), jobs/s",
        "stored_shallow": "  Celery + PENDING row, a new SQS queue every 50 tasks, jobs/s",
    }
    for key, label in variant_labels.items():
        if key in celery.enqueue_variants:
            lines.append(
                Line(
                    label,
                    per_second(n, ours.enqueue_seconds),
                    per_second(n, celery.enqueue_variants[key]),
                    "{:,.0f}",
                )
            )
    lines += [
        Line(
            f"backlog: {n:,} queued before the workers start; first start -> last result, jobs/s",
            per_second(ours.backlog_done, ours.backlog_seconds),
            per_second(celery.backlog_done, celery.backlog_seconds),
            "{:,.0f}",
        ),
        Line(
            f"drain: {n:,} jobs, first enqueue -> last result stored, jobs/s",
            per_second(ours.drain_done, ours.drain_seconds),
            per_second(celery.drain_done, celery.drain_seconds),
            "{:,.0f}",
        ),
        Line("  drain time, s", ours.drain_seconds, celery.drain_seconds, "{:.2f}"),
        Line(
            "  of which enqueueing (workers running), s",
            ours.drain_enqueue_seconds,
            celery.drain_enqueue_seconds,
            "{:.2f}",
        ),
    ]
    cpu_labels = {
        "workers": "  CPU s in the drain: workers (+ scheduler)",
        "moto": "  CPU s in the drain: moto_server",
        "postgres": "  CPU s in the drain: PostgreSQL",
    }
    for key, label in cpu_labels.items():
        if key in ours.drain_cpu or key in celery.drain_cpu:
            lines.append(Line(label, ours.drain_cpu.get(key), celery.drain_cpu.get(key), "{:.1f}"))
    if ours.drain_sqs_requests is not None or celery.drain_sqs_requests is not None:
        lines.append(
            Line(
                "  SQS API requests per job in the drain",
                per_second(ours.drain_sqs_requests or 0, ours.drain_done or None),
                per_second(celery.drain_sqs_requests or 0, celery.drain_done or None),
                "{:.2f}",
            )
        )
    counts = f"{len(ours.latency_ms)} / {len(celery.latency_ms)} jobs"
    lines += [
        Line(
            f"latency enqueue -> start, p50, ms ({counts})",
            pct(ours.latency_ms, 0.5),
            pct(celery.latency_ms, 0.5),
            "{:.1f}",
        ),
        Line(
            "latency enqueue -> start, p99, ms",
            pct(ours.latency_ms, 0.99),
            pct(celery.latency_ms, 0.99),
            "{:.1f}",
        ),
        Line(
            "  of which the scheduler's relay to SQS, p50, ms (Celery sends in delay())",
            pct(ours.relay_ms, 0.5),
            None,
            "{:.1f}",
        ),
    ]
    return lines


def print_table(
    *,
    title: str,
    machine: str,
    lines: list[Line],
    configs: list[str],
    notes: list[str],
) -> None:
    header = ["measurement", "django-asyncjobs", "Celery + SQS", "ratio"]
    cells = [
        [
            line.label,
            "n/a" if line.ours is None else line.fmt.format(line.ours),
            "n/a" if line.celery is None else line.fmt.format(line.celery),
            f"{line.ours / line.celery:.2f}x" if line.ours is not None and line.celery else "n/a",
        ]
        for line in lines
    ]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

    def render(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join([first, *rest]) + " |"

    print()
    print(title)
    print(f"machine: {machine}")
    for config in configs:
        print(config)
    print()
    print(render(header))
    print(render(["-" * widths[0], *("-" * (width - 1) + ":" for width in widths[1:])]))
    for row in cells:
        print(render(row))
    print()
    for note in notes:
        print(note)
    sys.stdout.flush()


# -- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    python = ensure_celery_venv(args.celery_venv) if args.only != "asyncjobs" else None
    run_id = uuid.uuid4().hex[:8]
    ours, celery = Figures(), Figures()
    versions: dict[str, str] = {}
    env = {
        "ASYNCJOBS_BENCH_DB_NAME": args.db_name,
        "ASYNCJOBS_BENCH_QUEUE_PREFIX": f"cmp{run_id}-",
        "ASYNCJOBS_BENCH_WAIT_SECONDS": str(args.wait),
        "ASYNCJOBS_BENCH_LOG_LEVEL": args.log_level,
        **server_env(args),
    }
    with bench_session(
        databases=[args.db_name, args.celery_db_name],
        env=env,
        keep_logs=args.keep_logs,
        logdir_prefix="asyncjobs-compare-",
    ) as session:
        if args.only != "celery":
            ours = measure_asyncjobs(
                args, children=session.children, run_id=run_id, service_cpu=session.service_cpu
            )
        if python is not None:
            celery, versions = measure_celery(
                args,
                children=session.children,
                run_id=run_id,
                service_cpu=session.service_cpu,
                python=python,
            )
    interrupted, machine = session.interrupted, session.machine

    celery_versions = ", ".join(f"{name} {value}" for name, value in versions.items())
    notes = [
        "ratio = django-asyncjobs / Celery + SQS: above 1 means more jobs/s, or more seconds, "
        "ms or requests.",
    ]
    for name, figures in (("django-asyncjobs", ours), ("Celery", celery)):
        for phase, seconds, done, finished in (
            ("backlog", figures.backlog_seconds, figures.backlog_done, figures.backlog_finished),
            ("drain", figures.drain_seconds, figures.drain_done, figures.drain_finished),
        ):
            if seconds is not None and not finished:
                notes.append(
                    f"{name}: the {phase} did NOT finish ({done} of {args.jobs} jobs, then "
                    f"{args.stall_timeout:.0f} s without progress); its rate is over those."
                )
    print_table(
        title=f"django-asyncjobs vs Celery + SQS, N={args.jobs}"
        + (" (interrupted: partial figures)" if interrupted else ""),
        machine=machine,
        lines=table_lines(args.jobs, ours, celery),
        configs=[
            f"Celery side: {celery_versions or 'not measured'}",
            f"django-asyncjobs: {ours.config or 'not measured'}",
            f"Celery: {celery.config or 'not measured'}",
        ],
        notes=notes,
    )
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
