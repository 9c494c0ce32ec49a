"""Django's Tasks API with a real ``runscheduler`` and ``runworker`` and moto_server: results come
back, and each of Django's task signals is sent by the process that should send it."""

from __future__ import annotations

import os
from typing import Any

import pytest

from django_asyncjobs.models import Job
from django_asyncjobs.tasks_compat import ACCEPTS_TASK_OPTIONS
from tests.support.flows import start_scheduler, start_worker, wait_for_final
from tests.support.processes import ProcessGroup
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def signals_for(result_id: str) -> list[tuple[str, int, str]]:
    """Django's task signals recorded for *result_id*: (signal, sending pid, status)."""
    rows = Execution.objects.filter(job__startswith="signal:", key=result_id).order_by("id")
    return [(r.job.removeprefix("signal:"), r.payload["pid"], r.payload["status"]) for r in rows]


def test_tasks_run_in_real_processes_and_signals_come_from_the_right_one(
    processes: ProcessGroup,
) -> None:
    start_scheduler(processes)
    worker = start_worker(processes, "--concurrency", "2")
    results: list[Any] = [
        tasks.add.enqueue(2, 3),
        tasks.whoami.enqueue("real"),
        tasks.async_mul.enqueue(3, 4),
    ]
    # On Django 6.0 the retry would wait for the project's default backoff (a minute).
    retried: Any = tasks.fails_once.enqueue() if ACCEPTS_TASK_OPTIONS else None
    waited = [*results, retried] if retried else results
    wait_for_final([Job.objects.get(pk=r.id) for r in waited], processes)
    for result in waited:
        result.refresh()
    add, whoami, mul = results
    assert add.return_value == 5 and mul.return_value == 12
    assert whoami.return_value == {"key": "real", "attempt": 1, "id": whoami.id}
    worker_pids = {int(p) for p in _pids(worker.output())}
    if retried is not None:
        assert retried.return_value == 2 and len(retried.errors) == 1
        # One worker id per attempt, each naming a worker process of this runworker.
        assert len(retried.worker_ids) == retried.attempts == 2, retried.worker_ids
        assert {int(w.rsplit(":", 1)[1]) for w in retried.worker_ids} <= worker_pids
    for result in (add, whoami, mul):
        sent = signals_for(result.id)
        assert [s for s, _, _ in sent] == ["task_enqueued", "task_started", "task_finished"]
        assert sent[0][1] == os.getpid()  # enqueued here
        assert {pid for _, pid, _ in sent[1:]} <= worker_pids  # started and finished there


def _pids(output: str) -> list[str]:
    import re

    return re.findall(r"pid=(\d+)", output) + re.findall(r"worker_id=\S+:(\d+)", output)
