"""The process table: registration, heartbeats, who is alive running what, and what is amiss.

The queries and :class:`~django_asyncjobs.processes.Presence` are tested here against
PostgreSQL; in-process workers and schedulers show the rows they keep; the ``asyncjobs``
command and the admin show them to an operator. tests/processes/test_process_table.py runs the
same story with real ``runworker`` and ``runscheduler`` processes.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test import override_settings

from django_asyncjobs.models import Job, Process, ProcessKind
from django_asyncjobs.processes import (
    Presence,
    attention,
    consumes,
    scheduler_missing,
    unconsumed_queues,
)
from django_asyncjobs.queries import ProcessInfo, ProcessManager
from django_asyncjobs.scheduler import Scheduler
from django_asyncjobs.transports.memory import MemoryTransport
from django_asyncjobs.worker import Worker
from tests.conftest import _current_asyncjobs, drain, relay
from tests.support.admin import staff
from tests.support.processes import wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

logger = logging.getLogger("tests.processes")


def info(
    kind: str = "worker", *, name: str = "", queues: tuple[str, ...] = ("default",)
) -> ProcessInfo:
    process_id = uuid.uuid4()
    return ProcessInfo(
        id=process_id,
        kind=kind,
        name=name or f"host-{process_id.hex[:6]}:1",
        host="host",
        pid=1,
        queues=queues if kind == "worker" else (),
        concurrency=4 if kind == "worker" else None,
        version="9.9",
    )


def silent_for(process_id: uuid.UUID, seconds: float) -> None:
    """Make a process's last heartbeat *seconds* old (a process that stopped beating)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_process SET heartbeat_at = now() - %s * interval '1 second' "
            "WHERE id = %s",
            [seconds, process_id],
        )


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("asyncjobs", *args, stdout=out)
    return out.getvalue()


# -- queries -------------------------------------------------------------------------------------


def test_register_beat_and_unregister_keep_one_row_per_process() -> None:
    worker = info(queues=("high", "reports-*"))
    Process.objects.register(worker)
    row = Process.objects.get()
    assert (row.kind, row.name, row.queues, row.concurrency, row.version) == (
        "worker",
        worker.name,
        ["high", "reports-*"],
        4,
        "9.9",
    )
    assert row.started_at == row.heartbeat_at
    silent_for(worker.id, 30)
    assert Process.objects.beat(worker) is False  # the row was there: a heartbeat only
    beaten = Process.objects.get()
    assert beaten.heartbeat_at > row.heartbeat_at - dt.timedelta(seconds=1)
    assert beaten.started_at == row.started_at
    assert Process.objects.unregister(worker.id) is True
    assert not Process.objects.exists()
    # A row that was pruned (or never written) is written again by the next heartbeat.
    assert Process.objects.beat(worker) is True
    assert Process.objects.get().name == worker.name


def test_registering_replaces_the_row_of_a_gone_process_of_the_same_name() -> None:
    # A container restarted with the same host name and pid: the old row would show its jobs
    # twice. Another process of another name on that host keeps its row.
    old = info(name="box:1")
    Process.objects.register(old)
    other = info(name="box:7")
    Process.objects.register(other)
    new = info(name="box:1")
    Process.objects.register(new)
    assert set(Process.objects.values_list("id", flat=True)) == {new.id, other.id}


def test_alive_dead_and_what_each_process_runs_now() -> None:
    alive, dead = info(), info()
    Process.objects.register(alive)
    Process.objects.register(dead)
    silent_for(dead.id, 6)  # STALE_AFTER_SECONDS is 5 in tests/settings.py
    running = jobs.add.delay(1, 1)
    Job.objects.filter(pk=running.pk).update(status="running", worker=alive.name)
    Job.objects.filter(pk=jobs.add.delay(2, 2).pk).update(status="succeeded", worker=alive.name)
    assert [p.id for p in Process.objects.live()] == [alive.id]
    rows = {p.id: p for p in Process.objects.get_queryset().with_state()}
    assert rows[alive.id].alive is True and rows[dead.id].alive is False
    assert [(j["id"], j["name"]) for j in rows[alive.id].running_jobs] == [
        (str(running.id), jobs.add.name)
    ]
    assert rows[dead.id].running_jobs == []
    assert {p.id for p in Process.objects.live(stale_after_seconds=10)} == {alive.id, dead.id}


