"""The health checks of example_project/deploy/compose.yaml, run as Docker runs them (a shell
pipeline in the container) against real ``runworker`` / ``runscheduler`` processes.

Docker is not here; the containers' host name is: Docker sets ``HOSTNAME`` to the container's
host name, the ``host`` a process registers, and this test sets it to this machine's. The test
settings stand for the example's (``python -m django`` for ``python manage.py``).
"""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys

import pytest
import yaml

from tests.support.flows import start_scheduler, start_worker
from tests.support.processes import REPO_ROOT, ProcessGroup, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

COMPOSE_FILE = REPO_ROOT / "example_project" / "deploy" / "compose.yaml"


def health_check(service: str) -> str:
    """The service's ``CMD-SHELL`` health check as the shell gets it, run with the test settings."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    kind, script = compose["services"][service]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    # $$ is compose's escape of $.
    script = script.replace("$$", "$")
    assert script.startswith("python manage.py ")
    return f"{shlex.quote(sys.executable)} -m django " + script.removeprefix("python manage.py ")


def healthy(processes: ProcessGroup, service: str, *, hostname: str) -> bool:
    """Whether the health check of *service* passes in a container named *hostname*."""
    result = subprocess.run(
        ["sh", "-c", health_check(service)],
        env={**processes.env, "HOSTNAME": hostname},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def test_worker_and_scheduler_are_healthy_while_they_run_on_their_host(
    processes: ProcessGroup,
) -> None:
    here = socket.gethostname()
    assert not healthy(processes, "worker", hostname=here)
    assert not healthy(processes, "scheduler", hostname=here)

    worker = start_worker(processes)
    start_scheduler(processes)
    wait_until(
        lambda: healthy(processes, "worker", hostname=here),
        timeout=30,
        interval=0.5,
        message=lambda: f"the worker never turned healthy\n{processes.report()}",
    )
    assert healthy(processes, "scheduler", hostname=here)
    # Another container's check does not see these processes.
    assert not healthy(processes, "worker", hostname="another-container")

    # A worker stopped (its row deleted on a clean stop) is unhealthy; the scheduler is not.
    assert worker.stop(signal.SIGTERM) == 0
    assert not healthy(processes, "worker", hostname=here)
    assert healthy(processes, "scheduler", hostname=here)
