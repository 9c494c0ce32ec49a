"""The example project run as a newcomer runs it, for the process and browser tests.

:func:`example_database` gives it a fresh database of its own and returns the environment of
its processes; :func:`running_site` migrates it, creates a superuser, and starts ``runjobs`` and
``runserver``. The test modules wrap both in fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import (
    REPO_ROOT,
    ManagedProcess,
    ProcessGroup,
    private_database,
    subprocess_env,
)

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


@contextlib.contextmanager
def example_database(*, queue_prefix: str) -> Iterator[dict[str, str]]:
    """Create a fresh database for the example project; yield its processes' environment."""
    with private_database("example") as settings_dict:
        env = subprocess_env(queue_prefix=queue_prefix, settings_dict=settings_dict)
        env.update(
            DJANGO_SETTINGS_MODULE="example_project.settings",
            PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(REPO_ROOT)]),
            DEMO_HELLO_DELAY_SECONDS="2",
            ASYNCJOBS_WAIT_TIME_SECONDS="1",
            DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        )
        yield env


@contextlib.contextmanager
def running_site(env: Mapping[str, str], *, log_dir: Path) -> Iterator[Site]:
    """Run the example site: migrated, a superuser, ``runjobs`` and ``runserver``."""
    group = ProcessGroup(env=env, log_dir=log_dir)
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
        # pytest shows a test's captured output only when it fails: that is when it is wanted.
        for problem in group.close():
            print(problem)
        print(group.report())
