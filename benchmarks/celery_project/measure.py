"""Celery-side measurements of ``benchmarks/compare_celery.py``, run in the Celery venv.

Usage (the script runs it; from the repository root)::

    benchmarks/.celery-venv/bin/python -m benchmarks.celery_project.measure setup
    benchmarks/.celery-venv/bin/python -m benchmarks.celery_project.measure enqueue --jobs 1000
    benchmarks/.celery-venv/bin/python -m benchmarks.celery_project.measure drain --jobs 1000
    benchmarks/.celery-venv/bin/python -m benchmarks.celery_project.measure latency --jobs 200
    benchmarks/.celery-venv/bin/python -m benchmarks.celery_project.measure fill --jobs 1000
    benchmarks/.celery-venv/bin/python -m benchmarks.celery_project.measure wait --jobs 1000

Each phase prints one JSON object on stdout (progress goes to stderr). ``drain``, ``latency`` and
``wait`` need a Celery worker consuming the queues of ``CELERY_BENCH_QUEUE_PREFIX``; the
comparison script starts it (after ``fill``, for the backlog). Like ``throughput.py``, this
prints figures and asserts nothing about timings.

Celery stores nothing when a task is sent: the ``django-db`` result backend writes a row when the
task ends. django-asyncjobs writes its row in ``delay()``, so for a like-for-like comparison
``delay()`` here also writes the task's ``PENDING`` row first (a ``before_task_publish``
receiver, the usual recipe for seeing queued tasks in django-celery-results); ``enqueue`` also
times plain ``delay()`` without it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from benchmarks.side_measure import logger, run
from benchmarks.side_measure import wait_for as side_wait_for

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.celery_project.settings")


log = logger("celery")


def store_pending(
    sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    """Write the task's row before its message is sent, as django-asyncjobs' ``delay()`` does."""
    from celery import states  # type: ignore[import-not-found,unused-ignore]
    from django_celery_results.models import (  # type: ignore[import-not-found,unused-ignore]
        TaskResult,
    )

    assert headers is not None
    TaskResult.objects.create(
        task_id=headers["id"],
        task_name=headers.get("task", sender),
        task_args=headers.get("argsrepr"),
        task_kwargs=headers.get("kwargsrepr"),
        status=states.PENDING,
    )


@contextlib.contextmanager
def pending_rows(enabled: bool = True) -> Iterator[None]:
    from celery.signals import before_task_publish  # type: ignore[import-not-found,unused-ignore]

    if not enabled:
        yield
        return
    before_task_publish.connect(store_pending, weak=False)
    try:
        yield
    finally:
        before_task_publish.disconnect(store_pending)


def truncate_results() -> None:
    from django.db import connection
    from django_celery_results.models import (  # type: ignore[import-not-found,unused-ignore]
        TaskResult,
    )

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {connection.ops.quote_name(TaskResult._meta.db_table)}")


def succeeded() -> int:
    from django_celery_results.models import (  # type: ignore[import-not-found,unused-ignore]
        TaskResult,
    )

    count: int = TaskResult.objects.filter(status="SUCCESS").count()
    return count


def wait_for(n: int, *, stall_timeout: float) -> bool:
    """Poll until N tasks succeeded; False when none finished for ``stall_timeout`` seconds."""
    return side_wait_for(succeeded, n, stall_timeout=stall_timeout, log=log)


# -- phases ---------------------------------------------------------------------------------------


def phase_setup(args: argparse.Namespace) -> dict[str, Any]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import pycurl  # type: ignore[import-not-found,import-untyped,unused-ignore]

    versions = {
        name: importlib.metadata.version(name)
        for name in ("celery", "kombu", "django-celery-results", "pycurl", "django", "boto3")
    }
    # pycurl.version reads like "PycURL/7.49.0 libcurl/8.14.1 OpenSSL/3.5.1 ...".
    for part in pycurl.version.split():
        if part.startswith("libcurl/"):
            versions["libcurl"] = part.partition("/")[2]
    return {"versions": versions}


#: The shallow variant sends every this many tasks to a new queue: django-asyncjobs keeps at most
#: MAX_QUEUED_PER_QUEUE (here 50) messages in SQS, and moto's SendMessage slows down with the depth
#: of the queue (each call computes the queue's attributes by scanning its messages).
SHALLOW_QUEUE_DEPTH = 50


def phase_enqueue(args: argparse.Namespace) -> dict[str, Any]:
    """Time N ``delay()`` calls per variant, each into empty queues that no worker consumes.

    ``apply_async((i,), queue=...)`` is what ``delay(i)`` calls; the queue only routes the message.
    The script deletes this phase's queues (they have a prefix of their own) afterwards.
    """
    from benchmarks.celery_project.tasks import noop

    variants = {
        "stored": (True, lambda i: "enqueue-stored"),
        "plain": (False, lambda i: "enqueue-plain"),
        "stored_shallow": (True, lambda i: f"enqueue-shallow-{i // SHALLOW_QUEUE_DEPTH}"),
    }
    result: dict[str, Any] = {}
    for variant, (with_row, queue_of) in variants.items():
        if args.variants and variant not in args.variants:
            continue
        with pending_rows(with_row):
            for i in range(20):  # warm up the connections
                noop.apply_async((i,), queue="enqueue-warm-up")
            truncate_results()
            log(f"delay(): {args.jobs} calls ({variant})")
            started = time.perf_counter()
            for i in range(args.jobs):
                noop.apply_async((i,), queue=queue_of(i))
            result[variant] = time.perf_counter() - started
        truncate_results()
    return result


def phase_drain(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection
    from django_celery_results.models import (  # type: ignore[import-not-found,unused-ignore]
        TaskResult,
    )

    from benchmarks.celery_project.tasks import noop

    truncate_results()
    with pending_rows():
        first = time.time()
        for i in range(args.jobs):
            noop.delay(i)
    enqueue_seconds = time.time() - first
    log(f"  enqueued {args.jobs} tasks in {enqueue_seconds:.2f} s; waiting for the worker")
    finished = wait_for(args.jobs, stall_timeout=args.stall_timeout)
    table = connection.ops.quote_name(TaskResult._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXTRACT(EPOCH FROM max(date_done)) FROM {table}")
        (last_done,) = cursor.fetchone()
    return {
        "finished": finished,
        "done": succeeded(),
        "seconds": float(last_done) - first if last_done is not None else None,
        "enqueue_seconds": enqueue_seconds,
    }


def phase_fill(args: argparse.Namespace) -> dict[str, Any]:
    """Enqueue N tasks for a worker that is not running yet (the backlog measurement)."""
    from benchmarks.celery_project.tasks import noop

    truncate_results()
    with pending_rows():
        started = time.perf_counter()
        for i in range(args.jobs):
            noop.delay(i)
    return {"enqueue_seconds": time.perf_counter() - started}


def phase_wait(args: argparse.Namespace) -> dict[str, Any]:
    """Wait for the backlog; return the span from the first task's start to the last result."""
    from django_celery_results.models import (  # type: ignore[import-not-found,unused-ignore]
        TaskResult,
    )

    finished = wait_for(args.jobs, stall_timeout=args.stall_timeout)
    rows = list(TaskResult.objects.filter(status="SUCCESS").values_list("result", "date_done"))
    seconds = None
    if rows:
        first_start = min(float(json.loads(result)) for result, _ in rows)
        seconds = max(done.timestamp() for _, done in rows) - first_start
    truncate_results()
    return {"finished": finished, "done": len(rows), "seconds": seconds}


