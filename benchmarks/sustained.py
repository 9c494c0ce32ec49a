#!/usr/bin/env python
"""Measure django-asyncjobs as work grows: a long run through one host, and a big jobs table.

Usage (from the repository root, with the project's venv)::

    python benchmarks/sustained.py                                   # 200,000 jobs; 5,000,000
    python benchmarks/sustained.py --jobs 20000 --preload 500000     # a quick run
    python benchmarks/sustained.py --mode growth --jobs 50000
    python benchmarks/sustained.py --help

PostgreSQL (fsync on) and moto_server are started through ``tests.services`` unless
``DATABASE_URL`` and ``AWS_ENDPOINT_URL_SQS`` point at running ones; the database
``bench_sustained`` is dropped and recreated. Only public interfaces drive the jobs
(``delay()``, ``delay_many()``, ``runscheduler``, ``runworker``, ``asyncjobs purge``), so the
script keeps working when the internals change.

Two modes (``--mode both`` runs them one after the other, on one database):

``growth``
    ``--jobs`` no-op jobs through one ``runscheduler`` + ``runworker`` (the best configuration);
    a producer tops the backlog up with ``delay_many()`` chunks whenever fewer than
    ``--backlog`` jobs are unfinished. The drain rate per tenth of the jobs (by ``finished_at``)
    and the ratio of the last tenth to the first; table and index sizes, dead tuples and
    autovacuum activity at each tenth.
``preload``
    On the empty table, then with ``--preload`` finished jobs in it (cloned in SQL from a real
    finished job, spread over ``--spread-days`` days, then ``VACUUM ANALYZE``): ``delay()``
    jobs/s in autocommit, a drain of ``--drain-jobs`` and the enqueue-to-start latency of a
    trickle, with the ratio per figure. Then what retention does: one prune pass of a
    ``runscheduler`` with ``RETENTION_DAYS``, and ``asyncjobs purge --older-than``, each with
    the sizes and dead tuples after.

Progress goes to stderr, the tables to stdout. It asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.compare_celery import (  # noqa: E402  (repository root)
    add_server_options,
    server_env,
    server_note,
)
from benchmarks.side_measure import wait_for  # noqa: E402
from benchmarks.throughput import (  # noqa: E402  (needs the repository root on sys.path)
    QUEUES,
    Child,
    Children,
    ServiceCpu,
    add_measurement_options,
    bench_session,
    log,
    percentile,
    positive_int,
    truncate_jobs,
)

UNFINISHED = ("scheduled", "queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
#: Rows per INSERT of the preload (each its own transaction, with a progress line).
PRELOAD_BATCH = 250_000


# -- arguments ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/sustained.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--mode", choices=["growth", "preload", "both"], default="both", help="(default both)"
    )
    parser.add_argument(
        "--jobs", type=positive_int, default=200_000, help="growth: jobs (default 200000)."
    )
    parser.add_argument(
        "--backlog",
        type=positive_int,
        default=5_000,
        help="growth: the producer keeps at most this many jobs unfinished (default 5000).",
    )
    parser.add_argument(
        "--chunk", type=positive_int, default=1_000, help="growth: delay_many() size (1000)."
    )
    parser.add_argument(
        "--preload",
        type=positive_int,
        default=5_000_000,
        help="preload: finished jobs in the table (default 5000000).",
    )
    parser.add_argument(
        "--spread-days",
        type=float,
        default=30.0,
        help="preload: the finished jobs' ages spread over this many days, all older than one "
        "day (default 30).",
    )
    parser.add_argument(
        "--enqueue-jobs",
        type=positive_int,
        default=2_000,
        help="preload: delay() calls timed (default 2000).",
    )
    parser.add_argument(
        "--drain-jobs", type=positive_int, default=2_000, help="preload: drain of N (2000)."
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=29.0,
        help="preload: RETENTION_DAYS of the prune pass and purge's --older-than (default 29: "
        "about the oldest 1/30 of a 30-day spread).",
    )
    parser.add_argument(
        "--processes", type=positive_int, default=2, help="runworker --processes (default 2)."
    )
    parser.add_argument(
        "--concurrency", type=positive_int, default=8, help="runworker --concurrency (default 8)."
    )
    add_server_options(parser)
    add_measurement_options(parser)
    parser.add_argument("--db-name", default="bench_sustained", help="Database to (re)create.")
    parser.add_argument("--keep-db", action="store_true", help="Leave the database behind.")
    return parser.parse_args(argv)


# -- SQL helpers ----------------------------------------------------------------------------------


def sql(query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall()) if cursor.description else []


def job_table() -> str:
    from django_asyncjobs.models import Job

    return Job._meta.db_table


def referencing_tables() -> list[tuple[str, str]]:
    """(table, column) of every foreign key to the jobs table (the attempt history)."""
    rows = sql(
        "SELECT c.conrelid::regclass::text, a.attname FROM pg_constraint AS c "
        "JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
        "WHERE c.contype = 'f' AND c.confrelid = %s::regclass",
        [job_table()],
    )
    return [(str(t), str(c)) for t, c in rows]


def db_now() -> Any:
    ((now,),) = sql("SELECT clock_timestamp()")
    return now


def count_status(statuses: Sequence[str], since: Any = None) -> int:
    query = f"SELECT count(*) FROM {job_table()} WHERE status = ANY(%s)"
    params: list[Any] = [list(statuses)]
    if since is not None:
        query += " AND created_at >= %s"
        params.append(since)
    ((count,),) = sql(query, params)
    return int(count)


# -- table statistics -----------------------------------------------------------------------------


@dataclasses.dataclass
class TableStats:
    """Sizes and vacuum activity of one table, read from PostgreSQL's catalog and statistics."""

    table: str
    rows: int
    total_bytes: int
    heap_bytes: int
    index_bytes: int
    indexes: dict[str, int]
    live: int
    dead: int
    autovacuums: int
    autoanalyzes: int
    vacuums: int
    last_autovacuum: Any
    last_autoanalyze: Any


