"""An operator steers real processes from the admin in Chromium: the processes page, pausing and
resuming a queue, a job page's buttons, all followed by the live pages without a reload.

``runscheduler`` and ``runworker`` run as subprocesses against the live server's database.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_asyncjobs.models import Job
from tests.browser.test_admin_live import (
    SEEN_WITHIN_MS,
    mark,
    refresh_every_second,
    same_document,
    sign_in,
)
from tests.support.flows import start_scheduler, start_worker, wait_for_final
from tests.support.processes import ProcessGroup
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

PROCESSES = "/admin/django_asyncjobs/process/"
OVERVIEW = "/admin/django_asyncjobs/job/overview/"


def job_page(job: Job) -> str:
    return f"/admin/django_asyncjobs/job/{job.pk}/change/"


def test_an_operator_sees_the_processes_pauses_a_queue_and_retries_a_job_from_its_page(
    page: Any, live_server: Any, processes: ProcessGroup
) -> None:
    from playwright.sync_api import expect

    scheduler = start_scheduler(processes)
    worker = start_worker(processes, "--concurrency", "2")
    flaky = jobs.flaky_once.delay("live-1")
    assert wait_for_final([flaky], processes)[flaky.id].status == "failed"

    # The processes page lists both, with their pids.
    sign_in(page, live_server, PROCESSES)
    listed = page.locator("#result_list")
    expect(listed).to_contain_text("scheduler", timeout=SEEN_WITHIN_MS)
    expect(listed).to_contain_text("worker")
    expect(listed).to_contain_text(str(scheduler.pid))

    # Pause "default" from the queue overview, through its confirmation page.
    page.goto(f"{live_server.url}{OVERVIEW}")
    row = page.locator("table.asyncjobs-overview tbody tr").filter(has_text="default")
    row.locator("input.asyncjobs-pause-button").click()
    page.fill("#id_reason", "browser test")
    page.click("input[value='Yes, pause queue default']")
    expect(page.locator("table.asyncjobs-overview")).to_contain_text("browser test")

    # A job enqueued now waits, and its page says why, live.
    waiting = jobs.add.delay(20, 22)
    page.goto(f"{live_server.url}{job_page(waiting)}")
    expect(page.locator("#content-main")).to_contain_text("paused")
    assert Job.objects.get(pk=waiting.pk).status == "scheduled"
    mark(page)
    refresh_every_second(page)

    # Resume from the overview in a second tab; the job page follows without a reload.
    overview = page.context.new_page()
    overview.goto(f"{live_server.url}{OVERVIEW}")
    row = overview.locator("table.asyncjobs-overview tbody tr").filter(has_text="default")
    row.locator("input.asyncjobs-resume-button").click()
    overview.click("input[value='Yes, resume queue default']")
    expect(page.locator(".asyncjobs-status")).to_have_text("succeeded", timeout=SEEN_WITHIN_MS)
    assert same_document(page)
    assert Job.objects.get(pk=waiting.pk).result == 42

    # Retry the failed job from its page's button; the worker runs it and the page follows.
    page.goto(f"{live_server.url}{job_page(flaky)}")
    page.locator(".object-tools button:text('Retry')").click()
    page.click("input[value='Yes, retry']")
    page.wait_for_selector("text=1 job(s) retried.")
    mark(page)
    refresh_every_second(page)
    expect(page.locator(".asyncjobs-status")).to_have_text("succeeded", timeout=SEEN_WITHIN_MS)
    assert same_document(page)
    assert Job.objects.get(pk=flaky.pk).result == "live-1 fixed"
    assert worker.returncode is None and scheduler.returncode is None
