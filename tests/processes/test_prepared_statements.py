"""``runscheduler`` and ``runworker`` with ``PREPARED_STATEMENTS`` on run jobs as without it."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.conftest import _current_asyncjobs
from tests.support.flows import (
    assert_succeeded,
    runs,
    start_scheduler,
    start_worker,
    wait_for_final,
)
from tests.support.processes import ProcessGroup
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_jobs_run_to_success_with_prepared_statements(processes: ProcessGroup) -> None:
    processes.env = {**processes.env, "ASYNCJOBS_TEST_PREPARED": "1"}
    scheduler = start_scheduler(processes)
    worker = start_worker(processes, "--concurrency", "3")
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), "PREPARED_STATEMENTS": True}):
        enqueued = {i: jobs.add.delay(i, i) for i in range(30)}
    rows = wait_for_final(enqueued.values(), processes)
    for i, job in enqueued.items():
        assert_succeeded(rows[job.id], 2 * i)
    assert runs("add") == 30
    assert scheduler.stop() == 0, scheduler.describe()
    assert worker.stop() == 0, worker.describe()
    assert "Traceback" not in worker.output(), worker.output()
