"""Pausing a queue with real processes: ``manage.py asyncjobs pause`` while ``runscheduler`` and
``runworker`` run holds its jobs (saying why), survives a scheduler restart, and ``resume``
lets them run at once; the commands' exit codes."""

from __future__ import annotations

import re

import pytest

from django_asyncjobs.models import Job
from tests.support.flows import assert_succeeded, start_scheduler, start_worker, wait_for_final
from tests.support.processes import ManagedProcess, ProcessGroup
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

#: A resumed queue's job must have run by then, though the scheduler polls every 30 s.
RESUME_WAKE_SECONDS = 20.0


def asyncjobs(processes: ProcessGroup, *args: str) -> ManagedProcess:
    """Run ``manage.py asyncjobs ARGS`` to its end, as an operator would."""
    return processes.run("asyncjobs", *args, timeout=60)


def test_a_paused_queue_holds_its_jobs_across_a_scheduler_restart_until_resumed(
    processes: ProcessGroup,
) -> None:
    # A 30 s poll: only resume's NOTIFY explains a quick start after it.
    scheduler = start_scheduler(processes, "--interval", "30")
    start_worker(processes, "--queues", "high,default")

    paused = asyncjobs(processes, "pause", "default", "--reason", "deploy", "--by", "alice")
    assert paused.returncode == 0, paused.describe()
    held = jobs.add.delay(20, 22)
    # A job of another queue, enqueued after: once it ran, the scheduler has had its chance.
    assert_succeeded(wait_for_final([jobs.high_echo.delay("a")], processes).popitem()[1], "a")
    assert Job.objects.get(pk=held.pk).status == "scheduled"
    listing = asyncjobs(processes, "list", "--queue", "default").output()
    assert re.search(r"default \(paused\)", listing), listing
    assert re.search(
        r"queue 'default' is paused since \S+ \S+ UTC by alice: deploy; 1 job\(s\) above wait",
        listing,
    ), listing

    # The pause lives in PostgreSQL: a new scheduler keeps it.
    assert scheduler.stop() == 0, scheduler.describe()
    start_scheduler(processes, "--interval", "30")
    assert_succeeded(wait_for_final([jobs.high_echo.delay("b")], processes).popitem()[1], "b")
    assert Job.objects.get(pk=held.pk).status == "scheduled"
    stats = asyncjobs(processes, "stats").output()
    rows = {line.split()[0]: line.split() for line in stats.splitlines() if line[:1] != "q"}
    assert rows["default"][-1] == "yes", stats

    resumed = asyncjobs(processes, "resume", "default", "--by", "bob")
    assert resumed.returncode == 0, resumed.describe()
    assert "queue 'default' resumed" in resumed.output()
    # Well within the 30 s poll: resume woke the scheduler.
    row = wait_for_final([held], processes, timeout=RESUME_WAKE_SECONDS)[held.id]
    assert_succeeded(row, 42)


def test_pause_and_resume_exit_codes(processes: ProcessGroup) -> None:
    unknown = asyncjobs(processes, "pause", "defualt")
    assert unknown.returncode == 1, unknown.describe()
    assert "unknown queue 'defualt'" in unknown.output()
    assert "pass --force" in unknown.output()
    forced = asyncjobs(processes, "pause", "defualt", "--force")
    assert forced.returncode == 0, forced.describe()
    assert "warning: queue 'defualt' is not in ASYNCJOBS['QUEUES']" in forced.output()

    first = asyncjobs(processes, "pause", "default")
    again = asyncjobs(processes, "pause", "default")
    assert (first.returncode, again.returncode) == (0, 0), again.describe()
    assert "nothing changed" in again.output()
    resumed = asyncjobs(processes, "resume", "default")
    not_paused = asyncjobs(processes, "resume", "default")
    assert (resumed.returncode, not_paused.returncode) == (0, 0), not_paused.describe()
    assert "queue 'default' is not paused; nothing changed" in not_paused.output()
    assert asyncjobs(processes, "resume", "nowhere").returncode == 1
    bad = asyncjobs(processes, "pause", "no.dots")
    assert bad.returncode == 2, bad.describe()  # argparse: a usage error
