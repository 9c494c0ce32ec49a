#!/usr/bin/env python
"""Split each job's enqueue -> start latency into its hops, from timestamps of every call.

Usage (from the repository root, with the project's venv)::

    python benchmarks/latency_hops.py                      # 200 jobs, 2 worker processes x 8
    python benchmarks/latency_hops.py --processes 1 --concurrency 1 --latency-jobs 400

Starts ``runscheduler`` and ``runworker`` as ``throughput.py`` does, with
``benchmarks/hoptrace`` on their ``PYTHONPATH``: its ``sitecustomize`` times the scheduler's
wait for a NOTIFY, the SQS sends and receives and the worker's claims, per job id. Then it
trickles jobs one at a time (``throughput.py``'s trickle: one every 20-50 ms) and prints, per
hop, the median, p90 and p99 over the jobs in milliseconds:

1. commit -> scheduler awake: ``created_at`` to the end of the scheduler's wait for a NOTIFY
   (the enqueuing transaction, its commit, the NOTIFY, a pass of the scheduler still running);
2. awake -> relay transaction: to ``enqueued_at`` (the statements of the pass before it);
3. relay transaction -> send: the relay's statements that lock and mark the job;
4. SendMessageBatch: the boto3 call, from its start to its return;
5. send returned -> received: to the return of the worker's ReceiveMessage (negative when the
   long poll returned first);
6. received -> claim: the worker hands the message to its main loop;
7. claim -> ``started_at``: the claim statement's start, which stamps ``started_at``;

and the total ``started_at - created_at`` (what ``compare.py`` and ``throughput.py`` report),
plus the claim call's duration, which includes waiting for the relay's commit. Database times
and ``time.time()`` read the same clock. It asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import tempfile
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
    Row,
    add_measurement_options,
    bench_session,
    log,
    percentile,
    positive_int,
    print_table,
    trickle_latencies,
)

HOOK_DIR = Path(__file__).resolve().parent / "hoptrace"
HOPS = (
    "1. commit -> scheduler awake",
    "2. awake -> relay transaction",
    "3. relay transaction -> send",
    "4. SendMessageBatch",
    "5. send returned -> received",
    "6. received -> claim",
    "7. claim -> started_at",
    "total: started_at - created_at",
    "claim call (waits for the relay's commit)",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/latency_hops.py",
        description="Split enqueue -> start latency into its hops (timestamps of every call).",
    )
    parser.add_argument("--processes", type=positive_int, default=2, help="Default 2.")
    parser.add_argument("--concurrency", type=positive_int, default=8, help="Default 8.")
    parser.add_argument(
        "--prepared-statements",
        action="store_true",
        help="Run with ASYNCJOBS['PREPARED_STATEMENTS'] = True.",
    )
    parser.add_argument("--db-name", default="bench_asyncjobs_hops")
    add_measurement_options(parser)
    return parser.parse_args(argv)


def read_trace(directory: Path) -> tuple[list[float], dict[str, dict[str, dict[str, Any]]]]:
    """Return the scheduler's wake-up times and, per job id, its first call of each kind."""
    woke: list[float] = []
    calls: dict[str, dict[str, dict[str, Any]]] = {}
    for path in directory.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            call = json.loads(line)
            if call["kind"] == "woke":
                woke.append(call["t1"])
            for job_id in call["ids"]:
                calls.setdefault(job_id, {}).setdefault(call["kind"], call)
    woke.sort()
    return woke, calls


