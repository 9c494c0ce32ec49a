"""The procrastinate side of ``benchmarks/compare.py``: one phase per run, one JSON line out.

Run from ``benchmarks/.procrastinate-venv`` (which has procrastinate), from the repository
root, with the environment ``benchmarks/procrastinate_project/settings.py`` reads::

    python -m benchmarks.procrastinate_project.measure enqueue --jobs 1000

Phases: ``setup`` (migrate, versions), ``enqueue`` (N ``defer()`` in autocommit), ``bulk`` (one
``batch_defer()`` of N), ``warmup`` (a few jobs through the running workers), ``drain`` (N
``defer()`` with the workers running, until all finished), ``latency`` (a trickle of jobs on
idle workers). Times come from procrastinate's ``procrastinate_events`` table (database clock):
``deferred`` -> ``started`` for the latency, first ``deferred`` -> last ``succeeded`` for the
drain, as django-asyncjobs' ``created_at``, ``started_at`` and ``finished_at``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.side_measure import logger, run
from benchmarks.side_measure import wait_for as side_wait_for

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.procrastinate_project.settings")


log = logger("procrastinate")


def sql(query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall()) if cursor.description else []


def truncate() -> None:
    # CASCADE: the events (and periodic defers) reference the jobs.
    sql("TRUNCATE procrastinate_jobs CASCADE")


def finished() -> int:
    ((count,),) = sql(
        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('succeeded', 'failed')"
    )
    return int(count)


def wait_for(n: int, *, stall_timeout: float) -> bool:
    """Poll until N jobs finished; False when none finished for ``stall_timeout`` seconds."""
    return side_wait_for(finished, n, stall_timeout=stall_timeout, log=log)


def event_span(first: str, last: str) -> float | None:
    """Seconds from the earliest *first* event to the latest *last* event."""
    ((seconds,),) = sql(
        "SELECT EXTRACT(EPOCH FROM max(at) FILTER (WHERE type = %s) "
        "- min(at) FILTER (WHERE type = %s)) FROM procrastinate_events",
        [last, first],
    )
    return None if seconds is None else float(seconds)


# -- phases ---------------------------------------------------------------------------------------


def phase_setup(args: argparse.Namespace) -> dict[str, Any]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    versions = {
        name: importlib.metadata.version(name) for name in ("procrastinate", "django", "psycopg")
    }
    return {"versions": versions}


def phase_enqueue(args: argparse.Namespace) -> dict[str, Any]:
    """Time N ``noop.defer(i=i)`` in autocommit (one transaction each), no worker running."""
    from benchmarks.procrastinate_project.tasks import noop

    for i in range(20):  # warm up the connection and code paths
        noop.defer(i=i)
    truncate()
    log(f"defer(): {args.jobs} calls in autocommit")
    started = time.perf_counter()
    for i in range(args.jobs):
        noop.defer(i=i)
    seconds = time.perf_counter() - started
    truncate()
    return {"seconds": seconds}


def phase_bulk(args: argparse.Namespace) -> dict[str, Any]:
    """Time one ``batch_defer()`` of N jobs, no worker running."""
    from benchmarks.procrastinate_project.tasks import noop

    noop.batch_defer(*({"i": i} for i in range(20)))  # warm up
    truncate()
    log(f"batch_defer(): {args.jobs} jobs in one call")
    started = time.perf_counter()
    noop.batch_defer(*({"i": i} for i in range(args.jobs)))
    seconds = time.perf_counter() - started
    truncate()
    return {"seconds": seconds}


def phase_warmup(args: argparse.Namespace) -> dict[str, Any]:
    """Run a few jobs through the (running) workers, then empty the tables."""
    from benchmarks.procrastinate_project.tasks import noop

    truncate()
    for i in range(args.jobs):
        noop.defer(i=i)
    done = wait_for(args.jobs, stall_timeout=args.stall_timeout)
    truncate()
    return {"finished": done}


def phase_drain(args: argparse.Namespace) -> dict[str, Any]:
    """N ``defer()`` in autocommit with the workers running; first deferred -> last succeeded."""
    from benchmarks.procrastinate_project.tasks import noop

    truncate()
    started = time.perf_counter()
    for i in range(args.jobs):
        noop.defer(i=i)
    enqueue_seconds = time.perf_counter() - started
    log(f"  deferred {args.jobs} jobs in {enqueue_seconds:.2f} s; waiting for the workers")
    done = wait_for(args.jobs, stall_timeout=args.stall_timeout)
    result = {
        "finished": done,
        "done": finished(),
        "seconds": event_span("deferred", "succeeded"),
        "enqueue_seconds": enqueue_seconds,
    }
    truncate()
    return result


def phase_latency(args: argparse.Namespace) -> dict[str, Any]:
    """A trickle of jobs on idle workers; per job ``started`` - ``deferred`` event, in ms."""
    from benchmarks.procrastinate_project.tasks import noop

    truncate()
    rng = random.Random(args.seed)
    low, high = args.pause_ms
    log(f"  trickling {args.jobs} jobs, one every {low:g}-{high:g} ms")
    for i in range(args.jobs):
        noop.defer(i=i)
        time.sleep(rng.uniform(low, high) / 1000)
    wait_for(args.jobs, stall_timeout=args.stall_timeout)
    rows = sql(
        "SELECT EXTRACT(EPOCH FROM s.at - d.at) * 1000 FROM procrastinate_events AS d "
        "JOIN procrastinate_events AS s ON s.job_id = d.job_id AND s.type = 'started' "
        "WHERE d.type = 'deferred'"
    )
    truncate()
    return {"latency_ms": [float(ms) for (ms,) in rows]}


PHASES = {
    "setup": phase_setup,
    "enqueue": phase_enqueue,
    "bulk": phase_bulk,
    "warmup": phase_warmup,
    "drain": phase_drain,
    "latency": phase_latency,
}


def quiet_producer() -> None:
    # The producer side logs nothing per job (procrastinate's defer() logs each at INFO), as
    # django-asyncjobs' delay() does not; the workers keep the level of the settings.
    logging.getLogger("procrastinate").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    return run(
        "python -m benchmarks.procrastinate_project.measure",
        PHASES,
        argv,
        after_setup=quiet_producer,
    )


if __name__ == "__main__":
    sys.exit(main())
