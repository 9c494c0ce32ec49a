"""The example project, end to end, as a newcomer runs it: its own database, ``runjobs`` and
``runserver`` as subprocesses, moto_server for SQS, and HTTP requests (plus a real browser for the
demo page).

Set ``ASYNCJOBS_SCREENSHOTS=docs`` to write the demo page's screenshot into ``docs/``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from tests.support.processes import (
    REPO_ROOT,
    ManagedProcess,
    ProcessGroup,
    database_url,
    subprocess_env,
    wait_until,
)

pytestmark = [pytest.mark.processes]

EXAMPLE = REPO_ROOT / "example_project"
PASSWORD = "a-long-example-password"


@dataclass
class Site:
    """The example project's processes and where they answer."""

    processes: ProcessGroup
    runner: ManagedProcess  # runjobs
    url: str

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """Send an HTTP request; return status, headers and the decoded JSON body."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())

    def job(self, job_id: str) -> dict[str, Any]:
        """Return the demo page's row of *job_id* (its live table's data)."""
        _, _, body = self.request("GET", "/jobs.json")
        return next(row for row in body["jobs"] if row["id"] == job_id)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def example_env(queue_prefix: str) -> Iterator[dict[str, str]]:
    """The environment of the example project, with a fresh database of its own."""
    name = f"example_{uuid.uuid4().hex[:10]}"
    server = database_url({**connection.settings_dict, "NAME": "postgres"})
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    env = subprocess_env(
        queue_prefix=queue_prefix, settings_dict={**connection.settings_dict, "NAME": name}
    )
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(REPO_ROOT)]),
        DEMO_HELLO_DELAY_SECONDS="2",
        ASYNCJOBS_WAIT_TIME_SECONDS="1",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    try:
        yield env
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def site(example_env: dict[str, str], tmp_path: Path) -> Iterator[Site]:
    """The example site running: migrated, a superuser, ``runjobs`` and ``runserver``."""
    group = ProcessGroup(env=example_env, log_dir=tmp_path)
    try:
        migrate = group.run("migrate", timeout=120)
        assert migrate.returncode == 0, migrate.describe()
        group.run("createsuperuser", "--noinput", "--username", "admin", "--email", "a@b.example")
        runner = group.start("runjobs", "--concurrency", "4", "--interval", "0.5")
        runner.wait_for_output(r"worker started")
        port = _free_port()
        server = group.start("runserver", "--noreload", f"127.0.0.1:{port}")
        server.wait_for_output(r"Quit the server with")
        yield Site(processes=group, runner=runner, url=f"http://127.0.0.1:{port}")
    finally:
        for problem in group.close():
            print(problem)
        print(group.report())


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


@pytest.mark.browser
def test_the_demo_page_enqueues_every_demo_job_and_shows_them_live(
    site: Site, tmp_path: Path
) -> None:
    from tests.browser.test_admin import CHROMIUM, screenshot

    if CHROMIUM is None:
        pytest.skip("no chromium on PATH")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        try:
            page.goto(site.url + "/")
            page.wait_for_selector("text=No jobs yet")
            for demo in ("long", "fibonacci", "slow-query", "aggregate", "async", "fail", "hello"):
                page.click(f"#demo-{demo}")
                page.wait_for_load_state()
            # The long job reports progress, and the page shows it moving without a reload.
            progress = page.locator("tr", has_text="long_job").locator("td").nth(3)
            progress.filter(has_text="of 20").wait_for(timeout=30_000)
            page.locator("tr[data-status=succeeded]", has_text="aggregate_orders").wait_for()
            page.locator("tr[data-status=succeeded]", has_text="long_job").wait_for(timeout=60_000)
            page.locator("tr[data-status=succeeded]", has_text="say_hello").wait_for()
            page.locator("tr[data-status=succeeded]", has_text="gather_readings").wait_for()
            page.locator("tr[data-status=succeeded]", has_text="slow_query").wait_for()
            failed = page.locator("tr[data-status=failed]", has_text="always_fails")
            failed.wait_for(timeout=60_000)
            assert "3 / 3" in failed.inner_text() and "RuntimeError" in failed.inner_text()
            screenshot(page, "example-demo.png", tmp_path)
            # Each row links to the job in the admin.
            page.locator("tr", has_text="fibonacci").get_by_text("details").click()
            page.fill("#id_username", "admin")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_selector("text=43466557686937456435688527675040625802564660517371780402")
        finally:
            browser.close()


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
