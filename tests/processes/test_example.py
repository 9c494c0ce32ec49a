"""The example project, end to end, as a newcomer runs it: its own database, ``runjobs`` and
``runserver`` as subprocesses, moto_server for SQS, and HTTP requests
(tests/browser/test_example_demo.py drives its demo page in a real browser).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.example_site import EXAMPLE, Site, example_database, running_site
from tests.support.processes import wait_until


@pytest.fixture
def example_env(queue_prefix: str) -> Iterator[dict[str, str]]:
    """The environment of the example project, with a fresh database of its own."""
    with example_database(queue_prefix=queue_prefix) as env:
        yield env


@pytest.fixture
def site(example_env: dict[str, str], tmp_path: Path) -> Iterator[Site]:
    """The example site running: migrated, a superuser, ``runjobs`` and ``runserver``."""
    with running_site(example_env, log_dir=tmp_path) as running:
        yield running


def test_say_hello_from_the_view_runs_after_its_delay_in_the_worker(site: Site) -> None:
    enqueued = time.monotonic()
    status, _, body = site.request("GET", "/hello/?name=Ada")
    assert status == 202 and body["status"] == "scheduled"
    site.runner.wait_for_output(r"Hello, Ada!", timeout=60)
    # Not before its (shortened) delay: the seeds' walkthrough, where it is 60 s.
    assert time.monotonic() - enqueued >= 2.0
    row = wait_until(
        lambda: (r := site.job(body["id"]))["status"] == "succeeded" and r,
        timeout=30,
        message=lambda: site.processes.report(),
    )
    assert row["result"] == "Hello, Ada!" and row["attempts"] == "1 / 4"


def test_the_http_api_creates_jobs_and_returns_their_results(site: Site) -> None:
    token_command = site.processes.run("asyncjobs", "api-token", "admin")
    token = token_command.output().strip().splitlines()[-1]

    status, headers, created = site.request(
        "POST", "/api/jobs", {"name": "demo.jobs.fibonacci", "args": [90]}, token
    )
    assert status == 201, created
    assert headers["Location"].endswith(f"/api/jobs/{created['id']}")

    def result() -> Any:
        code, _, body = site.request("GET", f"/api/jobs/{created['id']}/result", token=token)
        return body if code == 200 else None

    body = wait_until(result, timeout=60, message=lambda: site.processes.report())
    assert body["result"] == "2880067194370816120"

    # A failing job: retried twice with backoff, then an error body with its traceback.
    status, _, failing = site.request(
        "POST", "/api/jobs", {"name": "demo.jobs.always_fails"}, token
    )
    assert status == 201

    def failure() -> Any:
        code, _, body = site.request("GET", f"/api/jobs/{failing['id']}/result", token=token)
        return body if code == 409 else None

    body = wait_until(failure, timeout=90, message=lambda: site.processes.report())
    assert body["error"] == "the job failed" and body["status"] == "failed"
    assert body["detail"] == "RuntimeError: the payment provider is down (attempt 3)"
    assert "Traceback" in body["traceback"]
    # Without a token, nothing.
    status, _, _ = site.request("POST", "/api/jobs", {"name": "demo.jobs.fibonacci", "args": [1]})
    assert status in (401, 403)


def test_run_example_runs_say_hello_end_to_end(example_env: dict[str, str]) -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE / "run_example.py"), "--name", "Grace", "--delay", "1"],
        env=example_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "Hello, Grace!" in output and "is succeeded" in output


def test_the_served_demo_runs_several_jobs_at_once(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    """``run_example.py --serve`` as a newcomer starts it: three 2 s jobs overlap in its worker."""
    import json
    import os
    import signal

    from tests.support.example_site import _free_port
    from tests.support.processes import ProcessGroup

    log_path = tmp_path / "serve.log"
    port = str(_free_port())
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "run_example.py"), "--serve", "--port", port],
            env=example_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    group = ProcessGroup(env=example_env, log_dir=tmp_path)
    try:
        wait_until(
            lambda: "demo page:" in log_path.read_text(errors="replace"),
            timeout=120,
            interval=0.5,
            message=lambda: log_path.read_text(errors="replace"),
        )
        enqueue = group.run(
            "shell",
            "-c",
            "from demo.jobs import long_job\n"
            "print(','.join(str(long_job.delay(steps=4, step_seconds=0.5).id) for _ in range(3)))",
        )
        ids = enqueue.output().strip().splitlines()[-1]
        query = (
            "import json\nfrom django_asyncjobs.models import Job\n"
            f"rows = Job.objects.filter(id__in='{ids}'.split(','), status='succeeded')\n"
            "print(json.dumps([[r.started_at.timestamp(), r.finished_at.timestamp()] "
            "for r in rows]))"
        )

        def all_done() -> list[list[float]] | None:
            spans: list[list[float]] = json.loads(
                group.run("shell", "-c", query).output().strip().splitlines()[-1]
            )
            return spans if len(spans) == 3 else None

        spans = wait_until(
            all_done,
            timeout=90,
            interval=1.0,
            message=lambda: log_path.read_text(errors="replace"),
        )
        # One at a time, each would start after the one before finished.
        assert max(start for start, _ in spans) < min(end for _, end in spans), spans
    finally:
        group.close()
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(timeout=60)
