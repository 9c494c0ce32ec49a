"""The admin in a real browser: Playwright driving Debian's Chromium against a live server, with
a real scheduler and worker running the retried job.

Set ``ASYNCJOBS_SCREENSHOTS=docs`` to write the screenshots the README shows into ``docs/``:
the list and the overview from a busy day of seeded jobs (:func:`seed_a_busy_day`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from django_asyncjobs.models import Job, JobAttempt
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
    assert Job.objects.filter(status="succeeded").count() == 2


#: A day of a shop's jobs, for the screenshots: (name, queue, how many, statuses to cycle).
_BUSY_DAY = [
    ("shop.jobs.send_receipt", "high", 14, ["succeeded", "succeeded", "queued", "running"]),
    ("shop.jobs.charge_card", "high", 6, ["succeeded", "failed", "succeeded"]),
    ("reports.jobs.build_monthly_report", "default", 8, ["succeeded", "scheduled", "cancelled"]),
    ("media.jobs.make_thumbnail", "default", 12, ["succeeded", "succeeded", "failed", "queued"]),
    ("emails.jobs.send_newsletter", "low", 10, ["scheduled", "succeeded", "running"]),
]


def seed_a_busy_day() -> int:
    """Write dozens of jobs over three queues in every status, finished over the last hour, as
    the screenshots in ``docs/`` show them; return how many."""
    now = timezone.now()
    count = 0
    for name, queue, many, statuses in _BUSY_DAY:
        for i in range(many):
            status = statuses[i % len(statuses)]
            created = now - dt.timedelta(minutes=55 - 4 * i, seconds=7 * count)
            started = created + dt.timedelta(seconds=2 + i % 5)
            job = Job(
                name=name,
                queue=queue,
                status=status,
                args=[1000 + count],
                priority=10 if queue == "high" else 0,
                created_at=created,
                run_at=created,
                worker="web-1:4242" if status in ("running", "succeeded", "failed") else "",
            )
            if status == "scheduled":
                job.run_at = now + dt.timedelta(minutes=5 + 17 * i)
            elif status == "queued":
                job.enqueued_at = now  # recent: the scheduler does not send it again
            elif status in ("running", "succeeded", "failed"):
                job.attempts = job.total_attempts = 1 + (status == "failed") * 3
                job.started_at = started
                if status == "running":
                    job.started_at = now - dt.timedelta(seconds=20 + 9 * i)
                # A running job's heartbeat ahead of time: no reaper takes it as lost meanwhile.
                job.heartbeat_at = now + dt.timedelta(hours=1)
                if status != "running":
                    job.finished_at = started + dt.timedelta(seconds=1 + (i * 7) % 40)
                if status == "succeeded":
                    job.result = "ok"
                if status == "failed":
                    job.error = "TimeoutError: the card processor did not answer"
            elif status == "cancelled":
                job.finished_at = started
                job.cancel_requested_at, job.cancel_requested_by = started, "ops (admin)"
            job.save(force_insert=True)
            if job.started_at is not None:
                JobAttempt.objects.create(
                    job=job,
                    number=job.attempts,
                    worker=job.worker,
                    started_at=job.started_at,
                    finished_at=job.finished_at,
                    outcome="" if status == "running" else status,
                    error=job.error,
                )
            count += 1
    return count


def test_screenshots_of_a_busy_admin(
    page: Any, live_server: Any, processes: ProcessGroup, tmp_path: Path
) -> None:
    start_scheduler(processes)  # alive, and a worker too: no "nobody runs them" banner
    start_worker(processes)
    seeded = seed_a_busy_day()
    page.set_viewport_size({"width": 1700, "height": 900})  # every column of the list fits
    log_in(page, live_server, "/admin/django_asyncjobs/job/")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == seeded
    statuses = set(page.locator("#result_list .asyncjobs-status").all_inner_texts())
    assert statuses == {"scheduled", "queued", "running", "succeeded", "failed", "cancelled"}
    # Every column in sight: the last one ends inside the list's box.
    inside = page.evaluate(
        """() => document.querySelector("#changelist .results").getBoundingClientRect().right
            >= document.querySelector("th.column-duration_display").getBoundingClientRect().right"""
    )
    assert inside, "the list's last column is out of sight"
    screenshot(page, "admin-list.png", tmp_path)

    page.click("a:text('Queue overview')")
    page.wait_for_selector("table.asyncjobs-overview")
    queues = page.locator("table.asyncjobs-overview tbody tr td:first-child").all_inner_texts()
    assert queues == ["default", "high", "low"]
    assert page.locator("svg.asyncjobs-chart polyline.asyncjobs-chart-failed").count() == 2
    screenshot(page, "admin-overview.png", tmp_path)


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
