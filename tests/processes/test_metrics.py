"""Prometheus metrics of real processes: ``runworker`` (one worker process, then two) and
``runscheduler`` started with ``--metrics-port``, jobs that succeed, fail, retry and time
out, then ``GET /metrics`` parsed with prometheus_client's parser, as Prometheus reads it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pytest_django.live_server_helper import LiveServer

from tests.support.flows import start_scheduler, wait_for_final
from tests.support.metrics import Samples, metrics_url, scrape, total, value
from tests.support.operators import bearer_headers
from tests.support.processes import ProcessGroup, wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def _started(samples: Samples, name: str) -> float:
    return value(samples, "asyncjobs_jobs_started_total", job=name, queue="default")


@pytest.mark.parametrize("worker_processes", [1, 2])
def test_worker_and_scheduler_metrics_count_what_ran(
    processes: ProcessGroup, tmp_path: Path, worker_processes: int, live_server: LiveServer
) -> None:
    scheduler = start_scheduler(processes, "--metrics-port", "0")
    # The worker's temporary directory, to see that it removes its metrics files at exit.
    temp = tmp_path / "worker-tmp"
    temp.mkdir()
    worker = processes.start(
        "runworker",
        "--wait",
        "1",
        "--processes",
        str(worker_processes),
        "--metrics-port",
        "0",
        env={**processes.env, "TMPDIR": str(temp)},
    )
    worker.wait_for_output(r"worker started")
    worker_url, scheduler_url = metrics_url(worker), metrics_url(scheduler)

    batch = [
        jobs.add.delay(1, 2),
        jobs.fails_now.delay("metrics"),
        jobs.fails_then_succeeds.delay("metrics", 1),
        jobs.sync_sleeper.delay(3),
    ]
    rows = wait_for_final(batch, processes)
    assert [rows[j.id].status for j in batch] == ["succeeded", "failed", "succeeded", "failed"]

    # Signals follow the commit of each final row, and the outcome (job_failed...) comes before
    # the end of the attempt (job_status_changed, after the test app's receivers, which write
    # to the database): the last figures may come a moment after the rows.
    def counted() -> Samples | None:
        samples = scrape(worker_url)
        ended = total(samples, "asyncjobs_jobs_finished_total")
        timed = total(samples, "asyncjobs_job_run_seconds_count")
        return samples if ended >= 5 and timed >= 5 else None

    samples = wait_until(
        counted, timeout=10, message=lambda: f"not all counted:\n{scrape(worker_url)}"
    )
    add, fails, retries, sleeper = (j.name for j in batch)
    assert _started(samples, add) == 1
    assert _started(samples, fails) == 1
    assert _started(samples, retries) == 2
    assert _started(samples, sleeper) == 1
    finished = "asyncjobs_jobs_finished_total"
    assert value(samples, finished, job=add, queue="default", outcome="succeeded") == 1
    assert value(samples, finished, job=fails, queue="default", outcome="failed") == 1
    assert value(samples, finished, job=retries, queue="default", outcome="retried") == 1
    assert value(samples, finished, job=retries, queue="default", outcome="succeeded") == 1
    assert value(samples, finished, job=sleeper, queue="default", outcome="failed") == 1
    assert total(samples, finished) == 5
    assert value(samples, "asyncjobs_jobs_timed_out_total", job=sleeper, queue="default") == 1
    assert total(samples, "asyncjobs_jobs_timed_out_total") == 1
    # Histograms: one observation per attempt; the sleeper ran at least its 1 s timeout (its
    # worker process retired, and the supervisor recorded it, from the row's times).
    run = "asyncjobs_job_run_seconds"
    assert value(samples, f"{run}_count", job=retries, queue="default") == 2
    assert value(samples, f"{run}_count", job=add, queue="default") == 1
    assert value(samples, f"{run}_count", job=sleeper, queue="default") == 1
    assert value(samples, f"{run}_bucket", job=sleeper, queue="default", le="0.5") == 0
    assert value(samples, f"{run}_sum", job=sleeper, queue="default") >= 1.0
    assert total(samples, "asyncjobs_job_wait_seconds_count") == 5
    assert total(samples, "asyncjobs_jobs_running") == 0
    # Each attempt's message was received and deleted; every worker process polls.
    sqs = "asyncjobs_sqs_requests_total"
    assert total(samples, "asyncjobs_sqs_errors_total") == 0
    assert value(samples, sqs, operation="ReceiveMessage") >= worker_processes
    assert (
        value(samples, sqs, operation="DeleteMessageBatch")
        + value(samples, sqs, operation="DeleteMessage")
        >= 1
    )
    assert value(samples, sqs, operation="SendMessageBatch") == 0

    relayed = scrape(scheduler_url)
    # Four jobs and one retry went through the relay, in SendMessageBatch calls.
    assert value(relayed, "asyncjobs_jobs_relayed_total", queue="default") == 5
    assert 1 <= value(relayed, sqs, operation="SendMessageBatch") <= 5
    assert value(relayed, "asyncjobs_scheduler_passes_total") >= 2
    assert value(relayed, "asyncjobs_sqs_requests_total", operation="ReceiveMessage") == 0

    # The site's view, from the database: the live processes and no job left waiting.
    site = scrape(f"{live_server.url}/api/metrics", headers=bearer_headers("view_job"))
    assert value(site, "asyncjobs_processes_live", kind="worker") == worker_processes
    assert value(site, "asyncjobs_processes_live", kind="scheduler") == 1
    assert total(site, "asyncjobs_queue_jobs") == 0

    assert worker.stop() == 0, worker.describe()
    assert list(temp.iterdir()) == [], "the worker left its metrics files behind"


@pytest.mark.parametrize("command", ["runworker", "runscheduler"])
def test_metrics_port_without_prometheus_client_says_what_to_install(
    processes: ProcessGroup, tmp_path: Path, command: str
) -> None:
    # A prometheus_client that cannot be imported, found before the installed one.
    hidden = tmp_path / "hidden" / "prometheus_client"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    env = {**processes.env, "PYTHONPATH": str(hidden.parent)}
    refused = processes.run(command, "--metrics-port", "0", env=env, stderr_apart=True)
    assert refused.returncode == 1, refused.describe()
    assert (
        f"{command}: --metrics-port: metrics need the prometheus_client package: "
        "pip install django-asyncjobs[metrics]"
    ) in refused.stderr(), refused.describe()
    assert refused.stdout() == ""
    # Without the option, the package is not needed.
    burst = processes.run("runworker", "--burst", "--wait", "0", env=env)
    assert burst.returncode == 0, burst.describe()


def test_a_metrics_port_in_use_is_refused_with_the_address(processes: ProcessGroup) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = processes.run("runscheduler", "--metrics-port", str(port), stderr_apart=True)
    assert refused.returncode == 1, refused.describe()
    assert (
        f"runscheduler: cannot serve metrics on 127.0.0.1:{port}: Address already in use; "
        "choose another --metrics-port (or --metrics-host)"
    ) in refused.stderr(), refused.describe()


def test_runjobs_serves_the_worker_and_the_scheduler_metrics(processes: ProcessGroup) -> None:
    runjobs = processes.start("runjobs", "--noreload", "--metrics-port", "0")
    worker_url = runjobs.wait_for_output(r"runworker: pid .* metrics (http://\S+)").group(1)
    scheduler_url = runjobs.wait_for_output(r"runscheduler: pid .* metrics (http://\S+)").group(1)
    job = jobs.add.delay(2, 3)
    assert wait_for_final([job], processes)[job.id].status == "succeeded"
    finished = "asyncjobs_jobs_finished_total"
    labels = {"job": job.name, "queue": "default", "outcome": "succeeded"}
    wait_until(
        lambda: value(scrape(worker_url), finished, **labels) == 1,
        timeout=10,
        message=lambda: f"not counted at {worker_url}\n{runjobs.describe()}",
    )
    relayed = scrape(scheduler_url)
    assert value(relayed, "asyncjobs_jobs_relayed_total", queue="default") == 1
