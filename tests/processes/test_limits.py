"""Concurrency and rate limits with real processes: one scheduler, several ``runworker``
processes, and a worker killed with SIGKILL mid-job. What is asserted is read from the attempt
history, as an operator would read it: how many jobs of one key ever ran at once, and how many
started per period."""

from __future__ import annotations

import time

import pytest

from django_asyncjobs.models import Job
from tests.support.flows import start_scheduler, start_worker, wait_for_final
from tests.support.limits import (
    attempt_timeline,
    max_running_per_key,
    starts_by_second,
    starts_per_window,
)
from tests.support.processes import ProcessGroup, wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

#: Stale-heartbeat threshold of these processes (heartbeats every 0.5 s): a killed worker's job
#: is rescued, and its slot freed, about this long after the kill.
STALE_AFTER_SECONDS = 2


def test_at_most_n_per_key_run_at_once_across_workers_even_when_one_is_killed(
    processes: ProcessGroup,
) -> None:
    processes.env["ASYNCJOBS_TEST_STALE_AFTER"] = str(STALE_AFTER_SECONDS)
    scheduler = start_scheduler(processes)
    workers = {
        f"w{i}": start_worker(processes, "--concurrency", "2", "--worker-id", f"w{i}")
        for i in range(3)
    }
    # tests.per_customer: at most 2 per customer. Six worker slots against four allowed. The
    # long job goes first (priority), so that the worker killed below is surely mid-job.
    victim = jobs.per_customer.using(priority=5).delay("acme", 4.0, key="long")
    enqueued = [victim] + [
        jobs.per_customer.delay(customer, 0.5, key=f"{customer}-{i}")
        for i in range(6)
        for customer in ("acme", "globex")
    ]

    running = wait_until(
        lambda: Job.objects.filter(pk=victim.pk, status="running").first(),
        timeout=30,
        message=lambda: f"the long job never started\n{processes.report()}",
    )
    doomed = workers[running.worker.split(":")[0]]
    doomed.kill()  # SIGKILL to the supervisor and its worker processes
    killed_at = time.monotonic()

    rows = wait_for_final(enqueued, processes)
    assert {row.status for row in rows.values()} == {"succeeded"}, processes.report()
    peaks = max_running_per_key(rows.values())
    print(f"attempts (seconds since the first start):\n{attempt_timeline(rows.values())}")
    print(f"max running at once per key (attempt history): {peaks}")
    assert set(peaks) == {"tests.per_customer:acme", "tests.per_customer:globex"}
    # Never over the limit; and the limit is 2, not 1 (a busy machine may keep one key under).
    assert max(peaks.values()) == 2
    # The killed worker's attempt held its slot until the scheduler rescued it; then it ran again.
    lost = victim.attempt_history.get(outcome="lost")
    assert lost.finished_at is not None
    assert rows[victim.id].total_attempts == 2
    assert "rescued job of a lost worker" in scheduler.output()
    assert time.monotonic() - killed_at >= STALE_AFTER_SECONDS


def test_a_rate_limit_caps_starts_per_period_across_workers(processes: ProcessGroup) -> None:
    start_scheduler(processes)
    for _ in range(2):
        start_worker(processes, "--concurrency", "4")
    # tests.rated: 5/s, fleet wide.
    enqueued = jobs.rated.delay_many([([str(i)], {}) for i in range(14)])

    rows = wait_for_final(enqueued, processes)
    assert {row.status for row in rows.values()} == {"succeeded"}
    windows = starts_per_window(rows.values(), period_seconds=1)
    print(f"starts by second since the first: {starts_by_second(rows.values())}")
    print(f"most starts in any 1 s window: {max(windows)}")
    assert max(windows) == 5
    # Fourteen starts at five a second need three windows: over two seconds from first to last.
    assert len(starts_by_second(rows.values())) >= 3
