"""What the long-running commands say when they start, and what they refuse to start with.

Each runs as an operator runs it: ``runworker``, ``runscheduler`` and ``runjobs`` as
subprocesses, their stdout and stderr read as a terminal or journal shows them. Nothing may wait
in silence: a start-up line on stdout (also without any LOGGING setting), a warning for a queue
nothing uses, and an exit with status 1 and the fix for what no retry can mend.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.support.processes import (
    REPO_ROOT,
    ManagedProcess,
    ProcessGroup,
    ProcessTimeout,
    private_database,
    subprocess_env,
)
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

MIGRATIONS = REPO_ROOT / "django_asyncjobs" / "migrations"
#: Where boto3 could find credentials or a region besides what a test gives it.
AWS_CONFIGURATION = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def changed(env: Mapping[str, str], *, drop: tuple[str, ...] = (), **values: str) -> dict[str, str]:
    """Return a copy of *env* without the variables *drop* and with *values* set."""
    copy = {key: value for key, value in env.items() if key not in drop}
    copy.update(values)
    return copy


def without_logging(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a project that configures no LOGGING (tests/settings.py)."""
    return changed(env, ASYNCJOBS_TEST_NO_LOGGING="1")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connections are refused


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^PPid:\s+(\d+)", status, flags=re.MULTILINE)[1])  # type: ignore[index]


# -- the start-up line ---------------------------------------------------------------------------


def test_runworker_says_what_it_consumes_and_warns_about_a_queue_nothing_uses(
    processes: ProcessGroup, queue_prefix: str
) -> None:
    worker = processes.start(
        "runworker",
        "--queues",
        "defualt",
        "--processes",
        "2",
        "--wait",
        "1",
        env=without_logging(processes.env),
        stderr_apart=True,
    )
    line = worker.wait_for_output(
        rf"runworker: pid {worker.pid}, worker processes (\d+),(\d+), queues defualt, "
        rf"concurrency 1, transport sqs http://127\.0\.0\.1:\d+/? \(prefix {queue_prefix}\)\n"
    )
    assert line[0] in worker.stdout()  # on stdout, though no LOGGING shows the log's info lines
    assert "worker started" not in worker.output()
    assert [parent_of(int(line[1])), parent_of(int(line[2]))] == [worker.pid, worker.pid]
    (warning,) = worker.stderr().splitlines()
    assert warning == (
        "runworker: warning: no job uses queue 'defualt': it is not in ASYNCJOBS[\"QUEUES\"], "
        "and no registered job, schedule or job row names it. Did you mean 'default'? "
        "Consuming it anyway."
    )
    assert worker.stop() == 0


def test_runworker_warns_about_a_pattern_that_matches_nothing_and_starts_anyway(
    processes: ProcessGroup,
) -> None:
    worker = processes.run(
        "runworker", "--burst", "--queues", "high,defa*,reprots-*", stderr_apart=True
    )
    assert worker.returncode == 0, worker.describe()
    warnings = [line for line in worker.stderr().splitlines() if "warning" in line]
    assert len(warnings) == 1, worker.describe()
    assert warnings[0].startswith("runworker: warning: pattern 'reprots-*' matches no queue")
    assert re.search(r"^runworker: pid \d+, .*queues high,defa\*,reprots-\*", worker.stdout(), re.M)


def test_runscheduler_says_how_it_relays(processes: ProcessGroup, queue_prefix: str) -> None:
    scheduler = processes.start(
        "runscheduler", env=without_logging(processes.env), stderr_apart=True
    )
    line = scheduler.wait_for_output(
        rf"runscheduler: pid {scheduler.pid}, interval 0\.5s, batch size 500, schedules \d+, "
        rf"transport sqs http://127\.0\.0\.1:\d+/? \(prefix {queue_prefix}\)\n"
    )
    assert line[0] in scheduler.stdout()
    assert scheduler.stderr() == ""
    assert scheduler.stop() == 0


def test_runjobs_names_its_two_processes_and_each_says_what_it_does(
    processes: ProcessGroup,
) -> None:
    both = processes.start("runjobs", env=without_logging(processes.env))
    line = both.wait_for_output(
        rf"runjobs: pid {both.pid}, runscheduler pid (\d+), runworker pid (\d+), "
        r"restarting both when a Python file changes\n"
    )
    both.wait_for_output(rf"runscheduler: pid {line[1]}, ")
    both.wait_for_output(
        rf"runworker: pid {line[2]}, worker processes \d+, queues high,default,low"
    )
    assert both.stop() == 0
    quiet = processes.start("runjobs", "--noreload", env=without_logging(processes.env))
    quiet.wait_for_output(rf"runjobs: pid {quiet.pid}, runscheduler pid \d+, runworker pid \d+\n")
    quiet.wait_for_output(r"runworker: pid \d+, worker processes \d+")
    quiet.wait_for_output(r"runscheduler: pid \d+, ")
    assert quiet.stop() == 0


# -- migrations ----------------------------------------------------------------------------------


