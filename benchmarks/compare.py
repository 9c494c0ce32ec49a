#!/usr/bin/env python
"""Measure django-asyncjobs, procrastinate and Celery + SQS side by side: one run, one table.

Usage (from the repository root, with the project's venv)::

    python benchmarks/compare.py                          # N=2000, all three, once
    python benchmarks/compare.py --jobs 500 --only asyncjobs,procrastinate --repeat 3
    python benchmarks/compare.py --help

PostgreSQL (fsync on) and moto_server are started through ``tests.services`` unless
``DATABASE_URL`` and ``AWS_ENDPOINT_URL_SQS`` point at running ones. Each system gets a database
of its own on that server (dropped and recreated) and SQS queues with prefixes of its own.
procrastinate and Celery are not dependencies of the project: each runs from a git-ignored venv
of its own (``benchmarks/.procrastinate-venv``, ``benchmarks/.celery-venv``, made on first use,
with this venv's Django and psycopg), through the public interfaces only: ``defer()``,
``batch_defer()`` and ``manage.py procrastinate worker``; ``delay()`` and ``celery worker``;
``delay()``, ``delay_many()``, ``runscheduler`` and ``runworker`` here.

For N no-op jobs, one system after the other (``--repeat`` times, the systems interleaved; the
table shows medians):

1. enqueue: N ``delay()`` / ``defer()`` in autocommit from one process, no worker running
   (Celery: with its PENDING row written before the message is sent, as our row is);
2. bulk: one ``delay_many()`` / ``batch_defer()`` of ``--bulk`` jobs (Celery has none);
3. drain, for three worker configurations (one process at concurrency 1, one process at its best
   concurrency, the best configuration with two processes): the workers started and warmed up,
   then N jobs enqueued in autocommit as fast as one process can; first enqueue to last finish
   (database clock), with CPU seconds per process kind and SQS requests per job (moto's log);
4. latency: on the idle workers of the best configuration, ``--latency-jobs`` jobs one at a
   time every 20-50 ms; enqueue to start, p50 and p99 (ours: ``started_at - created_at``;
   procrastinate: its ``deferred`` -> ``started`` events; Celery: the task's own clock).

Progress goes to stderr, the table to stdout. It asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.compare_celery import (  # noqa: E402  (needs the repository root on sys.path)
    CELERY_APP,
    CELERY_SETTINGS_MODULE,
    add_celery_options,
    add_server_options,
    delete_sqs_queues,
    ensure_celery_venv,
    ensure_venv,
    run_phase,
    server_env,
    server_note,
)
from benchmarks.throughput import (  # noqa: E402
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

PROCRASTINATE_SETTINGS_MODULE = "benchmarks.procrastinate_project.settings"
PROCRASTINATE_MEASURE = "benchmarks.procrastinate_project.measure"
CELERY_MEASURE = "benchmarks.celery_project.measure"
DEFAULT_PROCRASTINATE_VENV = REPO_ROOT / "benchmarks" / ".procrastinate-venv"
PROCRASTINATE_PACKAGES = ("procrastinate[django]",)
SYSTEMS = ("asyncjobs", "procrastinate", "celery")
TITLES = {
    "asyncjobs": "django-asyncjobs",
    "procrastinate": "procrastinate",
    "celery": "Celery + SQS",
}
#: The drain configurations, in the order they run: (key, label).
DRAINS = (
    ("one", "drain, 1 worker process, concurrency 1"),
    ("one_best", "drain, 1 worker process, best concurrency"),
    ("best", "drain, best configuration (2 processes; Celery: prefork)"),
)
#: The drain configurations as the header names them.
CONFIG_NAMES = {
    "one": "1 process, concurrency 1",
    "one_best": "1 process, best concurrency",
    "best": "best configuration",
}
#: Jobs run through freshly started workers before each drain is measured.
WARM_UP_JOBS = 20


# -- arguments ------------------------------------------------------------------------------------


def systems_list(value: str) -> list[str]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in SYSTEMS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(SYSTEMS)}, not {value!r}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/compare.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--jobs", type=positive_int, default=2000, help="N (default 2000).")
    parser.add_argument(
        "--bulk", type=positive_int, default=10_000, help="Jobs in the bulk call (default 10000)."
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=1,
        help="Run every system this many times, interleaved; the table shows medians (default 1).",
    )
    parser.add_argument(
        "--only",
        type=systems_list,
        default=list(SYSTEMS),
        metavar="SYSTEM[,SYSTEM...]",
        help=f"Systems to measure, among {', '.join(SYSTEMS)} (default all).",
    )
    ours = parser.add_argument_group("django-asyncjobs")
    ours.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        help="runworker --concurrency of the 'best' configurations (default 8).",
    )
    add_server_options(ours)
    procrastinate = parser.add_argument_group("procrastinate")
    procrastinate.add_argument(
        "--procrastinate-concurrency",
        type=positive_int,
        default=10,
        help="procrastinate worker --concurrency of the 'best' configurations (default 10).",
    )
    procrastinate.add_argument(
        "--procrastinate-venv",
        type=Path,
        default=DEFAULT_PROCRASTINATE_VENV,
        help=f"Virtual environment for procrastinate, made if missing (default "
        f"{DEFAULT_PROCRASTINATE_VENV}).",
    )
    add_celery_options(parser.add_argument_group("Celery"))
    add_measurement_options(parser)
    return parser.parse_args(argv)


# -- results --------------------------------------------------------------------------------------


@dataclasses.dataclass
class DrainFigures:
    """One drain: N jobs enqueued with the workers idle, until the last one finished."""

    seconds: float | None = None
    done: int = 0
    finished: bool = False
    enqueue_seconds: float | None = None
    #: CPU seconds during the drain per process kind: worker, scheduler, moto, postgres.
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    sqs_requests: int | None = None

    @property
    def rate(self) -> float | None:
        return self.done / self.seconds if self.seconds else None


@dataclasses.dataclass
class Run:
    """Everything one system measured in one repeat."""

    enqueue_seconds: float | None = None
    bulk_seconds: float | None = None
    drains: dict[str, DrainFigures] = dataclasses.field(default_factory=dict)
    latency_ms: list[float] = dataclasses.field(default_factory=list)


# -- one driver per system ------------------------------------------------------------------------


class System:
    """What compare.py needs of a job system; one subclass each.

    ``start`` returns the started processes by kind ("worker", "scheduler"), ready for work.
    """

    key = ""
    bulk_supported = True
    #: Whether SQS requests and moto's CPU count for this system (procrastinate has no SQS).
    uses_sqs = True

    def __init__(self, args: argparse.Namespace, children: Children, run_id: str) -> None:
        self.args = args
        self.children = children
        self.run_id = run_id
        self.versions: dict[str, str] = {}
        self.configs: dict[str, str] = {}
        #: One line about the settings every configuration shares.
        self.note = ""
        self.starts = 0

    def setup(self) -> None:
        """Prepare the database; fill ``versions`` and ``configs``."""

    def enqueue(self, n: int) -> float:
        raise NotImplementedError

    def bulk(self, n: int) -> float | None:
        return None

    def start(self, drain: str) -> dict[str, list[Child]]:
        raise NotImplementedError

    def warm_up(self) -> None:
        raise NotImplementedError

    def drain(self, n: int) -> DrainFigures:
        raise NotImplementedError

    def latency(self) -> list[float]:
        raise NotImplementedError

    def stop(self, processes: dict[str, list[Child]]) -> None:
        self.children.stop(*(c for group in processes.values() for c in group), grace=30.0)


class AsyncJobs(System):
    key = "asyncjobs"

    def setup(self) -> None:
        self.configs = {
            drain: f"runscheduler + runworker --processes {p} --concurrency {c}"
            for drain, _ in DRAINS
            for p, c in [self._shape(drain)]
        }
        self.versions = {"django-asyncjobs": version("django-asyncjobs")}
        self.note = f"{server_note(self.args)}, other settings default"

    def _shape(self, drain: str) -> tuple[int, int]:
        return {
            "one": (1, 1),
            "one_best": (1, self.args.concurrency),
            "best": (2, self.args.concurrency),
        }[drain]

    def enqueue(self, n: int) -> float:
        from benchmarks.benchjobs.jobs import noop

        for i in range(WARM_UP_JOBS):
            noop.delay(i)
        truncate_jobs()
        return time_delay(n)

    def bulk(self, n: int) -> float:
        from benchmarks.benchjobs.jobs import noop

        noop.delay_many([((i,), {}) for i in range(WARM_UP_JOBS)])
        truncate_jobs()
        log(f"delay_many(): {n:,} jobs in one call")
        arguments: list[tuple[tuple[int], dict[str, object]]] = [((i,), {}) for i in range(n)]
        started = time.perf_counter()
        noop.delay_many(arguments)
        elapsed = time.perf_counter() - started
        truncate_jobs()
        return elapsed

    def start(self, drain: str) -> dict[str, list[Child]]:
        from django_asyncjobs.conf import get_settings
        from django_asyncjobs.transports.sqs import SQSTransport

        self.starts += 1
        prefix = f"cmp{self.run_id}a{self.starts}-"
        transport = SQSTransport(dataclasses.replace(get_settings(), queue_prefix=prefix))
        try:
            for queue in QUEUES:
                transport.ensure_queue(queue)  # created here: in no measurement
        finally:
            transport.close()
        extra_env = {"ASYNCJOBS_BENCH_QUEUE_PREFIX": prefix}
        processes, concurrency = self._shape(drain)
        scheduler = self.children.start(
            f"asyncjobs-scheduler-{drain}", ["runscheduler"], extra_env=extra_env
        )
        worker = self.children.start(
            f"asyncjobs-worker-{drain}",
            ["runworker", "--processes", str(processes), "--concurrency", str(concurrency)],
            extra_env=extra_env,
        )
        started = {"worker": [worker], "scheduler": [scheduler]}
        try:
            self.children.wait_for_log(scheduler, "scheduler started")
            self.children.wait_for_log(worker, "worker started")
        except BaseException:
            self.stop(started)
            raise
        return started

    def warm_up(self) -> None:
        from benchmarks.benchjobs.jobs import noop

        truncate_jobs()
        for i in range(WARM_UP_JOBS):
            noop.delay(i)
        wait_for_jobs(WARM_UP_JOBS, stall_timeout=self.args.stall_timeout)
        truncate_jobs()

    def drain(self, n: int) -> DrainFigures:
        result = measure_drain(n, stall_timeout=self.args.stall_timeout)
        return DrainFigures(
            seconds=result.db_seconds,
            done=result.counts.get("succeeded", 0) + result.counts.get("failed", 0),
            finished=result.finished,
            enqueue_seconds=result.enqueue_seconds,
        )

    def latency(self) -> list[float]:
        spans = trickle_latencies(
            self.args.latency_jobs,
            pause_ms=self.args.latency_interval_ms,
            seed=self.args.seed,
            stall_timeout=self.args.stall_timeout,
        )
        return [total for total, _relay, _pickup, _run in spans]

    def stop(self, processes: dict[str, list[Child]]) -> None:
        # The worker's graceful stop waits out its long poll.
        self.children.stop(
            *(c for group in processes.values() for c in group), grace=self.args.wait + 20
        )


class SideSystem(System):
    """A system that runs from a venv of its own: its ``measure`` module answers each phase."""

    module = ""

    def __init__(
        self, args: argparse.Namespace, children: Children, run_id: str, python: Path
    ) -> None:
        super().__init__(args, children, run_id)
        self.python = python
        self.env: dict[str, str] = {}

    def phase(self, phase: str, *options: str) -> dict[str, Any]:
        return run_phase(self.python, self.module, phase, list(options), env=self.env)

    def common(self, n: int) -> list[str]:
        return ["--jobs", str(n), "--stall-timeout", str(self.args.stall_timeout)]

    def latency(self) -> list[float]:
        low, high = self.args.latency_interval_ms
        answer = self.phase(
            "latency",
            *self.common(self.args.latency_jobs),
            "--pause-ms",
            f"{low:g}-{high:g}",
            "--seed",
            str(self.args.seed),
        )
        return [float(ms) for ms in answer["latency_ms"]]

    def drain(self, n: int) -> DrainFigures:
        answer = self.phase("drain", *self.common(n))
        return DrainFigures(
            seconds=answer["seconds"],
            done=answer["done"],
            finished=answer["finished"],
            enqueue_seconds=answer["enqueue_seconds"],
        )


class Procrastinate(SideSystem):
    key = "procrastinate"
    module = PROCRASTINATE_MEASURE
    uses_sqs = False

    def setup(self) -> None:
        self.env = {
            **self.children.env,
            "DJANGO_SETTINGS_MODULE": PROCRASTINATE_SETTINGS_MODULE,
            "PROCRASTINATE_BENCH_DB_NAME": self.args.procrastinate_db_name,
            "PROCRASTINATE_BENCH_LOG_LEVEL": self.args.log_level,
        }
        self.versions = self.phase("setup")["versions"]
        self.configs = {
            drain: f"{p} x manage.py procrastinate worker --concurrency {c}"
            for drain, _ in DRAINS
            for p, c in [self._shape(drain)]
        }
        self.note = "listen/notify on (its default), jobs kept after they finish (its default)"

    def _shape(self, drain: str) -> tuple[int, int]:
        c = self.args.procrastinate_concurrency
        return {"one": (1, 1), "one_best": (1, c), "best": (2, c)}[drain]

    def enqueue(self, n: int) -> float:
        return float(self.phase("enqueue", *self.common(n))["seconds"])

    def bulk(self, n: int) -> float:
        return float(self.phase("bulk", *self.common(n))["seconds"])

    def start(self, drain: str) -> dict[str, list[Child]]:
        processes, concurrency = self._shape(drain)
        workers = [
            self.children.start(
                f"procrastinate-worker-{drain}-{k}",
                ["procrastinate", "worker", "--concurrency", str(concurrency)],
                extra_env=self.env,
                program=[str(self.python), "-m", "django"],
            )
            for k in range(processes)
        ]
        started = {"worker": workers}
        try:
            for worker in workers:
                self.children.wait_for_log(worker, "Starting worker on")
        except BaseException:
            self.stop(started)
            raise
        return started

    def warm_up(self) -> None:
        self.phase("warmup", *self.common(WARM_UP_JOBS))


class Celery(SideSystem):
    key = "celery"
    module = CELERY_MEASURE
    bulk_supported = False

    def setup(self) -> None:
        self.env = {
            **self.children.env,
            "DJANGO_SETTINGS_MODULE": CELERY_SETTINGS_MODULE,
            "CELERY_BENCH_DB_NAME": self.args.celery_db_name,
            "CELERY_BENCH_POLLING_INTERVAL": str(self.args.celery_polling_interval),
            "CELERY_BENCH_WAIT_SECONDS": str(self.args.celery_wait),
            "CELERY_BENCH_CONN_MAX_AGE": "none",
        }
        self.versions = self.phase("setup")["versions"]
        self.configs = {
            drain: "celery worker " + " ".join(self._options(drain)) for drain, _ in DRAINS
        }
        self.note = (
            f"polling_interval {self.args.celery_polling_interval:g}, wait_time_seconds "
            f"{self.args.celery_wait}, CONN_MAX_AGE none; result backend django-db, PENDING "
            "row before publish"
        )

    def _options(self, drain: str) -> list[str]:
        pool = {
            "one": ["--pool", "solo"],
            "one_best": ["--pool", "threads", "--concurrency", str(self.args.celery_concurrency)],
            "best": ["--pool", "prefork", "--concurrency", str(self.args.celery_concurrency)],
        }[drain]
        return [*pool, "--prefetch-multiplier", str(self.args.celery_prefetch_multiplier)]

    def enqueue(self, n: int) -> float:
        prefix = f"cmp{self.run_id}ce-"
        try:
            answer = run_phase(
                self.python,
                self.module,
                "enqueue",
                [*self.common(n), "--variants", "stored"],
                env={**self.env, "CELERY_BENCH_QUEUE_PREFIX": prefix},
            )
        finally:
            delete_sqs_queues(prefix)
        return float(answer["stored"])

    def start(self, drain: str) -> dict[str, list[Child]]:
        self.starts += 1
        self.env["CELERY_BENCH_QUEUE_PREFIX"] = f"cmp{self.run_id}c{self.starts}-"
        worker = self.children.start(
            f"celery-worker-{drain}",
            [
                "-A",
                CELERY_APP,
                "worker",
                *self._options(drain),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                self.args.log_level,
                "--hostname",
                f"bench{self.run_id}{self.starts}@%h",
            ],
            extra_env=self.env,
            program=[str(self.python.parent / "celery")],
        )
        started = {"worker": [worker]}
        try:
            self.children.wait_for_log(worker, " ready.", timeout=60)
        except BaseException:
            self.stop(started)
            raise
        return started

    def warm_up(self) -> None:
        self.phase("fill", *self.common(WARM_UP_JOBS))
        self.phase("wait", *self.common(WARM_UP_JOBS))

    def stop(self, processes: dict[str, list[Child]]) -> None:
        self.children.stop(
            *(c for group in processes.values() for c in group), grace=self.args.celery_wait + 20
        )


# -- one run of one system ------------------------------------------------------------------------


def run_system(system: System, args: argparse.Namespace, service_cpu: ServiceCpu) -> Run:
    """Enqueue, bulk, the three drains and the latency trickle of one system."""
    title = TITLES[system.key]
    run = Run()
    log(f"{title}: enqueue of {args.jobs:,} in autocommit")
    run.enqueue_seconds = system.enqueue(args.jobs)
    if system.bulk_supported:
        log(f"{title}: bulk enqueue of {args.bulk:,}")
        run.bulk_seconds = system.bulk(args.bulk)
    for drain, label in DRAINS:
        log(f"{title}: {label}: starting {system.configs[drain]}")
        processes = system.start(drain)
        try:
            system.warm_up()
            time.sleep(1.0)  # idle: every worker waits for work, as between requests
            for group in processes.values():
                for child in group:
                    child.cpu_at_start = child.tree_cpu()
            services_before = service_cpu.sample()
            requests_before = service_cpu.sqs_requests()
            log(f"{title}: drain of {args.jobs:,} jobs")
            figures = system.drain(args.jobs)
            figures.cpu = {
                kind: sum(child.cpu() for child in group) for kind, group in processes.items()
            }
            for name, value in service_cpu.sample().items():
                if name in services_before and (system.uses_sqs or name != "moto"):
                    figures.cpu[name] = value - services_before[name]
            requests_after = service_cpu.sqs_requests()
            if system.uses_sqs and requests_before is not None and requests_after is not None:
                figures.sqs_requests = requests_after - requests_before
            run.drains[drain] = figures
            if not figures.finished:
                log(f"{title}: the drain did NOT finish ({figures.done} of {args.jobs})")
            if drain == "best" and args.latency_jobs > 0:
                time.sleep(1.0)
                log(f"{title}: latency trickle of {args.latency_jobs} jobs")
                run.latency_ms = system.latency()
        finally:
            log(f"{title}: stopping {system.configs[drain]}")
            system.stop(processes)
    return run


# -- the table ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Line:
    label: str
    #: One value per system key (None: not measured or not applicable).
    values: dict[str, float | None]
    fmt: str
    #: Whether the ratios are meaningful for this line.
    ratio: bool = True


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def table_lines(args: argparse.Namespace, runs: dict[str, list[Run]]) -> list[Line]:
    n = args.jobs

    def each(pick: Callable[[Run], float | None]) -> dict[str, float | None]:
        return {
            key: median_of([pick(run) for run in system_runs]) for key, system_runs in runs.items()
        }

    def per_second(count: int, seconds: float | None) -> float | None:
        return count / seconds if seconds else None

    def pct(values: list[float], fraction: float) -> float | None:
        return percentile(sorted(values), fraction) if values else None

    lines = [
        Line(
            f"enqueue: {n:,} delay()/defer() in autocommit, jobs/s (Celery: + PENDING row)",
            each(lambda r: per_second(n, r.enqueue_seconds)),
            "{:,.0f}",
        ),
        Line(
            f"bulk: delay_many()/batch_defer() of {args.bulk:,}, jobs/s",
            each(lambda r: per_second(args.bulk, r.bulk_seconds)),
            "{:,.0f}",
        ),
    ]
    kinds = (
        ("worker", "worker processes"),
        ("scheduler", "scheduler"),
        ("moto", "moto_server"),
        ("postgres", "PostgreSQL"),
    )

    def of_drain(
        drain: str, pick: Callable[[DrainFigures], float | None]
    ) -> dict[str, float | None]:
        return each(lambda run: pick(run.drains.get(drain) or DrainFigures()))

    def cpu_of(figures: DrainFigures, *, kind: str) -> float | None:
        return figures.cpu.get(kind)

    def per_job(figures: DrainFigures) -> float | None:
        if figures.sqs_requests is None or not figures.done:
            return None
        return figures.sqs_requests / figures.done

    for drain, label in DRAINS:
        lines.append(Line(f"{label}, jobs/s", of_drain(drain, lambda f: f.rate), "{:,.0f}"))
        lines.append(
            Line(
                "  of which enqueueing (workers running), s",
                of_drain(drain, lambda f: f.enqueue_seconds),
                "{:.2f}",
            )
        )
        lines.append(Line("  SQS requests per job", of_drain(drain, per_job), "{:.2f}"))
        for kind, kind_label in kinds:
            values = of_drain(drain, functools.partial(cpu_of, kind=kind))
            if any(v is not None for v in values.values()):
                lines.append(Line(f"  CPU s: {kind_label}", values, "{:.1f}"))
    # Goal 1 compares "the best configuration of each": whichever of the three drains was
    # fastest for that system in that run, which need not be the two-process one.
    lines.append(
        Line(
            "drain, each system's best of the three configurations above, jobs/s",
            each(lambda r: max((f.rate for f in r.drains.values() if f.rate), default=None)),
            "{:,.0f}",
        )
    )
    counts = " / ".join(
        f"{median_of([len(r.latency_ms) for r in system_runs]) or 0:.0f}"
        for system_runs in runs.values()
    )
    lines += [
        Line(
            f"latency enqueue -> start, p50, ms ({counts} jobs, best configuration)",
            each(lambda r: pct(r.latency_ms, 0.5)),
            "{:.1f}",
        ),
        Line(
            "latency enqueue -> start, p95, ms", each(lambda r: pct(r.latency_ms, 0.95)), "{:.1f}"
        ),
        Line(
            "latency enqueue -> start, p99, ms", each(lambda r: pct(r.latency_ms, 0.99)), "{:.1f}"
        ),
    ]
    return lines


def render_table(lines: list[Line], systems: list[str]) -> list[str]:
    header = ["measurement", *(TITLES[key] for key in systems)]
    others = [key for key in systems if key != "asyncjobs"] if "asyncjobs" in systems else []
    header += [f"ours / {TITLES[key].split()[0]}" for key in others]
    cells = []
    for line in lines:
        row = [line.label]
        for key in systems:
            value = line.values.get(key)
            row.append("n/a" if value is None else line.fmt.format(value))
        ours = line.values.get("asyncjobs")
        for key in others:
            theirs = line.values.get(key)
            row.append(f"{ours / theirs:.2f}x" if ours is not None and theirs else "n/a")
        cells.append(row)
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

    def render(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join([first, *rest]) + " |"

    return [
        render(header),
        render(["-" * widths[0], *("-" * (width - 1) + ":" for width in widths[1:])]),
        *(render(row) for row in cells),
    ]


# -- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.db_name = "bench_compare_asyncjobs"
    args.procrastinate_db_name = "bench_compare_procrastinate"
    args.celery_db_name = "bench_compare_celery"
    selected = [key for key in SYSTEMS if key in args.only]
    pythons: dict[str, Path] = {}
    if "procrastinate" in selected:
        pythons["procrastinate"] = ensure_venv(
            args.procrastinate_venv,
            name="procrastinate",
            packages=PROCRASTINATE_PACKAGES,
            imports="import procrastinate.contrib.django",
        )
    if "celery" in selected:
        pythons["celery"] = ensure_celery_venv(args.celery_venv)
    run_id = uuid.uuid4().hex[:8]
    systems: list[System] = []
    runs: dict[str, list[Run]] = {key: [] for key in selected}
    began = time.monotonic()
    env = {
        "ASYNCJOBS_BENCH_DB_NAME": args.db_name,
        "ASYNCJOBS_BENCH_QUEUE_PREFIX": f"cmp{run_id}-",
        "ASYNCJOBS_BENCH_WAIT_SECONDS": str(args.wait),
        "ASYNCJOBS_BENCH_LOG_LEVEL": args.log_level,
        **server_env(args),
    }
    databases = [args.db_name, args.procrastinate_db_name, args.celery_db_name]
    with bench_session(
        databases=databases, env=env, keep_logs=args.keep_logs, logdir_prefix="asyncjobs-compare-"
    ) as session:
        for key in selected:
            system: System
            if key == "asyncjobs":
                system = AsyncJobs(args, session.children, run_id)
            elif key == "procrastinate":
                system = Procrastinate(args, session.children, run_id, pythons[key])
            else:
                system = Celery(args, session.children, run_id, pythons[key])
            system.setup()
            systems.append(system)
        for repeat in range(args.repeat):
            for system in systems:
                log(f"== {TITLES[system.key]}, run {repeat + 1} of {args.repeat}")
                runs[system.key].append(run_system(system, args, session.service_cpu))
    interrupted = session.interrupted
    log(f"done in {time.monotonic() - began:.0f} s")
    measured = [key for key in selected if runs[key]]
    if not measured:
        return 130 if interrupted else 1
    print()
    print(
        f"django-asyncjobs vs procrastinate vs Celery + SQS, N={args.jobs:,}, "
        f"{args.repeat} run(s) each, medians"
        + (" (interrupted: partial figures)" if interrupted else "")
    )
    print(f"machine: {session.machine}")
    for system in systems:
        versions = ", ".join(f"{name} {value}" for name, value in system.versions.items())
        print(f"{TITLES[system.key]}: {versions}; {system.note}")
        for drain, name in CONFIG_NAMES.items():
            print(f"  {name}: {system.configs[drain]}")
    print()
    for line in render_table(table_lines(args, {k: runs[k] for k in measured}), measured):
        print(line)
    print()
    print(
        "ratio = django-asyncjobs / the other: above 1 means more jobs/s, or more seconds, ms, "
        "requests or CPU seconds. Drains: first enqueue -> last finish (database clock; Celery: "
        "the producer's clock to the last date_done); CPU s over the drain; SQS requests "
        "counted from moto's log (all clients)."
    )
    for key in measured:
        for run_number, run in enumerate(runs[key], 1):
            for drain, label in DRAINS:
                figures = run.drains.get(drain)
                if figures is not None and not figures.finished:
                    print(
                        f"{TITLES[key]}, run {run_number}: {label} did NOT finish "
                        f"({figures.done} of {args.jobs} jobs); its rate is over those."
                    )
    sys.stdout.flush()
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