def job_times() -> dict[str, tuple[float, float, float]]:
    """``created_at``, ``enqueued_at``, ``started_at`` (epoch seconds) of every started job."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id::text, EXTRACT(EPOCH FROM created_at)::float8, "
            "EXTRACT(EPOCH FROM enqueued_at)::float8, EXTRACT(EPOCH FROM started_at)::float8 "
            "FROM asyncjobs_job WHERE started_at IS NOT NULL"
        )
        return {row[0]: (row[1], row[2], row[3]) for row in cursor.fetchall()}


def hop_spans(
    woke: list[float],
    calls: dict[str, dict[str, dict[str, Any]]],
    times: dict[str, tuple[float, float, float]],
) -> dict[str, list[float]]:
    """Milliseconds of each hop, over the jobs whose every call was traced."""
    spans: dict[str, list[float]] = {hop: [] for hop in HOPS}
    for job_id, (created, enqueued, started) in times.items():
        traced = calls.get(job_id, {})
        if not {"send", "receive", "claim"} <= traced.keys():
            continue
        index = bisect.bisect_left(woke, created)
        if index == len(woke):
            continue
        send, receive, claim = traced["send"], traced["receive"], traced["claim"]
        edges = [
            created,
            woke[index],
            enqueued,
            send["t0"],
            send["t1"],
            receive["t1"],
            claim["t0"],
            started,
        ]
        for hop, start, end in zip(HOPS, edges, edges[1:], strict=False):
            spans[hop].append((end - start) * 1000)
        spans["total: started_at - created_at"].append((started - created) * 1000)
        spans["claim call (waits for the relay's commit)"].append(
            (claim["t1"] - claim["t0"]) * 1000
        )
    return spans


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"hops{run_id}-"
    trace_dir = Path(tempfile.mkdtemp(prefix="asyncjobs-hops-"))
    env = {
        "ASYNCJOBS_BENCH_DB_NAME": args.db_name,
        "ASYNCJOBS_BENCH_QUEUE_PREFIX": prefix,
        "ASYNCJOBS_BENCH_LOG_LEVEL": args.log_level,
    }
    if args.prepared_statements:
        env["ASYNCJOBS_BENCH_PREPARED"] = "1"
    rows: list[Row] = []
    with bench_session(databases=[args.db_name], env=env, keep_logs=args.keep_logs) as session:
        from django_asyncjobs.conf import get_settings
        from django_asyncjobs.transports.sqs import SQSTransport

        transport = SQSTransport(get_settings())
        for queue in QUEUES:
            transport.ensure_queue(queue)  # created here: in no measurement
        transport.close()
        children = session.children
        hooked = {
            "ASYNCJOBS_BENCH_TRACE_DIR": str(trace_dir),
            "PYTHONPATH": os.pathsep.join((str(HOOK_DIR), children.env["PYTHONPATH"])),
        }
        scheduler = children.start("scheduler", ["runscheduler"], extra_env=hooked)
        worker = children.start(
            "worker",
            [
                "runworker",
                "--processes",
                str(args.processes),
                "--concurrency",
                str(args.concurrency),
            ],
            extra_env=hooked,
        )
        children.wait_for_log(scheduler, "scheduler started")
        children.wait_for_log(worker, "worker started")
        time.sleep(1.0)  # the workers' first short polls pass; their long polls begin
        log(f"trickle of {args.latency_jobs} jobs")
        trickle_latencies(
            args.latency_jobs,
            pause_ms=args.latency_interval_ms,
            seed=args.seed,
            stall_timeout=args.stall_timeout,
        )
        children.stop(worker, scheduler, grace=30.0)
        woke, calls = read_trace(trace_dir)
        spans = hop_spans(woke, calls, job_times())
        for hop, values in spans.items():
            values.sort()
            figures = (
                f"{percentile(values, 0.5):.1f} / {percentile(values, 0.9):.1f} / "
                f"{percentile(values, 0.99):.1f}"
                if values
                else "n/a"
            )
            rows.append(Row(hop, figures))
        traced = len(spans["total: started_at - created_at"])
        rows.append(Row("jobs traced", f"{traced} of {args.latency_jobs}"))
    title = (
        f"enqueue -> start by hop, ms (p50 / p90 / p99), runworker --processes {args.processes} "
        f"--concurrency {args.concurrency}"
        + (", PREPARED_STATEMENTS=True" if args.prepared_statements else "")
    )
    print_table(title, session.machine, rows)
    return 130 if session.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