def test_prune_dead_deletes_only_rows_silent_for_longer_than_asked() -> None:
    kept, pruned = info(), info()
    for process in (kept, pruned):
        Process.objects.register(process)
    silent_for(kept.id, 3600)
    silent_for(pruned.id, 2 * 86400)
    assert Process.objects.prune_dead(older_than_seconds=86400) == 1
    assert list(Process.objects.values_list("id", flat=True)) == [kept.id]


# -- what needs attention ------------------------------------------------------------------------


def test_due_jobs_without_a_live_scheduler_need_attention() -> None:
    assert scheduler_missing() is False  # nothing waits
    later = jobs.add.using(run_after=3600).delay(1, 1)
    assert scheduler_missing() is False  # not due yet
    Job.objects.filter(pk=later.pk).delete()
    due = jobs.add.delay(1, 1)
    assert scheduler_missing() is True
    assert "no scheduler is alive" in attention().messages[0]
    scheduler = info("scheduler")
    Process.objects.register(scheduler)
    assert scheduler_missing() is False
    silent_for(scheduler.id, 6)  # its heartbeat went stale: dead
    assert scheduler_missing() is True
    Job.objects.filter(pk=due.pk).update(blocked=True)  # waits for dependencies, not for us
    assert scheduler_missing() is False


def test_queues_with_waiting_jobs_and_no_live_consumer_need_attention() -> None:
    jobs.add.delay(1, 1)  # default, due
    jobs.low_echo.delay("x")  # low, due
    sent = jobs.add.using(queue="reports-daily").delay(1, 1)
    Job.objects.filter(pk=sent.pk).update(status="queued")  # sent, not started
    jobs.add.using(queue="later", run_after=3600).delay(1, 1)  # not due: not waiting
    assert unconsumed_queues() == ["default", "low", "reports-daily"]
    Process.objects.register(info(queues=("high", "default")))
    Process.objects.register(info(queues=("reports-*",)))  # a pattern consumes by glob
    dead = info(queues=("low",))
    Process.objects.register(dead)
    silent_for(dead.id, 6)
    assert unconsumed_queues() == ["low"]
    found = attention()
    assert found.unconsumed_queues == ("low",)
    assert any("Queue 'low' has waiting jobs and no live worker" in m for m in found.messages)


def test_consumes_matches_names_and_glob_patterns() -> None:
    assert consumes(["default"], "default") and not consumes(["default"], "default-2")
    assert consumes(["reports-*"], "reports-daily") and not consumes(["reports-*"], "report")
    assert consumes(["mail-?"], "mail-1") and not consumes([], "default")


# -- Presence: the row a process keeps ----------------------------------------------------------


def test_presence_registers_at_its_first_tick_and_leaves_at_a_clean_stop() -> None:
    presence = Presence(
        kind=ProcessKind.WORKER,
        name="w:1",
        queues=["high", "default"],
        concurrency=2,
        logger=logger,
    )
    presence.unregister()  # never registered: nothing to do, no query
    assert not Process.objects.exists()
    presence.tick()
    row = Process.objects.get()
    assert (row.name, row.host, row.pid, row.queues, row.concurrency) == (
        "w:1",
        socket.gethostname(),
        os.getpid(),
        ["high", "default"],
        2,
    )
    from django_asyncjobs import __version__

    assert row.version == __version__
    presence.unregister()
    assert not Process.objects.exists()


def test_presence_survives_a_database_that_is_away_and_registers_once_it_is_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def away(self: Any, process: ProcessInfo) -> None:
        raise OperationalError("connection refused")

    with override_settings(
        ASYNCJOBS={
            **_current_asyncjobs(),
            "HEARTBEAT_INTERVAL_SECONDS": 0.01,
            "STALE_AFTER_SECONDS": 60,
        }
    ):
        presence = Presence(kind=ProcessKind.SCHEDULER, logger=logger)
    with monkeypatch.context() as patch:
        patch.setattr(ProcessManager, "register", away)
        presence.tick()  # logged, not raised
    assert "cannot update the process table" in caplog.text
    assert not Process.objects.exists()

    def written() -> bool:
        presence.tick()
        return Process.objects.exists()

    wait_until(written, timeout=5, message="the heartbeat never wrote the row")
    assert Process.objects.get().kind == "scheduler"