def table_stats() -> list[TableStats]:
    """Stats of the jobs table and the tables that reference it."""
    # Each backend flushes its counters at most once a second when idle (this one too: its
    # DELETEs count), and a reader caches what it read; so flush, wait, and forget the cache.
    with contextlib.suppress(Exception):  # pg_stat_force_next_flush() is PostgreSQL 15+
        sql("SELECT pg_stat_force_next_flush()")
    time.sleep(1.1)
    sql("SELECT pg_stat_clear_snapshot()")
    result = []
    for table in [job_table(), *(t for t, _ in referencing_tables())]:
        ((rows,),) = sql(f"SELECT count(*) FROM {table}")
        ((total, heap, index_total),) = sql(
            "SELECT pg_total_relation_size(%s::regclass), pg_relation_size(%s::regclass), "
            "pg_indexes_size(%s::regclass)",
            [table, table, table],
        )
        indexes = {
            str(name): int(size)
            for name, size in sql(
                "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
                "WHERE relid = %s::regclass ORDER BY indexrelname",
                [table],
            )
        }
        ((live, dead, autovac, autoanalyze, vac, last_av, last_aa),) = sql(
            "SELECT n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count, vacuum_count, "
            "last_autovacuum, last_autoanalyze FROM pg_stat_user_tables WHERE relid = "
            "%s::regclass",
            [table],
        )
        result.append(
            TableStats(
                table=table,
                rows=int(rows),
                total_bytes=int(total),
                heap_bytes=int(heap),
                index_bytes=int(index_total),
                indexes=indexes,
                live=int(live),
                dead=int(dead),
                autovacuums=int(autovac),
                autoanalyzes=int(autoanalyze),
                vacuums=int(vac),
                last_autovacuum=last_av,
                last_autoanalyze=last_aa,
            )
        )
    return result


def mib(size: int) -> str:
    return f"{size / 1024 / 1024:,.1f}"


def when(value: Any) -> str:
    return "never" if value is None else value.strftime("%H:%M:%S")


