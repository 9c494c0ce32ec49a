#!/usr/bin/env python
"""Measure the memory of the scheduler and the worker over long runs: does anything grow?

Usage (from the repository root, with the project's venv)::

    python benchmarks/memory.py                                  # 1,000,000 relayed, 100,000 run
    python benchmarks/memory.py --relay-jobs 100000 --worker-jobs 20000

1. **Scheduler.** ``--relay-jobs`` due no-op jobs are written with ``delay_many()``; then a fresh
   process runs the scheduler's passes (``Scheduler.run_once()``, flow control off) until every
   job is relayed, into a transport that counts and drops the messages (so the figure is the
   scheduler's memory, not a queue's). Peak RSS (``VmHWM``) and RSS after each 10% are printed.
2. **Worker.** ``--worker-jobs`` jobs are written, then a fresh process runs them through the
   scheduler's relay and a ``Worker`` (``--concurrency 8``) over the in-memory transport, in
   rounds of the scheduler's flow-control size; RSS is sampled every 10% of the jobs. A worker
   whose RSS keeps climbing after warm-up leaks.

PostgreSQL comes from ``tests.services`` unless ``DATABASE_URL`` is set; the database
``bench_memory`` is dropped and recreated. SQS is not involved (see throughput.py for that): the
point here is the Python processes' memory. The script prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.throughput import (  # noqa: E402  (needs the repository root on sys.path)
    drop_database,
    proc_status_kib,
    recreate_database,
)
from tests.services import ensure_services, stop_services  # noqa: E402

BULK_CHUNK = 100_000


def rss_mib(field: str = "VmRSS") -> float:
    """Return this process's resident set (or another /proc/self/status field) in MiB."""
    kib = proc_status_kib(os.getpid(), field)
    return (kib or 0) / 1024


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()


def enqueue(count: int) -> float:
    """Write *count* due no-op jobs with delay_many(), in chunks; return the seconds it took."""
    from benchmarks.benchjobs.jobs import noop

    began = time.perf_counter()
    for start in range(0, count, BULK_CHUNK):
        size = min(BULK_CHUNK, count - start)
        noop.delay_many([((i,), {}) for i in range(start, start + size)])
    return time.perf_counter() - began


def child_relay(total: int) -> None:
    """Relay every due job into a dropping transport; print RSS samples as ``key=value`` lines."""
    setup_django()
    from django_asyncjobs.scheduler import Scheduler
    from django_asyncjobs.transports.base import OutgoingMessage
    from django_asyncjobs.transports.memory import MemoryTransport

    class Dropping(MemoryTransport):
        """Counts what it is sent and keeps nothing."""

        sent = 0

        def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> set[str]:
            Dropping.sent += len(messages)
            return set()

    scheduler = Scheduler(transport=Dropping())
    scheduler.max_queued_per_queue = 0  # flow control off: relay everything
    print(f"start rss={rss_mib():.1f}", flush=True)
    began = time.perf_counter()
    finished = threading.Event()

    def sample() -> None:
        # One pass relays everything (in batches of SCHEDULER_BATCH_SIZE): sample beside it.
        step = max(1, total // 10)
        next_sample = step
        while not finished.wait(0.05):
            if Dropping.sent >= next_sample:
                print(f"sample sent={Dropping.sent} rss={rss_mib():.1f}", flush=True)
                next_sample += step

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    while scheduler.run_once():
        pass
    finished.set()
    sampler.join()
    elapsed = time.perf_counter() - began
    print(f"done sent={Dropping.sent} seconds={elapsed:.1f} peak={rss_mib('VmHWM'):.1f}")


def child_worker(total: int, concurrency: int) -> None:
    """Run *total* jobs through relay + Worker over the memory transport; print RSS samples."""
    setup_django()
    from django_asyncjobs.scheduler import Scheduler
    from django_asyncjobs.transports.memory import MemoryTransport
    from django_asyncjobs.worker import Worker

    transport = MemoryTransport()
    scheduler = Scheduler(transport=transport)
    print(f"start rss={rss_mib():.1f}", flush=True)
    began = time.perf_counter()
    done = 0
    step = max(1, total // 10)
    next_sample = step
    while True:
        if not scheduler.run_once() and not transport.depth("default"):
            break
        worker = Worker(
            transport=transport, queues=["default"], concurrency=concurrency, burst=True
        )
        worker.run()
        done += worker.jobs_started
        if done >= next_sample:
            print(f"sample jobs={done} rss={rss_mib():.1f}", flush=True)
            next_sample += step
    elapsed = time.perf_counter() - began
    print(f"done jobs={done} seconds={elapsed:.1f} peak={rss_mib('VmHWM'):.1f}")


def run_child(mode: str, *args: str, env: dict[str, str]) -> list[dict[str, str]]:
    """Run this script in *mode* in a fresh process; return its ``key=value`` lines as dicts."""
    output = subprocess.run(
        [sys.executable, __file__, mode, *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = []
    for line in output.splitlines():
        kind, *pairs = line.split()
        rows.append({"kind": kind, **dict(p.split("=", 1) for p in pairs)})
    return rows


def report(title: str, rows: list[dict[str, Any]], counter: str) -> None:
    start = next(r for r in rows if r["kind"] == "start")
    done = next(r for r in rows if r["kind"] == "done")
    samples = [r for r in rows if r["kind"] == "sample"]
    print(f"\n### {title}\n")
    print(f"| {counter} | RSS (MiB) |")
    print("| ---: | ---: |")
    print(f"| 0 | {float(start['rss']):.1f} |")
    for sample in samples:
        print(f"| {int(sample[counter]):,} | {float(sample['rss']):.1f} |")
    print(
        f"\n{int(done[counter]):,} in {float(done['seconds']):.1f} s; "
        f"peak RSS (VmHWM) {float(done['peak']):.1f} MiB"
    )
    if len(samples) >= 3:
        warm, last = float(samples[1]["rss"]), float(samples[-1]["rss"])
        print(f"growth after warm-up (2nd sample to last): {last - warm:+.1f} MiB")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/memory.py", description=__doc__)
    parser.add_argument("--relay-jobs", type=int, default=1_000_000)
    parser.add_argument("--worker-jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--db-name", default="bench_memory")
    args = parser.parse_args(argv)

    started = ensure_services(durable=True)
    admin_url = os.environ["DATABASE_URL"]
    env = {
        **os.environ,
        "ASYNCJOBS_BENCH_DB_NAME": args.db_name,
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        "ASYNCJOBS_BENCH_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO_ROOT),
    }
    try:
        recreate_database(admin_url, args.db_name)
        os.environ.update(env)
        setup_django()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        if args.relay_jobs:
            seconds = enqueue(args.relay_jobs)
            print(
                f"wrote {args.relay_jobs:,} jobs with delay_many() in {seconds:.1f} s", flush=True
            )
            rows = run_child("_relay", str(args.relay_jobs), env=env)
            report(f"Scheduler relaying {args.relay_jobs:,} due jobs", rows, "sent")
        if args.worker_jobs:
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute("TRUNCATE asyncjobs_job CASCADE")
            enqueue(args.worker_jobs)  # here, so the worker's process holds none of it
            rows = run_child("_worker", str(args.worker_jobs), str(args.concurrency), env=env)
            report(
                f"Worker (--concurrency {args.concurrency}) running {args.worker_jobs:,} jobs",
                rows,
                "jobs",
            )
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(admin_url, args.db_name)
        stop_services(started)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_relay":
        child_relay(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_worker":
        child_worker(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(main())