def test_a_worker_warns_once_while_due_jobs_wait_without_a_scheduler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tests.processes")
    with override_settings(
        ASYNCJOBS={
            **_current_asyncjobs(),
            "HEARTBEAT_INTERVAL_SECONDS": 0.01,
            "STALE_AFTER_SECONDS": 0.05,
        }
    ):
        presence = Presence(kind=ProcessKind.WORKER, queues=["default"], logger=logger)
        jobs.add.delay(1, 1)

        def warnings() -> int:
            presence.tick()
            return caplog.text.count("no scheduler is alive")

        wait_until(warnings, timeout=5, message="no warning about the missing scheduler")
        for _ in range(10):  # later looks find the same: no second warning
            presence.tick()
        assert caplog.text.count("no scheduler is alive") == 1
        scheduler = info("scheduler")
        Process.objects.register(scheduler)

        def cleared() -> bool:
            Process.objects.beat(scheduler)
            presence.tick()
            return "a scheduler is alive again" in caplog.text

        wait_until(cleared, timeout=5, message="the warning never cleared")


def test_a_scheduler_warns_about_queues_no_live_worker_consumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with override_settings(
        ASYNCJOBS={
            **_current_asyncjobs(),
            "HEARTBEAT_INTERVAL_SECONDS": 0.01,
            "STALE_AFTER_SECONDS": 0.05,
        }
    ):
        presence = Presence(kind=ProcessKind.SCHEDULER, logger=logger)
        jobs.low_echo.delay("x")

        def warned() -> bool:
            presence.tick()
            return "no live worker consumes it queue=low" in caplog.text

        wait_until(warned, timeout=5, message="no warning about queue low")


# -- workers and schedulers keep their rows ------------------------------------------------------


