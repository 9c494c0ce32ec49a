"""The process table with real processes: ``runworker`` without ``runscheduler`` is noticed by
the worker's log, ``asyncjobs stats`` and the admin; ``asyncjobs processes`` lists both kinds
with what they run; a worker killed with SIGKILL shows as dead once its heartbeat is stale.

The processes run with ``STALE_AFTER_SECONDS`` = 2 (heartbeats every 0.5 s), so that each look
and each death is seen within seconds; the test's own ``asyncjobs`` commands and admin pages use
the same setting. One ``asyncjobs stats`` runs as a process of its own, as an operator runs it;
the others run in the test's process, which is faster to poll.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client, override_settings

from django_asyncjobs.models import Job
from tests.conftest import _current_asyncjobs
from tests.support.flows import FLOW_TIMEOUT_SECONDS, start_scheduler, start_worker, wait_for_final
from tests.support.processes import ManagedProcess, ProcessGroup, wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

STALE_AFTER_SECONDS = 2
NO_SCHEDULER = "no scheduler is alive"


@pytest.fixture
def stale_soon(processes: ProcessGroup, queue_prefix: str) -> Iterator[None]:
    """Processes started by the test, and the test itself, call a process dead after 2 s."""
    processes.env["ASYNCJOBS_TEST_STALE_AFTER"] = str(STALE_AFTER_SECONDS)
    with override_settings(
        ASYNCJOBS={**_current_asyncjobs(), "STALE_AFTER_SECONDS": STALE_AFTER_SECONDS}
    ):
        yield


def asyncjobs(*args: str) -> str:
    """Run ``manage.py asyncjobs <args>`` in this process; return its output."""
    out = io.StringIO()
    call_command("asyncjobs", *args, stdout=out)
    return out.getvalue()


def listed() -> dict[int, dict[str, object]]:
    """Return the processes ``asyncjobs processes --json`` lists, by pid."""
    rows = [json.loads(line) for line in asyncjobs("processes", "--json").splitlines()]
    return {int(row["pid"]): row for row in rows}


def child_pid(worker: ManagedProcess) -> int:
    """Return the pid of the worker process ``runworker`` (the supervisor) started."""
    match = worker.wait_for_output(r"worker process started pid=(\d+)")
    return int(match[1])


def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin", password="x"))
    return client


def test_a_worker_without_a_scheduler_is_noticed_and_both_are_listed_until_one_dies(
    processes: ProcessGroup, stale_soon: None
) -> None:
    waiting = jobs.add.delay(2, 3)  # due now; nothing will send it without a scheduler
    worker = start_worker(processes, "--queues", "default,high", "--concurrency", "2")
    pid = child_pid(worker)

    # The worker's first look, one stale window after its start, finds no scheduler.
    worker.wait_for_output(NO_SCHEDULER, timeout=30)
    command = processes.run("asyncjobs", "stats")
    assert command.returncode == 0, command.describe()
    stats = command.output()
    assert "processes alive: 0 scheduler(s), 1 worker(s)" in stats, stats
    assert f"WARNING: Due jobs are waiting and {NO_SCHEDULER}" in stats, stats
    client = admin_client()
    overview = client.get("/admin/django_asyncjobs/job/overview/").content.decode()
    assert NO_SCHEDULER in overview and "asyncjobs-attention" in overview
    assert Job.objects.get(pk=waiting.pk).status == "scheduled"

    scheduler = start_scheduler(processes)
    wait_for_final([waiting], processes)
    assert Job.objects.get(pk=waiting.pk).result == 5
    worker.wait_for_output("a scheduler is alive again", timeout=30)
    stats = asyncjobs("stats")
    assert "processes alive: 1 scheduler(s), 1 worker(s)" in stats, stats
    assert "WARNING" not in stats, stats
    overview = client.get("/admin/django_asyncjobs/job/overview/").content.decode()
    assert "asyncjobs-attention" not in overview

    rows = listed()
    assert set(rows) == {pid, scheduler.pid}, rows
    assert rows[pid]["kind"] == "worker" and rows[pid]["alive"] is True
    assert rows[pid]["queues"] == ["default", "high"] and rows[pid]["concurrency"] == 2
    assert rows[scheduler.pid]["kind"] == "scheduler" and rows[scheduler.pid]["alive"] is True
    table = asyncjobs("processes")
    assert re.search(rf"^alive +worker +\S+:{pid} +\S+ +{pid} +default,high +2 ", table, re.M), (
        table
    )
    assert re.search(rf"^alive +scheduler +\S+:{scheduler.pid} ", table, re.M), table

    # The whole runworker (supervisor and worker process) dies at once: a lost machine.
    worker.kill()
    wait_until(
        lambda: listed()[pid]["alive"] is False,
        timeout=FLOW_TIMEOUT_SECONDS,
        message=lambda: f"the killed worker never showed as dead\n{processes.report()}",
    )
    assert re.search(rf"^dead +worker +\S+:{pid} ", asyncjobs("processes"), re.M)
    # A queue whose only worker died: the scheduler says so, and so does stats.
    orphan = jobs.add.delay(1, 1)
    scheduler.wait_for_output(r"no live worker consumes it queue=default", timeout=30)
    stats = asyncjobs("stats")
    assert "processes alive: 1 scheduler(s), 0 worker(s); 1 dead" in stats, stats
    assert "WARNING: Queue 'default' has waiting jobs and no live worker consumes it" in stats
    assert Job.objects.get(pk=orphan.pk).status == "queued"

    # A clean stop takes the scheduler's row away.
    assert scheduler.stop() == 0, scheduler.describe()
    assert scheduler.pid not in listed()


def test_a_cleanly_stopped_worker_leaves_no_row(processes: ProcessGroup, stale_soon: None) -> None:
    worker = start_worker(processes, "--processes", "2")
    wait_until(
        lambda: len(listed()) == 2,
        timeout=30,
        message=lambda: f"two worker processes never registered\n{worker.describe()}",
    )
    assert worker.stop() == 0, worker.describe()
    assert listed() == {}
