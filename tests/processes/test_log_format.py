"""``--log-format json``: every line the long-running commands write is one JSON object, and
the lines about a job carry its fields (job_id, job_name, queue, attempt, worker)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.flows import start_scheduler, start_worker, wait_for_final
from tests.support.processes import ManagedProcess, ProcessGroup
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def json_lines(process: ManagedProcess) -> list[dict[str, Any]]:
    """Parse every line *process* wrote (stdout and stderr) as JSON; fail on one that is not."""
    records = []
    for number, line in enumerate(process.output().splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"{process!r} line {number} is not JSON: {line!r}\n{process.describe()}")
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        records.append(record)
    return records


def test_json_log_lines_of_scheduler_and_worker_processes_carry_the_jobs_fields(
    processes: ProcessGroup,
) -> None:
    scheduler = start_scheduler(processes, "--log-format", "json")
    worker = start_worker(processes, "--log-format", "json", "--processes", "2")

    ok = jobs.traced.delay("ok")
    bad = jobs.traced.delay("bad", fail=True)
    rows = wait_for_final([ok, bad], processes)
    assert rows[ok.id].status == "succeeded" and rows[bad.id].status == "failed"
    assert scheduler.stop() == 0, scheduler.describe()
    assert worker.stop() == 0, worker.describe()

    scheduler_lines, worker_lines = json_lines(scheduler), json_lines(worker)
    # The command's own lines are JSON too: its start-up line and its stop message.
    assert any(r["message"].startswith("runscheduler: pid ") for r in scheduler_lines)
    assert any(r["message"].startswith("runworker: pid ") for r in worker_lines)
    assert any("SIGTERM received" in r["message"] for r in scheduler_lines)

    def about(job_id: object) -> list[dict[str, Any]]:
        return [r for r in worker_lines if r.get("job_id") == str(job_id)]

    succeeded = about(ok.id)
    started = [r for r in succeeded if r["message"].startswith("job started")]
    (finished,) = [r for r in succeeded if r["message"].startswith("job succeeded")]
    assert len(started) == 1
    for record in (*started, finished):
        assert record["logger"] == "django_asyncjobs.worker"
        assert record["job_name"] == "tests.traced"
        assert record["queue"] == "default"
        assert record["attempt"] == 1
        assert record["worker"] == rows[ok.id].worker
    assert finished["level"] == "INFO"
    # The worker processes (children of the supervisor) wrote them, not the supervisor.
    assert finished["worker"].endswith(f":{finished['process']}")
    assert finished["process"] != worker.pid
    # The job's own log line, logged by its code, carries the job's fields as well.
    (own,) = [r for r in succeeded if r["logger"] == "tests.testapp.jobs"]
    assert own["message"] == "traced job working key=ok" and own["level"] == "WARNING"

    failed = about(bad.id)
    outcomes = [(r["level"], r["message"].split(" name=")[0], r["attempt"]) for r in failed]
    assert ("WARNING", "job retrying", 1) in outcomes, failed
    assert ("ERROR", "job failed", 2) in outcomes, failed