def print_stats(title: str, snapshots: list[tuple[str, list[TableStats]]]) -> None:
    """One table: a row per (moment, table); then the index sizes at each moment."""
    print()
    print(title)
    print()
    print(
        "| moment | table | rows | total MiB | heap MiB | indexes MiB | live (est.) | dead "
        "| autovacuums | autoanalyzes | vacuums | last autovacuum | last autoanalyze |"
    )
    print(
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
    )
    for moment, stats in snapshots:
        for s in stats:
            print(
                f"| {moment} | {s.table} | {s.rows:,} | {mib(s.total_bytes)} | "
                f"{mib(s.heap_bytes)} | {mib(s.index_bytes)} | {s.live:,} | {s.dead:,} | "
                f"{s.autovacuums} | {s.autoanalyzes} | {s.vacuums} | {when(s.last_autovacuum)} | "
                f"{when(s.last_autoanalyze)} |"
            )
    names = [name for _, stats in snapshots[:1] for s in stats for name in s.indexes]
    if not names:
        return
    print()
    print("| index, MiB | " + " | ".join(moment for moment, _ in snapshots) + " |")
    print("| --- |" + " ---: |" * len(snapshots))
    for name in names:
        sizes = []
        for _, stats in snapshots:
            size = next((s.indexes[name] for s in stats if name in s.indexes), None)
            sizes.append("n/a" if size is None else mib(size))
        print(f"| {name} | " + " | ".join(sizes) + " |")
    sys.stdout.flush()


# -- processes ------------------------------------------------------------------------------------


class Host:
    """One runscheduler + one runworker (the best configuration), on queues of their own."""

    def __init__(self, args: argparse.Namespace, children: Children, run_id: str) -> None:
        self.args = args
        self.children = children
        self.run_id = run_id
        self.starts = 0

    @contextlib.contextmanager
    def running(self, *, worker: bool = True, **extra_env: str) -> Iterator[list[Child]]:
        from django_asyncjobs.conf import get_settings
        from django_asyncjobs.transports.sqs import SQSTransport

        self.starts += 1
        prefix = f"sus{self.run_id}{self.starts}-"
        transport = SQSTransport(dataclasses.replace(get_settings(), queue_prefix=prefix))
        try:
            for queue in QUEUES:
                transport.ensure_queue(queue)
        finally:
            transport.close()
        env = {"ASYNCJOBS_BENCH_QUEUE_PREFIX": prefix, **extra_env}
        started = [self.children.start(f"scheduler-{self.starts}", ["runscheduler"], extra_env=env)]
        if worker:
            started.append(
                self.children.start(
                    f"worker-{self.starts}",
                    [
                        "runworker",
                        "--processes",
                        str(self.args.processes),
                        "--concurrency",
                        str(self.args.concurrency),
                    ],
                    extra_env=env,
                )
            )
        try:
            self.children.wait_for_log(started[0], "scheduler started")
            if worker:
                self.children.wait_for_log(started[1], "worker started")
            yield started
        finally:
            self.children.stop(*started, grace=self.args.wait + 20)

    def config(self) -> str:
        return (
            f"runscheduler + runworker --processes {self.args.processes} --concurrency "
            f"{self.args.concurrency}; {server_note(self.args)}"
        )


def wait_finished(n: int, since: Any, *, stall_timeout: float, what: str) -> bool:
    """Poll until the N jobs created since *since* are final (counting the unfinished ones,
    which an index finds whatever the table's size)."""
    return wait_for(
        lambda: n - count_status(UNFINISHED, since),
        n,
        stall_timeout=stall_timeout,
        log=lambda message: log(f"  {what}: {message.strip()}"),
    )


def warm_up(args: argparse.Namespace) -> None:
    from benchmarks.benchjobs.jobs import noop

    since = db_now()
    for i in range(20):
        noop.delay(i)
    wait_finished(20, since, stall_timeout=args.stall_timeout, what="warm-up")


# -- growth ---------------------------------------------------------------------------------------