@pytest.fixture
def worker_thread(memory_transport: MemoryTransport) -> Iterator[Worker]:
    worker = Worker(
        transport=memory_transport,
        queues=["high", "reports-*"],
        concurrency=3,
        worker_id="box:42",
        wait_seconds=1,
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(force=True)
        thread.join(15)


def test_a_running_worker_is_registered_with_what_it_runs_and_leaves_when_stopped(
    worker_thread: Worker, memory_transport: MemoryTransport
) -> None:
    row = wait_until(
        lambda: Process.objects.filter(name="box:42").first(),
        timeout=5,
        message="the worker never registered",
    )
    assert (row.kind, row.queues, row.concurrency) == ("worker", ["high", "reports-*"], 3)
    job = jobs.slow_job.using(queue="high").delay(2, key="registry")
    relay(memory_transport)

    def running() -> list[Any]:
        (process,) = Process.objects.get_queryset().with_state().filter(name="box:42")
        return list(process.running_jobs)

    (entry,) = wait_until(running, timeout=10, message="the job never showed as running")
    assert entry["id"] == str(job.id) and entry["name"] == jobs.slow_job.name
    worker_thread.stop()  # graceful: the job finishes, then the worker leaves
    wait_until(
        lambda: not Process.objects.filter(name="box:42").exists(),
        timeout=15,
        message="the worker's row outlived its clean stop",
    )


def test_a_burst_worker_that_finds_its_queues_empty_leaves_no_row(
    memory_transport: MemoryTransport,
) -> None:
    drain(memory_transport)
    assert not Process.objects.exists()


def test_a_running_scheduler_is_registered_and_leaves_when_stopped() -> None:
    scheduler = Scheduler(transport=MemoryTransport())
    thread = threading.Thread(target=scheduler.run)
    thread.start()
    try:
        row = wait_until(
            lambda: Process.objects.filter(kind="scheduler").first(),
            timeout=5,
            message="the scheduler never registered",
        )
        assert (row.name, row.queues, row.concurrency) == (
            f"{socket.gethostname()}:{os.getpid()}",
            [],
            None,
        )
        assert scheduler_missing() is False
    finally:
        scheduler.stop()
        thread.join(10)
    assert not Process.objects.exists()


def test_the_scheduler_prunes_rows_of_processes_dead_for_a_day() -> None:
    gone = info()
    Process.objects.register(gone)
    silent_for(gone.id, 2 * 86400)
    recent = info()
    Process.objects.register(recent)
    silent_for(recent.id, 600)  # dead, still shown
    scheduler = Scheduler(transport=MemoryTransport())
    assert scheduler.prune_processes() == 1
    assert scheduler.prune_processes() == 0  # not again so soon
    assert list(Process.objects.values_list("id", flat=True)) == [recent.id]


# -- what an operator sees -----------------------------------------------------------------------


def test_processes_command_lists_each_process_with_what_it_runs() -> None:
    assert "no processes registered" in run("processes")
    worker, scheduler = info(name="box:42", queues=("high", "default")), info("scheduler")
    Process.objects.register(worker)
    Process.objects.register(scheduler)
    silent_for(scheduler.id, 6)
    job = jobs.add.delay(1, 1)
    Job.objects.filter(pk=job.pk).update(status="running", worker="box:42")
    header, *lines = run("processes").splitlines()
    assert header.split()[:5] == ["STATE", "KIND", "NAME", "HOST", "PID"]
    by_kind = {line.split()[1]: line.split() for line in lines if line.split()[1:2]}
    assert by_kind["worker"][:7] == ["alive", "worker", "box:42", "host", "1", "high,default", "4"]
    assert by_kind["worker"][-2:] == ["1:", jobs.add.name]
    assert by_kind["scheduler"][0] == "dead"
    listed = [json.loads(line) for line in run("processes", "--json").splitlines()]
    as_json = {p["kind"]: p for p in listed}
    assert as_json["worker"]["alive"] is True and as_json["scheduler"]["alive"] is False
    assert as_json["worker"]["queues"] == ["high", "default"]
    assert [j["id"] for j in as_json["worker"]["running_jobs"]] == [str(job.id)]


def test_stats_says_when_no_scheduler_is_alive_and_a_queue_has_no_consumer() -> None:
    jobs.add.delay(1, 1)
    out = run("stats")
    assert "processes alive: 0 scheduler(s), 0 worker(s)" in out
    assert "WARNING: Due jobs are waiting and no scheduler is alive" in out
    assert "WARNING: Queue 'default' has waiting jobs and no live worker consumes it" in out
    Process.objects.register(info("scheduler"))
    Process.objects.register(info(queues=("default",)))
    out = run("stats")
    assert "processes alive: 1 scheduler(s), 1 worker(s)" in out
    assert "WARNING" not in out


def test_admin_lists_processes_and_shows_the_banner_on_the_job_pages() -> None:
    worker = info(name="box:42")
    Process.objects.register(worker)
    job = jobs.add.delay(1, 1)  # due, and no scheduler
    Job.objects.filter(pk=jobs.add.delay(2, 2).pk).update(status="running", worker="box:42")
    client = staff("view_job", "view_process")
    page = client.get("/admin/django_asyncjobs/process/").content.decode()
    assert "box:42" in page and "asyncjobs-process-alive" in page
    assert '1: <a href="/admin/django_asyncjobs/job/' in page and jobs.add.name in page
    for url in ("/admin/django_asyncjobs/job/", "/admin/django_asyncjobs/job/overview/"):
        page = client.get(url).content.decode()
        assert "asyncjobs-attention" in page, url
        assert "no scheduler is alive" in page, url
        assert 'href="/admin/django_asyncjobs/process/"' in page, url
    Process.objects.register(info("scheduler"))
    Job.objects.filter(pk=job.pk).delete()
    assert "asyncjobs-attention" not in client.get("/admin/django_asyncjobs/job/").content.decode()


def test_the_process_list_needs_its_view_permission() -> None:
    client = staff("view_job")
    assert client.get("/admin/django_asyncjobs/process/").status_code == 403
    jobs.add.delay(1, 1)
    page = client.get("/admin/django_asyncjobs/job/").content.decode()
    # The banner without the link the user could not follow.
    assert "no scheduler is alive" in page
    assert "/admin/django_asyncjobs/process/" not in page