def phase_latency(args: argparse.Namespace) -> dict[str, Any]:
    from django_celery_results.models import (  # type: ignore[import-not-found,unused-ignore]
        TaskResult,
    )

    from benchmarks.celery_project.tasks import noop

    truncate_results()
    rng = random.Random(args.seed)
    low, high = args.pause_ms
    log(f"  trickling {args.jobs} tasks, one every {low:g}-{high:g} ms")
    sent: dict[str, float] = {}
    with pending_rows():
        for i in range(args.jobs):
            enqueued = time.time()
            sent[noop.delay(i).id] = enqueued
            time.sleep(rng.uniform(low, high) / 1000)
    wait_for(args.jobs, stall_timeout=args.stall_timeout)
    latencies_ms = []
    run_ms = []
    for task_id, result, done in TaskResult.objects.filter(status="SUCCESS").values_list(
        "task_id", "result", "date_done"
    ):
        started = float(json.loads(result))
        latencies_ms.append((started - sent[task_id]) * 1000)
        run_ms.append((done.timestamp() - started) * 1000)
    return {"latency_ms": latencies_ms, "run_ms": run_ms}


PHASES = {
    "setup": phase_setup,
    "enqueue": phase_enqueue,
    "drain": phase_drain,
    "fill": phase_fill,
    "latency": phase_latency,
    "wait": phase_wait,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variants",
        type=lambda value: value.split(","),
        default=None,
        help="enqueue: the variants to time, e.g. stored,plain (default all).",
    )


def set_current_app() -> None:
    from benchmarks.celery_project.celery_app import app

    app.set_current()


def main(argv: Sequence[str] | None = None) -> int:
    return run(
        "python -m benchmarks.celery_project.measure",
        PHASES,
        argv,
        add_arguments=add_arguments,
        after_setup=set_current_app,
    )


if __name__ == "__main__":
    sys.exit(main())