def run_growth(args: argparse.Namespace, host: Host, service_cpu: ServiceCpu) -> None:
    from benchmarks.benchjobs.jobs import noop

    truncate_jobs()
    snapshots = [("before", table_stats())]
    tenth = max(1, args.jobs // 10)
    with host.running() as processes:
        warm_up(args)
        time.sleep(1.0)
        cpu_before = {child.name: child.tree_cpu() for child in processes}
        services_before = service_cpu.sample()
        since = db_now()
        log(f"growth: {args.jobs:,} jobs, backlog up to {args.backlog:,}, chunks {args.chunk:,}")
        enqueued = 0
        next_snapshot = tenth
        last_left, last_progress, last_report = -1, time.monotonic(), time.monotonic()
        began = time.monotonic()
        while True:
            left = count_status(UNFINISHED, since)
            while enqueued < args.jobs and left < args.backlog:
                size = min(args.chunk, args.jobs - enqueued)
                noop.delay_many([((enqueued + i,), {}) for i in range(size)])
                enqueued += size
                left += size
            done = enqueued - left
            now = time.monotonic()
            if done >= next_snapshot and next_snapshot < args.jobs:
                snapshots.append((f"{done * 100 // args.jobs}% done", table_stats()))
                next_snapshot += tenth
            if enqueued >= args.jobs and left == 0:
                break
            if left != last_left:
                last_left, last_progress = left, now
            elif now - last_progress > args.stall_timeout:
                log(f"growth: no progress for {args.stall_timeout:.0f} s; {left} unfinished")
                break
            if now - last_report >= 10:
                last_report = now
                log(f"growth: {done:,}/{args.jobs:,} finished, {done / (now - began):,.0f} jobs/s")
            time.sleep(0.2)
        cpu = {child.name: child.tree_cpu() - cpu_before[child.name] for child in processes}
        services_after = service_cpu.sample()
    snapshots.append(("after", table_stats()))

    fractions = [k / 10 for k in range(11)]
    rows = sql(
        f"SELECT count(*), percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY finished_at), "
        f"min(created_at) FROM {job_table()} WHERE created_at >= %s AND finished_at IS NOT NULL",
        [fractions, since],
    )
    ((finished, bounds, first_created),) = rows
    print()
    print(f"growth: {args.jobs:,} jobs through one host, {host.config()}")
    print(
        f"producer: delay_many() of {args.chunk:,} whenever fewer than {args.backlog:,} unfinished"
    )
    print()
    print("| tenth | jobs | seconds | jobs/s |")
    print("| --- | ---: | ---: | ---: |")
    rates = []
    start = first_created
    for k in range(10):
        end = bounds[k + 1]
        seconds = (end - start).total_seconds()
        jobs = int(finished * (k + 1) / 10) - int(finished * k / 10)
        rate = jobs / seconds if seconds > 0 else float("nan")
        rates.append(rate)
        print(f"| {k + 1} | {jobs:,} | {seconds:.1f} | {rate:,.0f} |")
        start = end
    total = (bounds[-1] - first_created).total_seconds()
    print(f"| all | {finished:,} | {total:.1f} | {finished / total:,.0f} |")
    print()
    print(f"last tenth / first tenth: {rates[-1] / rates[0]:.2f} (goal: >= 0.90)")
    cpu_parts = [f"{name} {seconds:.1f}" for name, seconds in cpu.items()]
    cpu_parts += [
        f"{name} {services_after[name] - before:.1f}"
        for name, before in services_before.items()
        if name in services_after
    ]
    print(f"CPU seconds over the run: {', '.join(cpu_parts)}")
    print_stats("growth: the tables at each tenth", snapshots)


# -- preload --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Figures:
    enqueue_rate: float | None = None
    drain_rate: float | None = None
    drain_finished: bool = False
    latency_ms: list[float] = dataclasses.field(default_factory=list)


def measure_set(args: argparse.Namespace, host: Host, label: str) -> Figures:
    """delay() rate, a drain and a latency trickle, touching only jobs created from now on."""
    import random

    from benchmarks.benchjobs.jobs import noop

    figures = Figures()
    for i in range(20):  # warm up the connection and code paths
        noop.delay(i)
    since = db_now()
    log(f"{label}: delay() x {args.enqueue_jobs:,} in autocommit")
    started = time.perf_counter()
    for i in range(args.enqueue_jobs):
        noop.delay(i)
    figures.enqueue_rate = args.enqueue_jobs / (time.perf_counter() - started)
    # Not run: no scheduler is up. The same DELETE on both tables, empty or not.
    sql(f"DELETE FROM {job_table()} WHERE name = 'bench.noop' AND status = 'scheduled'")

    with host.running():
        warm_up(args)
        time.sleep(1.0)
        log(f"{label}: drain of {args.drain_jobs:,}")
        since = db_now()
        for i in range(args.drain_jobs):
            noop.delay(i)
        figures.drain_finished = wait_finished(
            args.drain_jobs, since, stall_timeout=args.stall_timeout, what=f"{label} drain"
        )
        ((count, seconds),) = sql(
            f"SELECT count(*), EXTRACT(EPOCH FROM max(finished_at) - min(created_at)) "
            f"FROM {job_table()} WHERE created_at >= %s AND finished_at IS NOT NULL",
            [since],
        )
        figures.drain_rate = int(count) / float(seconds) if seconds else None

        if args.latency_jobs > 0:
            time.sleep(1.0)
            log(f"{label}: latency trickle of {args.latency_jobs}")
            rng = random.Random(args.seed)
            since = db_now()
            for i in range(args.latency_jobs):
                noop.delay(i)
                time.sleep(rng.uniform(*args.latency_interval_ms) / 1000)
            wait_finished(
                args.latency_jobs, since, stall_timeout=args.stall_timeout, what="trickle"
            )
            figures.latency_ms = [
                float(ms)
                for (ms,) in sql(
                    f"SELECT EXTRACT(EPOCH FROM started_at - created_at) * 1000 "
                    f"FROM {job_table()} WHERE created_at >= %s AND started_at IS NOT NULL",
                    [since],
                )
            ]
    return figures


def clone_sql(
    table: str,
    overrides: dict[str, str],
    *,
    alias: str = "t",
    origin: str = "t.created_at",
    skip: Sequence[str] = (),
) -> str:
    """``INSERT INTO table (cols) SELECT <override or alias.col>, ...`` for every column of
    *table*, so that a column added later is copied from the template row too.

    Timestamps keep their offset from *origin* (the template job's ``created_at``), moved to
    the clone's ``ts.at``; other uuids get a new value per clone (``i``). Example::

        clone_sql("asyncjobs_job", {"id": "gen_random_uuid()"})   # "INSERT INTO ... SELECT ..."
    """
    columns = [
        (str(name), str(data_type))
        for name, data_type in sql(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = %s ORDER BY ordinal_position",
            [table],
        )
        if name not in skip
    ]
    select = []
    for name, data_type in columns:
        if name in overrides:
            select.append(overrides[name])
        elif data_type == "uuid":
            # Tokens: unique per row where the template has one.
            select.append(
                f"CASE WHEN {alias}.{name} IS NULL THEN NULL "
                f"ELSE md5({alias}.{name}::text || i)::uuid END"
            )
        elif data_type.startswith("timestamp"):
            # The template's offset from its creation, moved to the clone's creation time.
            select.append(f"{alias}.{name} - {origin} + ts.at")
        else:
            select.append(f"{alias}.{name}")
    names = ", ".join(name for name, _ in columns)
    return f"INSERT INTO {table} ({names}) SELECT {', '.join(select)}"


def preload(args: argparse.Namespace, template_id: Any) -> float:
    """Insert ``--preload`` finished jobs (and their attempts), cloned from a real finished
    job; return the seconds it took, VACUUM ANALYZE included."""
    table = job_table()
    salt = uuid.uuid4().hex[:8]
    spread = args.spread_days * 86400 / args.preload
    common = (
        f" FROM {table} AS t, generate_series(%(low)s, %(high)s) AS i, "
        f"LATERAL (SELECT now() - interval '1 day' - i * {spread!r} * interval '1 second' "
        f"AS at) AS ts WHERE t.id = %(template)s"
    )
    jobs = clone_sql(
        table,
        {
            "id": f"md5('{salt}' || i)::uuid",
            "args": "jsonb_build_array(i)",
            "name": "'bench.preloaded_' || (i %% 40)",
            "queue": "(ARRAY['high', 'default', 'default', 'low'])[1 + i %% 4]",
            "status": "CASE WHEN i %% 50 = 0 THEN 'failed' ELSE t.status END",
            "error": "CASE WHEN i %% 50 = 0 THEN 'ValueError: order ' || i || ' has no lines' "
            "ELSE t.error END",
            "traceback": "CASE WHEN i %% 50 = 0 THEN 'Traceback (most recent call last): ...' "
            "ELSE t.traceback END",
        },
    )
    children = [
        clone_sql(
            child_table,
            {column: f"md5('{salt}' || i)::uuid"},
            alias="c",
            origin="j.created_at",
            skip=["id"],
        )
        + f" FROM {child_table} AS c JOIN {table} AS j ON j.id = c.{column}, "
        "generate_series(%(low)s, %(high)s) AS i, "
        f"LATERAL (SELECT now() - interval '1 day' - i * {spread!r} * interval '1 second' "
        f"AS at) AS ts WHERE j.id = %(template)s"
        for child_table, column in referencing_tables()
    ]
    began = time.perf_counter()
    for low in range(1, args.preload + 1, PRELOAD_BATCH):
        high = min(low + PRELOAD_BATCH - 1, args.preload)
        params = {"low": low, "high": high, "template": template_id}
        sql(jobs + common, params)
        for statement in children:
            sql(statement, params)
        elapsed = time.perf_counter() - began
        log(f"preload: {high:,}/{args.preload:,} jobs in {elapsed:.0f} s")
    log("preload: VACUUM ANALYZE")
    for name in [table, *(t for t, _ in referencing_tables())]:
        sql(f"VACUUM ANALYZE {name}")
    return time.perf_counter() - began


def run_preload(args: argparse.Namespace, host: Host, children: Children) -> None:
    truncate_jobs()
    snapshots = [("empty", table_stats())]
    empty = measure_set(args, host, "empty table")
    snapshots.append(("empty, after measuring", table_stats()))
    # The clones copy a real finished job (and its attempt), so every column, also one added
    # later, holds what the library writes. The measured jobs stay: finished jobs too.
    ((template_id,),) = sql(
        f"SELECT id FROM {job_table()} WHERE status = 'succeeded' ORDER BY finished_at LIMIT 1"
    )
    log(f"preload: {args.preload:,} finished jobs over {args.spread_days:g} days")
    seconds = preload(args, template_id)
    snapshots.append((f"{args.preload:,} preloaded", table_stats()))
    loaded = measure_set(args, host, f"{args.preload:,} preloaded")
    snapshots.append(("preloaded, after measuring", table_stats()))
    retention_rows = retention(args, host, children, snapshots)
    print_preload(args, host, empty, loaded, seconds, retention_rows)
    print_stats("preload: the tables", snapshots)


def retention(
    args: argparse.Namespace,
    host: Host,
    children: Children,
    snapshots: list[tuple[str, list[TableStats]]],
) -> list[str]:
    """One prune pass of a scheduler with RETENTION_DAYS, then ``asyncjobs purge``."""
    notes = []
    table = job_table()
    older = args.retention_days * 86400
    ((eligible,),) = sql(
        f"SELECT count(*) FROM {table} WHERE status = ANY(%s) AND finished_at < now() - "
        f"%s * interval '1 second'",
        [list(FINISHED), older],
    )
    notes.append(f"finished jobs older than {args.retention_days:g} days: {eligible:,}")
    log(f"retention: a runscheduler with RETENTION_DAYS={args.retention_days:g}")
    ((before,),) = sql(f"SELECT count(*) FROM {table}")
    with host.running(worker=False, ASYNCJOBS_BENCH_RETENTION_DAYS=str(args.retention_days)) as (
        scheduler,
    ):
        with contextlib.suppress(RuntimeError):
            children.wait_for_log(scheduler, "pruned finished jobs", timeout=60)
        time.sleep(1.0)
    ((after,),) = sql(f"SELECT count(*) FROM {table}")
    pruned = before - after
    notes.append(
        f"scheduler with RETENTION_DAYS={args.retention_days:g}: its first pass deleted "
        f"{pruned:,} jobs; while its batches come back full it prunes one a second (one a "
        f"minute once caught up): at most {pruned * 3600:,} jobs an hour, {pruned:,} jobs/s"
    )
    snapshots.append(("after one prune pass", table_stats()))

    log(f"retention: asyncjobs purge --older-than {args.retention_days:g}d")
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "asyncjobs",
            "purge",
            "--older-than",
            f"{args.retention_days:g}d",
        ],
        cwd=REPO_ROOT,
        env=children.env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    ((left,),) = sql(f"SELECT count(*) FROM {table}")
    last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    notes.append(
        f"asyncjobs purge --older-than {args.retention_days:g}d: exit {result.returncode}, "
        f"{after - left:,} jobs deleted in {seconds:.1f} s ({last})"
    )
    snapshots.append(("after purge", table_stats()))
    log("retention: VACUUM (what autovacuum does once enough rows are dead)")
    for name in [table, *(t for t, _ in referencing_tables())]:
        sql(f"VACUUM {name}")
    snapshots.append(("after VACUUM", table_stats()))
    notes.append(
        "VACUUM makes the dead rows' space reusable; the files keep their size (only VACUUM "
        "FULL or a rewrite gives it back)"
    )
    return notes


