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


def test_purge_dry_run_and_list_totals_from_the_shell(queue_prefix: str) -> None:
    from tests.testapp import jobs

    for value in range(3):
        jobs.add.delay(value, 1)

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "django", "asyncjobs", *args],
            cwd=REPO_ROOT,
            env=subprocess_env(queue_prefix=queue_prefix),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = manage("list", "--limit", "2")
    assert listed.returncode == 0, listed
    assert listed.stdout.splitlines()[-1] == (
        "2 of 3 matching job(s) (newest first; --limit shows more)"
    )
    dry = manage("purge", "--older-than", "1d", "--dry-run")
    assert dry.returncode == 0, dry
    assert "0 job(s) would be deleted" in dry.stdout and "dry run, nothing deleted" in dry.stdout
