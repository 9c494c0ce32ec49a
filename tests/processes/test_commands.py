"""The long-running commands started as subprocesses refuse what cannot work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import REPO_ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("command", ["runworker", "runscheduler", "runjobs"])
def test_long_running_commands_refuse_the_memory_transport(command: str, queue_prefix: str) -> None:
    env = subprocess_env(queue_prefix=queue_prefix)
    env["ASYNCJOBS_TEST_TRANSPORT"] = "memory"
    done = subprocess.run(
        [sys.executable, "-m", "django", command],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,  # without the refusal it would run, deliver nothing, and never exit
        check=False,
    )
    assert done.returncode == 1, done
    assert f'CommandError: {command} cannot use ASYNCJOBS["TRANSPORT"] = "memory"' in done.stderr
    assert 'Set ASYNCJOBS["TRANSPORT"] = "sqs".' in done.stderr
    assert "worker started" not in done.stderr and "scheduler started" not in done.stderr
