"""The admin in a real browser: Playwright driving Debian's Chromium against a live server, with
a real scheduler and worker running the retried job.

Set ``ASYNCJOBS_SCREENSHOTS=docs`` to write the screenshots the README shows into ``docs/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from django_asyncjobs.models import Job
from tests.support.browser import screenshot
from tests.support.flows import start_scheduler, start_worker, wait_for_final
from tests.support.processes import ProcessGroup

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_finds_a_failed_job_retries_it_and_sees_it_succeed(
    page: Any, live_server: Any, processes: ProcessGroup, tmp_path: Path
) -> None:
    from tests.testapp import jobs

    User.objects.create_superuser("ops", password="a-long-test-password")
    start_scheduler(processes)
    worker = start_worker(processes)
    flaky = jobs.flaky_once.delay("invoice-42")
    jobs.add.delay(2, 3)
    first = wait_for_final([flaky], processes)[flaky.id]
    assert first.status == "failed"
    worker.stop()

    page.goto(f"{live_server.url}/admin/login/?next=/admin/django_asyncjobs/job/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")

    page.click("#changelist-filter a[href*='status__exact=failed']")
    page.wait_for_url("**status__exact=failed**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert "tests.testapp.jobs.flaky_once" in rows.first.inner_text()
    assert "1 / 1" in rows.first.inner_text()
    screenshot(page, "admin-list.png", tmp_path)

    page.click("#result_list tbody tr a:text('tests.testapp.jobs.flaky_once')")
    page.wait_for_selector("text=Traceback (most recent call last)")
    assert "invoice-42: the first run always fails" in page.content()
    history = page.locator(".inline-group").inner_text()
    assert "failed" in history and worker_id_of(first) in history
    screenshot(page, "admin-detail.png", tmp_path)

    page.goto(f"{live_server.url}/admin/django_asyncjobs/job/?status__exact=failed")
    page.check("#result_list tbody tr input.action-select")
    page.select_option("select[name=action]", "retry_jobs")
    page.click("button[name=index]")
    page.wait_for_selector("text=Are you sure you want to retry 1 job(s)?")
    page.click("input[value='Yes, retry']")
    page.wait_for_selector("text=1 job(s) retried")

    start_worker(processes)
    final = wait_for_final([flaky], processes)[flaky.id]
    assert final.status == "succeeded" and final.result == "invoice-42 fixed"
    page.goto(f"{live_server.url}/admin/django_asyncjobs/job/{flaky.id}/change/")
    page.wait_for_selector(".asyncjobs-status:text('succeeded')")
    assert "invoice-42 fixed" in page.content()

    page.goto(f"{live_server.url}/admin/django_asyncjobs/job/")
    page.click("a:text('Queue overview')")
    page.wait_for_selector("table.asyncjobs-overview")
    overview = page.locator("table.asyncjobs-overview").inner_text()
    assert "default" in overview
    assert page.locator("svg.asyncjobs-chart").count() >= 1
    screenshot(page, "admin-overview.png", tmp_path)
    assert Job.objects.filter(status="succeeded").count() == 2


def worker_id_of(job: Job) -> str:
    return job.worker


def log_in(page: Any, live_server: Any, next_path: str) -> None:
    """Log in as the superuser "ops" on the admin's login page, then go to *next_path*."""
    User.objects.create_superuser("ops", password="a-long-test-password")
    page.goto(f"{live_server.url}/admin/login/?next={next_path}")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")


def test_an_operator_retries_a_failed_job_from_its_page(
    page: Any, live_server: Any, tmp_path: Path
) -> None:
    from tests.testapp import jobs

    job = jobs.fails_now.delay("from-the-page")
    Job.objects.filter(pk=job.pk).update(status="failed", error="RuntimeError: it broke")
    job_path = f"/admin/django_asyncjobs/job/{job.pk}/change/"
    log_in(page, live_server, job_path)
    tools = page.locator(".object-tools")
    tools.locator("button:text('Retry')").wait_for()
    assert tools.locator("form.asyncjobs-job-action button").all_inner_texts() == [
        "RETRY…",
        "MARK AS SUCCEEDED…",
        "RUN AGAIN…",
    ]
    screenshot(page, "admin-job-actions.png", tmp_path)

    tools.locator("button:text('Retry')").click()
    page.wait_for_selector("text=Are you sure you want to retry 1 job(s)?")
    page.click("input[value='Yes, retry']")

    page.wait_for_selector("text=1 job(s) retried.")
    assert page.url == f"{live_server.url}{job_path}"
    assert page.locator(".asyncjobs-status").inner_text() == "scheduled"
    assert "CANCEL…" in tools.locator("form.asyncjobs-job-action button").all_inner_texts()
    assert Job.objects.get(pk=job.pk).status == "scheduled"