def test_a_database_without_the_migrations_is_refused_with_run_migrate(
    processes: ProcessGroup, queue_prefix: str
) -> None:
    with private_database("unmigrated") as settings_dict:
        env = subprocess_env(queue_prefix=queue_prefix, settings_dict=settings_dict)

        def refused(command: str, *args: str) -> ManagedProcess:
            process = processes.run(command, *args, env=env, stderr_apart=True, timeout=30)
            assert process.returncode == 1, process.describe()
            assert "run manage.py migrate" in process.stderr(), process.describe()
            assert "does not exist" not in process.output()  # no SQL error, and no retrying it
            assert process.stdout() == ""  # no start-up line: it did not start
            return process

        # A database nobody migrated.
        worker = refused("runworker")
        assert re.search(
            r"^CommandError: runworker: database 'default' lacks \d+ migration\(s\) of "
            r"django_asyncjobs \(0001_initial, 0002_rescue, 0003_relay_index and \d+ more\); "
            r"run manage.py migrate$",
            worker.stderr(),
            re.MULTILINE,
        ), worker.describe()

        # A deploy whose migrate has not run yet: the last migrations are missing.
        migrate = processes.run("migrate", "django_asyncjobs", "0012", env=env, timeout=120)
        after_0012 = sorted(path.stem for path in MIGRATIONS.glob("0*.py"))[12:]
        named = ", ".join(after_0012[:3])
        if len(after_0012) > 3:
            named += f" and {len(after_0012) - 3} more"
        assert migrate.returncode == 0, migrate.describe()
        for command, args in [
            ("runscheduler", ()),
            ("runscheduler", ("--once",)),
            ("runworker", ()),
        ]:
            process = refused(command, *args)
            assert (
                f"{command}: database 'default' lacks {len(after_0012)} migration(s) of "
                f"django_asyncjobs ({named}); run manage.py migrate"
            ) in process.stderr()

        # Ours applied, other apps' not: the jobs may need their tables, the queues do not.
        migrate = processes.run("migrate", "django_asyncjobs", env=env, timeout=120)
        assert migrate.returncode == 0, migrate.describe()
        worker = processes.run("runworker", "--burst", env=env, stderr_apart=True, timeout=30)
        assert worker.returncode == 0, worker.describe()
        assert re.search(
            r"^runworker: warning: database 'default' has \d+ unapplied migration\(s\) of "
            r"(\w+, )*sessions(, \w+)*; jobs that use their tables may fail: "
            r"run manage.py migrate$",
            worker.stderr(),
            re.MULTILINE,
        ), worker.describe()


def test_a_database_that_cannot_be_reached_is_waited_for_then_refused(
    processes: ProcessGroup, queue_prefix: str
) -> None:
    from django.db import connection

    nowhere = {**connection.settings_dict, "PORT": str(closed_port())}
    env = subprocess_env(queue_prefix=queue_prefix, settings_dict=nowhere)
    worker = processes.run("runworker", env=env, stderr_apart=True, timeout=60)
    assert worker.returncode == 1, worker.describe()
    (waiting, refusal) = worker.stderr().splitlines()
    assert waiting.startswith("runworker: waiting up to 10 s for database 'default': ")
    assert refusal.startswith(
        f"CommandError: runworker: cannot connect to database 'default' "
        f"(127.0.0.1:{nowhere['PORT']}/{nowhere['NAME']}) after 10 s: "
    )
    assert "check DATABASES['default'] (host, port, name, user, password)" in refusal


# -- the transport -------------------------------------------------------------------------------

#: A mistake: the variables dropped, those set, and the fix the refusal must name.
MISTAKES: dict[str, tuple[tuple[str, ...], dict[str, str], str]] = {
    "no region": (
        ("AWS_DEFAULT_REGION", "AWS_REGION"),
        {},
        'set the AWS region: AWS_DEFAULT_REGION in the environment, or ASYNCJOBS["REGION_NAME"]',
    ),
    "no credentials": (
        AWS_CONFIGURATION,
        {"AWS_DEFAULT_REGION": "eu-west-1"},
        "give boto3 AWS credentials through its credentials chain",
    ),
    "an endpoint that is no URL": (
        (),
        {"AWS_ENDPOINT_URL_SQS": "localhost:4566"},
        'fix the SQS endpoint: ASYNCJOBS["ENDPOINT_URL"], AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL',
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
@pytest.mark.parametrize("command", ["runworker", "runscheduler"])
def test_an_aws_configuration_mistake_is_refused_at_once_with_the_fix(
    processes: ProcessGroup, tmp_path: Path, command: str, mistake: str
) -> None:
    drop, values, hint = MISTAKES[mistake]
    env = changed(
        processes.env,
        drop=drop,
        # Nor may boto3 find them in files or the instance metadata of this machine.
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        **values,
    )
    # Without the check it would retry for ever: the timeout fails the test instead.
    process = processes.run(command, env=env, stderr_apart=True, timeout=30)
    assert process.returncode == 1, process.describe()
    assert process.stderr().startswith(
        f"CommandError: {command}: the transport is configured wrong: "
    )
    assert hint in process.stderr(), process.describe()
    assert process.stdout() == ""


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        ("runworker", "worker cannot reach its transport, retrying"),
        ("runscheduler", "scheduler cannot relay jobs, retrying"),
    ],
)
def test_an_unreachable_endpoint_is_an_outage_logged_once_and_retried(
    processes: ProcessGroup, command: str, complaint: str
) -> None:
    jobs.echo.delay(key="waits")  # the scheduler only calls SQS when it has a job to relay
    env = changed(processes.env, AWS_ENDPOINT_URL_SQS=f"http://127.0.0.1:{closed_port()}")
    process = processes.start(command, env=env)
    process.wait_for_output(rf"{command}: pid {process.pid}, ")
    process.wait_for_output(complaint)
    with pytest.raises(ProcessTimeout):
        process.wait(3)  # still running, retrying in silence
    assert process.output().count(complaint) == 1, process.describe()
    assert "misconfigured" not in process.output()
    assert process.stop() == 0
