"""``--log-format json``: every line the long-running commands write is one JSON object, and
the lines about a job carry its fields (job_id, job_name, queue, attempt, worker)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest

from tests.support.flows import start_scheduler, start_worker, wait_for_final
from tests.support.processes import REPO_ROOT, ManagedProcess, ProcessGroup, subprocess_env
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
    outcomes = [(r["level"], r["message"].split(" name=")[0], r.get("attempt")) for r in failed]
    assert ("WARNING", "job retrying", 1) in outcomes, failed
    assert ("ERROR", "job failed", 2) in outcomes, failed


def test_runjobs_passes_json_on_to_its_scheduler_and_worker(processes: ProcessGroup) -> None:
    runner = processes.start("runjobs", "--noreload", "--log-format", "json")
    runner.wait_for_output(r"scheduler started")
    runner.wait_for_output(r"worker started")
    job = jobs.traced.delay("runjobs")
    assert wait_for_final([job], processes)[job.id].status == "succeeded"
    runner.send_signal(signal.SIGINT)
    assert runner.wait(30) == 0, runner.describe()

    lines = json_lines(runner)  # its own lines and both children's, interleaved
    loggers = {r["logger"] for r in lines}
    assert {
        "django_asyncjobs.commands.runjobs",
        "django_asyncjobs.commands.runscheduler",
        "django_asyncjobs.commands.runworker",
        "django_asyncjobs.worker",
        "django_asyncjobs.scheduler",
    } <= loggers, loggers
    mine = [r["message"].split(" name=")[0] for r in lines if r.get("job_id") == str(job.id)]
    assert "job started" in mine and "job succeeded" in mine, mine


@pytest.mark.parametrize("command", ["runworker", "runscheduler", "runjobs"])
def test_a_refusal_is_a_json_line_too(command: str, queue_prefix: str) -> None:
    env = subprocess_env(queue_prefix=queue_prefix)
    env["ASYNCJOBS_TEST_TRANSPORT"] = "memory"
    done = subprocess.run(
        [sys.executable, "-m", "django", command, "--log-format", "json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done
    (line,) = done.stderr.splitlines()
    refusal = json.loads(line)
    assert refusal["message"].startswith(f"CommandError: {command} cannot use ASYNCJOBS")
    assert refusal["logger"] == f"django_asyncjobs.commands.{command}"
    assert refusal["level"] == "ERROR"