def print_preload(
    args: argparse.Namespace,
    host: Host,
    empty: Figures,
    loaded: Figures,
    preload_seconds: float,
    notes: list[str],
) -> None:
    def pct(values: list[float], fraction: float) -> float | None:
        return percentile(sorted(values), fraction) if values else None

    lines = [
        (
            f"delay() x {args.enqueue_jobs:,} in autocommit, jobs/s",
            empty.enqueue_rate,
            loaded.enqueue_rate,
            "{:,.0f}",
        ),
        (f"drain of {args.drain_jobs:,}, jobs/s", empty.drain_rate, loaded.drain_rate, "{:,.0f}"),
        (
            "latency enqueue -> start, p50, ms",
            pct(empty.latency_ms, 0.5),
            pct(loaded.latency_ms, 0.5),
            "{:.1f}",
        ),
        (
            "latency enqueue -> start, p99, ms",
            pct(empty.latency_ms, 0.99),
            pct(loaded.latency_ms, 0.99),
            "{:.1f}",
        ),
    ]
    print()
    print(f"preload: {args.preload:,} finished jobs vs an empty table, {host.config()}")
    print(
        f"preloaded in {preload_seconds:.0f} s (INSERT ... SELECT generate_series, VACUUM ANALYZE)"
    )
    print()
    print(f"| measurement | empty table | {args.preload:,} finished jobs | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for label, a, b, fmt in lines:
        ratio = f"{b / a:.2f}" if a and b is not None else "n/a"
        print(
            f"| {label} | {'n/a' if a is None else fmt.format(a)} | "
            f"{'n/a' if b is None else fmt.format(b)} | {ratio} |"
        )
    print()
    print("ratio = preloaded / empty (goal: within 10 %: 0.90-1.10 for rates, <= 1.10 for ms).")
    for flag, figures in (("empty", empty), ("preloaded", loaded)):
        if not figures.drain_finished:
            print(f"the {flag} drain did NOT finish")
    for note in notes:
        print(note)
    sys.stdout.flush()


# -- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = uuid.uuid4().hex[:6]
    began = time.monotonic()
    env = {
        "ASYNCJOBS_BENCH_DB_NAME": args.db_name,
        "ASYNCJOBS_BENCH_QUEUE_PREFIX": f"sus{run_id}-",
        "ASYNCJOBS_BENCH_WAIT_SECONDS": str(args.wait),
        "ASYNCJOBS_BENCH_LOG_LEVEL": args.log_level,
        **server_env(args),
    }
    with bench_session(
        databases=[args.db_name],
        env=env,
        keep_db=args.keep_db,
        keep_logs=args.keep_logs,
        logdir_prefix="asyncjobs-sustained-",
    ) as session:
        print(f"machine: {session.machine}")
        sys.stdout.flush()
        host = Host(args, session.children, run_id)
        if args.mode in ("growth", "both"):
            run_growth(args, host, session.service_cpu)
        if args.mode in ("preload", "both"):
            run_preload(args, host, session.children)
    log(f"done in {time.monotonic() - began:.0f} s")
    return 130 if session.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
