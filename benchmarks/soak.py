#!/usr/bin/env python
"""Soak django-asyncjobs under crashes: enqueue N jobs while SIGKILLing workers and schedulers.

Usage (from the repository root, with the project's venv)::

    python benchmarks/soak.py                    # 10,000 jobs, 2 workers, a kill every 2-6 s
    python benchmarks/soak.py --jobs 2000 --seed 7

PostgreSQL and moto_server are started through ``tests.services`` unless ``DATABASE_URL`` and
``AWS_ENDPOINT_URL_SQS`` name running ones; the database ``soak_asyncjobs`` is dropped and
recreated. The processes run with the test suite's settings (``tests.settings``: heartbeats
every 0.5 s, a 5 s stale threshold) and the test app's ``tests.ledgered`` job, whose body
records every start and finish in a ledger table outside its own transaction.

While jobs are enqueued (autocommit ``delay()`` calls, in bursts), a chaos loop picks one fault
at random every 2-6 s: SIGKILL a whole ``runworker`` (supervisor and worker processes) and start
a new one, SIGKILL only a worker process (the supervisor replaces it), SIGTERM a worker with a
1 s grace (hand-back), or SIGKILL the scheduler and start a new one. After the enqueue ends the
chaos stops, and the script waits until every job is final or ``--settle`` seconds pass.

It prints: jobs enqueued, succeeded, failed, lost (not final at the end: must be 0), run more
than once (with the reasons the ledger of status changes gives), faults injected, elapsed time.
Nothing is asserted about timings.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.throughput import (  # noqa: E402
    drop_database,
    recreate_database,
    sigterm_as_interrupt,
)
from tests.services import ensure_services, stop_services  # noqa: E402
from tests.support.processes import ManagedProcess, ProcessGroup, subprocess_env  # noqa: E402

FINAL = ("succeeded", "failed", "cancelled")


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/soak.py", description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000, help="Jobs to enqueue (10,000).")
    parser.add_argument("--workers", type=int, default=2, help="runworker processes (2).")
    parser.add_argument("--concurrency", type=int, default=4, help="--concurrency of each (4).")
    parser.add_argument("--seed", type=int, default=None, help="Random seed, for a replay.")
    parser.add_argument(
        "--chaos-seconds",
        type=float,
        default=180.0,
        help="Keep injecting faults at least this long, or until every job is final (180).",
    )
    parser.add_argument(
        "--settle", type=float, default=900.0, help="Seconds to wait for the end (900)."
    )
    parser.add_argument("--db-name", default="soak_asyncjobs", help="Database to recreate.")
    return parser.parse_args(argv)


class Cluster:
    """The scheduler and workers of the soak, restarted as the chaos loop kills them."""

    def __init__(self, group: ProcessGroup, *, workers: int, concurrency: int) -> None:
        self.group = group
        self.concurrency = concurrency
        self.scheduler = self._scheduler()
        self.workers = [self._worker() for _ in range(workers)]
        self.faults: collections.Counter[str] = collections.Counter()

    def _scheduler(self) -> ManagedProcess:
        return self.group.start("runscheduler")

    def _worker(self) -> ManagedProcess:
        return self.group.start("runworker", "--wait", "1", "--concurrency", str(self.concurrency))

    def inject(self, rng: random.Random) -> str:
        """Inject one random fault and return its name."""
        fault = rng.choice(["kill worker", "kill worker process", "stop worker", "kill scheduler"])
        if fault == "kill scheduler":
            self.scheduler.kill()
            self.scheduler = self._scheduler()
        else:
            index = rng.randrange(len(self.workers))
            victim = self.workers[index]
            if fault == "kill worker":
                victim.kill()
                self.workers[index] = self._worker()
            elif fault == "kill worker process":
                children = _children(victim.pid)
                if not children:
                    return "none (worker process not up yet)"
                os.kill(rng.choice(children), signal.SIGKILL)
            else:
                victim.send_signal(signal.SIGTERM)
                self.workers[index] = self._worker()
        self.faults[fault] += 1
        return fault


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(p) for p in children.read().split()]
    except FileNotFoundError:
        return []


def enqueue(n: int, keys: list[str], done: threading.Event, rng: random.Random) -> None:
    """Enqueue *n* ledgered jobs in bursts of 50-500 with short pauses, like web traffic."""
    from django.db import connections

    from tests.testapp.jobs import ledgered

    try:
        while len(keys) < n:
            burst = min(n - len(keys), rng.randint(50, 500))
            for _ in range(burst):
                key = uuid.uuid4().hex
                ledgered.delay(key=key, seconds=rng.choice([0.0, 0.0, 0.0, 0.05, 0.5]))
                keys.append(key)
            time.sleep(rng.uniform(0.2, 1.5))
    finally:
        connections.close_all()
        done.set()


def report(*, keys: list[str], elapsed: float, faults: collections.Counter[str]) -> str:
    from django.db.models import Count

    from django_asyncjobs.models import Job
    from tests.testapp.models import Execution, Transition

    statuses = dict(
        Job.objects.filter(name="tests.ledgered").values_list("status").annotate(n=Count("id"))
    )
    starts = collections.Counter(
        Execution.objects.filter(job="ledgered", payload__phase="start").values_list(
            "key", flat=True
        )
    )
    twice = {key: count for key, count in starts.items() if count > 1}
    reasons: collections.Counter[str] = collections.Counter()
    ids = Job.objects.filter(name="tests.ledgered", kwargs__key__in=list(twice)).values_list(
        "id", flat=True
    )
    for error in Transition.objects.filter(
        job_id__in=list(ids), old_status="running", new_status__in=["scheduled", "failed"]
    ).values_list("error", flat=True):
        reasons[error.split(" ", 2)[0].rstrip(":") + " " + _kind(error)] += 1
    lost = sum(n for status, n in statuses.items() if status not in FINAL)
    lines = [
        f"jobs enqueued: {len(keys):,}",
        f"succeeded: {statuses.get('succeeded', 0):,}",
        f"failed: {statuses.get('failed', 0):,}",
        f"lost (not final at the end): {lost:,}",
        f"never started: {len(keys) - len(starts):,}",
        f"run more than once: {len(twice):,} jobs, {sum(twice.values()) - len(twice):,} extra runs",
        "  reasons (attempts cut off, for those jobs): "
        + (", ".join(f"{reason}: {n}" for reason, n in reasons.most_common()) or "none"),
        "faults injected: " + ", ".join(f"{fault}: {n}" for fault, n in sorted(faults.items())),
        f"elapsed: {elapsed:.1f} s",
    ]
    return "\n".join(lines)


def _kind(error: str) -> str:
    if "stopped responding" in error or "killed by" in error:
        return "(worker process killed)"
    if "no heartbeat" in error:
        return "(rescued by the scheduler)"
    if error.startswith("interrupted"):
        return "(handed back on SIGTERM)"
    return f"({error[:60]})"


def main(argv: Sequence[str] | None = None) -> int:
    with sigterm_as_interrupt():  # SIGTERM must still stop the servers this script started
        return _main(parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    log(f"seed {seed}")
    started = ensure_services(durable=True)
    admin_url = os.environ["DATABASE_URL"]
    try:
        recreate_database(admin_url, args.db_name)
        os.environ["DATABASE_URL"] = admin_url.rsplit("/", 1)[0] + "/" + args.db_name
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        prefix = f"soak{uuid.uuid4().hex[:8]}-"
        os.environ["ASYNCJOBS_QUEUE_PREFIX"] = prefix
        import django
        from django.core.management import call_command
        from django.db import connection

        django.setup()
        call_command("migrate", verbosity=0)
        env = subprocess_env(queue_prefix=prefix, settings_dict=connection.settings_dict)
        # A short stale threshold, so that rescues happen within the run.
        env["ASYNCJOBS_TEST_STALE_AFTER"] = "3"
        connection.close()
        with tempfile.TemporaryDirectory(prefix="asyncjobs-soak-") as log_dir:
            group = ProcessGroup(env=env, log_dir=Path(log_dir))
            try:
                cluster = Cluster(group, workers=args.workers, concurrency=args.concurrency)
                keys: list[str] = []
                done = threading.Event()
                began = time.monotonic()
                producer = threading.Thread(target=enqueue, args=(args.jobs, keys, done, rng))
                producer.start()
                from django_asyncjobs.models import Job

                while True:
                    pause = rng.uniform(2, 6)
                    if done.is_set():  # done.wait() no longer waits once enqueue has ended
                        time.sleep(pause)
                    else:
                        done.wait(pause)
                    finished = Job.objects.filter(status__in=FINAL).count()
                    if done.is_set() and (
                        time.monotonic() - began >= args.chaos_seconds or finished >= len(keys)
                    ):
                        break
                    fault = cluster.inject(rng)
                    log(f"{len(keys):,} enqueued, {finished:,} final; fault: {fault}")
                producer.join()
                log(f"all {len(keys):,} enqueued; chaos over, waiting for the end")

                deadline = time.monotonic() + args.settle
                while time.monotonic() < deadline:
                    left = Job.objects.exclude(status__in=FINAL).count()
                    if not left:
                        break
                    log(f"{left:,} jobs not final yet")
                    time.sleep(5)
                elapsed = time.monotonic() - began
                print(report(keys=keys, elapsed=elapsed, faults=cluster.faults))
                print(f"seed: {seed}")
            finally:
                group.close()
                connection.close()
    finally:
        drop_database(admin_url, args.db_name)
        stop_services(started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
