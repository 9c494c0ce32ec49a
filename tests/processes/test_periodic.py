"""Periodic jobs with two real schedulers on an every-second cron: each occurrence enqueued once."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from django_asyncjobs.models import Job
from tests.support.flows import start_scheduler, start_worker, wait_for_final
from tests.support.processes import ProcessGroup, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_schedulers_enqueue_each_occurrence_once(processes: ProcessGroup) -> None:
    processes.env["ASYNCJOBS_TEST_PERIODIC"] = "1"
    start_scheduler(processes)
    start_scheduler(processes)
    start_worker(processes, "--concurrency", "4")
    wait_until(
        lambda: Job.objects.filter(name="tests.ledgered", kwargs__key="tick").count() >= 6,
        timeout=60,
        message=lambda: processes.report(),
    )
    for process in processes.started:
        if process.command == "runscheduler":
            assert process.stop() == 0
    ticks = list(Job.objects.filter(name="tests.ledgered", kwargs__key="tick"))
    occurrences = sorted(
        dt.datetime.fromisoformat(t.unique_key.rsplit("@", 1)[1])  # type: ignore[union-attr]
        for t in ticks
    )
    assert len(set(occurrences)) == len(occurrences), "an occurrence was enqueued twice"
    seconds = [(b - a).total_seconds() for a, b in itertools.pairwise(occurrences)]
    assert set(seconds) == {1.0}, f"occurrences skipped: {occurrences}"
    rows = wait_for_final(ticks, processes)
    assert {row.status for row in rows.values()} == {"succeeded"}
