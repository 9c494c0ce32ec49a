"""An operator retries a failed job with ``manage.py asyncjobs retry`` while ``runscheduler`` and
``runworker`` run; ``manage.py asyncjobs show`` then tells the whole story, every command a
subprocess as an operator runs it."""

from __future__ import annotations

import json

import pytest

from django_asyncjobs.models import Job
from tests.support.flows import FLOW_TIMEOUT_SECONDS, start_scheduler, start_worker, wait_for_final
from tests.support.processes import ProcessGroup, wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_after_an_operator_retry_the_attempts_are_numbered_on_and_show_prints_them(
    processes: ProcessGroup,
) -> None:
    start_scheduler(processes)
    start_worker(processes)
    job = jobs.fails_now.delay("retried-by-ops")
    assert wait_for_final([job], processes)[job.id].status == "failed"

    retry = processes.run("asyncjobs", "retry", str(job.id)[:8])
    assert retry.returncode == 0, retry.describe()

    def failed_again() -> Job | None:
        row = Job.objects.get(id=job.id)
        return row if row.status == "failed" and row.total_attempts == 2 else None

    row = wait_until(failed_again, timeout=FLOW_TIMEOUT_SECONDS, message=lambda: processes.report())
    # A fresh retry limit (fails_now may start once), but a history that goes on.
    assert (row.attempts, row.total_attempts) == (1, 2)

    shown = processes.run("asyncjobs", "show", str(job.id)[:8])
    as_json = processes.run("asyncjobs", "show", str(job.id), "--json")
    unknown = processes.run("asyncjobs", "show", "ffffffff")

    text = shown.output()
    assert shown.returncode == 0, shown.describe()
    assert "ran 2 time(s); 1 of 1 used" in text
    assert "Error, from attempt 2 (failed)" in text
    attempt_rows = text[text.index("\nAttempts\n") :].splitlines()[3:]
    assert [line.split()[0] for line in attempt_rows] == ["1", "2"]
    history = json.loads(as_json.output())["attempt_history"]
    assert [(a["number"], a["outcome"]) for a in history] == [(1, "failed"), (2, "failed")]
    assert len({a["worker"] for a in history}) == 1 and history[0]["worker"] == row.worker
    assert unknown.returncode == 1
    assert "CommandError: no job id starts with 'ffffffff'" in unknown.output()
