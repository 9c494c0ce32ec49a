"""The Job admin: list, filters, search, read-only detail with attempt history, confirmed and
permission-guarded actions written to the admin log, and the queue overview."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from django_asyncjobs.conf import get_settings
from django_asyncjobs.models import Job
from django_asyncjobs.transports.sqs import SQSTransport
from tests.support.admin import staff
from tests.testapp import jobs

pytestmark = pytest.mark.django_db

URL = "/admin/django_asyncjobs/job/"


def test_changelist_filters_and_search() -> None:
    a = jobs.add.delay(1, 2)
    jobs.high_echo.delay("x")
    Job.objects.filter(pk=a.pk).update(status="failed", attempts=2)
    client = staff("view_job")
    page = client.get(URL).content.decode()
    assert "tests.testapp.jobs.add" in page and "tests.testapp.jobs.high_echo" in page
    assert "2 / 4" in page  # attempts of max_retries + 1
    assert "asyncjobs-status" in page  # coloured status badges
    assert listed(client, status__exact="failed") == {"tests.testapp.jobs.add"}
    assert listed(client, queue="high") == {"tests.testapp.jobs.high_echo"}
    assert listed(client, name="tests.testapp.jobs.add") == {"tests.testapp.jobs.add"}
    assert listed(client, created="1h") == {
        "tests.testapp.jobs.add",
        "tests.testapp.jobs.high_echo",
    }
    assert listed(client, q=str(a.id)) == {"tests.testapp.jobs.add"}
    assert listed(client, q=str(a.id)[:8]) == {"tests.testapp.jobs.add"}  # id prefix
    assert listed(client, q="high_echo") == {"tests.testapp.jobs.high_echo"}
    Job.objects.filter(pk=a.pk).update(error="ValueError: the widget is broken")
    assert listed(client, q="widget is broken") == {"tests.testapp.jobs.add"}


def listed(client: Client, **params: str) -> set[str]:
    response = client.get(URL, params)
    assert response.status_code == 200
    return {job.name for job in response.context["cl"].result_list}


def test_detail_is_read_only() -> None:
    job = jobs.echo.delay({"<script>": "x"})
    client = staff("view_job", "change_job")
    page = client.get(f"{URL}{job.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert "<script>" not in page.content.decode()
    response = client.post(f"{URL}{job.pk}/change/", {"status": "succeeded"})
    assert response.status_code == 403
    assert Job.objects.get(pk=job.pk).status == "scheduled"


def _post_action(client: Client, action: str, job: Job, *, confirm: bool = True) -> str:
    data = {"action": action, "_selected_action": [str(job.pk)]}
    first = client.post(URL, data, follow=True).content.decode()
    if not confirm or "Are you sure" not in first:
        return first
    return client.post(URL, {**data, "confirmed": "yes"}, follow=True).content.decode()


def test_retry_and_cancel_need_their_permissions() -> None:
    job = jobs.add.delay(1, 2)
    Job.objects.filter(pk=job.pk).update(status="failed")
    viewer = staff("view_job")
    assert "retry_jobs" not in viewer.get(URL).content.decode()
    _post_action(viewer, "retry_jobs", job)
    assert Job.objects.get(pk=job.pk).status == "failed"

    operator = Client()
    user = User.objects.get(username="staff")
    user.user_permissions.add(Permission.objects.get(codename="retry_job"))
    user.user_permissions.add(Permission.objects.get(codename="cancel_job"))
    operator.force_login(user)
    page = _post_action(operator, "retry_jobs", job)
    assert "1 job(s) retried" in page
    row = Job.objects.get(pk=job.pk)
    assert (row.status, row.attempts) == ("scheduled", 0)
    page = _post_action(operator, "cancel_jobs", job)
    assert "1 job(s) cancelled" in page
    assert Job.objects.get(pk=job.pk).status == "cancelled"
    page = _post_action(operator, "cancel_jobs", job)
    assert "0 job(s) cancelled; 1 skipped (wrong status)" in page


def test_deleting_a_running_job_is_refused_saying_it_is_running() -> None:
    job = jobs.add.delay(1, 2)
    other = jobs.add.delay(3, 4)
    Job.objects.filter(pk=job.pk).update(
        status="running", worker="host:7", attempts=1, total_attempts=3
    )
    client = staff("view_job", "delete_job")

    page = client.get(f"{URL}{job.pk}/delete/").content.decode()
    posted = client.post(f"{URL}{job.pk}/delete/", {"post": "yes"}).content.decode()
    action = {"action": "delete_selected", "index": "0"}
    selected = [str(job.pk), str(other.pk)]
    listed_page = client.post(URL, {**action, "_selected_action": selected}).content.decode()
    confirmed = client.post(
        URL, {**action, "_selected_action": selected, "post": "yes"}
    ).content.decode()

    assert "This job cannot be deleted: it is running." in page
    assert f"tests.testapp.jobs.add {job.pk} is running (attempt 3, worker host:7)" in page
    assert 'name="post"' not in page  # no confirmation button
    assert "it is running" in posted
    assert "The selected jobs cannot be deleted: these are running." in listed_page
    assert "these are running" in confirmed
    for text in (page, posted, listed_page, confirmed):
        assert "have permission" not in text  # what Django said when the refusal was one
    assert Job.objects.filter(pk__in=[job.pk, other.pk]).count() == 2


def superuser() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="x"))
    return client


def test_deleting_a_job_that_blocked_jobs_wait_for_is_refused_naming_them() -> None:
    dependency = jobs.add.using(run_after=3600).delay(1, 2)
    waiting = jobs.add.using(depends_on=[dependency]).delay(3, 4)
    client = superuser()

    page = client.get(f"{URL}{dependency.pk}/delete/").content.decode()
    posted = client.post(f"{URL}{dependency.pk}/delete/", {"post": "yes"})

    assert "This job cannot be deleted: the scheduled jobs below wait for" in page
    assert f"tests.testapp.jobs.add {waiting.pk} (scheduled) waits for {dependency.pk}" in page
    assert 'name="post"' not in page  # no confirmation button
    assert posted.status_code == 200 and "cannot be deleted" in posted.content.decode()
    assert Job.objects.filter(pk=dependency.pk).exists()
    # The dependent itself may go: nothing waits for it.
    client.post(f"{URL}{waiting.pk}/delete/", {"post": "yes"})
    assert not Job.objects.filter(pk=waiting.pk).exists()


def test_deleting_selected_jobs_refuses_those_that_blocked_jobs_wait_for() -> None:
    dependency = jobs.add.using(run_after=3600).delay(1, 2)
    waiting = jobs.add.using(depends_on=[dependency]).delay(3, 4)
    other = jobs.add.delay(5, 6)
    client = superuser()
    action = {"action": "delete_selected", "index": "0"}

    page = client.post(
        URL, {**action, "_selected_action": [str(dependency.pk), str(other.pk)]}
    ).content.decode()
    confirmed = client.post(
        URL,
        {**action, "_selected_action": [str(dependency.pk), str(other.pk)], "post": "yes"},
    ).content.decode()

    assert "The selected jobs cannot be deleted" in page
    assert f"{waiting.pk} (scheduled) waits for {dependency.pk}" in page
    assert "cannot be deleted" in confirmed
    assert Job.objects.filter(pk__in=[dependency.pk, other.pk]).count() == 2
    # A selection holding the dependency and everything that waits for it may go.
    client.post(
        URL, {**action, "_selected_action": [str(dependency.pk), str(waiting.pk)], "post": "yes"}
    )
    assert not Job.objects.filter(pk__in=[dependency.pk, waiting.pk]).exists()


def test_an_action_asks_for_confirmation_first() -> None:
    job = jobs.add.delay(1, 2)
    Job.objects.filter(pk=job.pk).update(status="failed")
    client = staff("view_job", "retry_job")
    page = _post_action(client, "retry_jobs", job, confirm=False)
    assert "Are you sure you want to retry 1 job(s)?" in page
    assert Job.objects.get(pk=job.pk).status == "failed"


def test_mark_succeeded_and_run_again_are_logged_and_guarded() -> None:
    from django.contrib.admin.models import LogEntry

    job = jobs.add.delay(1, 2)
    Job.objects.filter(pk=job.pk).update(status="failed", error="boom")
    viewer = staff("view_job")
    page = viewer.get(URL).content.decode()
    assert "mark_succeeded" not in page and "run_again" not in page
    _post_action(viewer, "mark_succeeded", job)
    assert Job.objects.get(pk=job.pk).status == "failed"

    user = User.objects.get(username="staff")
    for codename in ("mark_succeeded_job", "run_again_job"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    operator = Client()
    operator.force_login(user)
    assert "1 job(s) marked as succeeded" in _post_action(operator, "mark_succeeded", job)
    row = Job.objects.get(pk=job.pk)
    assert row.status == "succeeded" and "marked as succeeded by staff" in row.note
    assert row.error == ""  # the note is not an error
    assert "1 job(s) enqueued again" in _post_action(operator, "run_again", job)
    copy = Job.objects.exclude(pk=job.pk).get(name=job.name)
    assert copy.status == "scheduled" and copy.args == [1, 2]
    messages = list(LogEntry.objects.values_list("change_message", flat=True))
    assert any("marked as succeeded (failed -> succeeded)" in m for m in messages)
    assert any(f"run again as a copy of {job.pk}" in m for m in messages)


def test_detail_shows_pretty_json_traceback_timeline_and_attempt_history() -> None:
    from django_asyncjobs.models import JobAttempt

    job = jobs.echo.delay({"k": [1, 2]}, key="detail")
    Job.objects.filter(pk=job.pk).update(
        status="failed", traceback="Traceback (most recent call last):\n  boom", attempts=2
    )
    for number, outcome in ((1, "timed out"), (2, "failed")):
        JobAttempt.objects.create(
            job_id=job.pk,
            number=number,
            worker=f"host:{number}",
            started_at=job.created_at,
            finished_at=job.created_at,
            outcome=outcome,
            error=f"error of attempt {number}",
        )
    page = staff("view_job").get(f"{URL}{job.pk}/change/").content.decode()
    assert "&quot;k&quot;: [" in page  # indented JSON
    assert "Traceback (most recent call last):" in page
    assert "<b>created</b>" in page
    assert "error of attempt 1" in page and "host:2" in page and "timed out" in page


def test_queue_overview_counts_jobs_per_queue(queue_prefix: str) -> None:
    jobs.add.delay(1, 2)
    done = jobs.add.using(queue="low").delay(1, 2)
    Job.objects.filter(pk=done.pk).update(status="succeeded", finished_at=done.created_at)
    client = staff("view_job")
    assert "Queue overview" in client.get(URL).content.decode()
    response = client.get(f"{URL}overview/")
    assert response.status_code == 200
    queues = {q.queue: q for q in response.context["queues"]}
    assert queues["default"].count("scheduled") == 1
    assert queues["low"].count("succeeded") == 1
    assert sum(queues["low"].succeeded_per_minute) == 1
    assert "<svg" in response.content.decode()
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody", password="x", is_staff=True))
    assert nobody.get(f"{URL}overview/").status_code == 403


def _select_all(client: Client, action: str, **filters: str) -> tuple[str, str]:
    """Run *action* on "select all N jobs" of the filtered list; return both pages' text."""
    url = f"{URL}?{urlencode(filters)}"
    first_id = str(Job.objects.order_by("pk").values_list("pk", flat=True)[0])
    data = {"action": action, "_selected_action": [first_id], "select_across": "1", "index": "0"}
    confirmation = client.post(url, data)
    assert confirmation.status_code == 200
    page = confirmation.content.decode()
    # Post back exactly what the confirmation page's form holds, as a browser would.
    form = page[page.index('<form method="post">') :]
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form):
        fields.setdefault(name, []).append(value)
    done = client.post(url, fields, follow=True).content.decode()
    return page, done


def test_an_action_on_more_jobs_than_one_batch_handles_all_of_them() -> None:
    failed = jobs.add.delay_many([((i, i), {}) for i in range(1_201)])
    Job.objects.filter(pk__in=[j.pk for j in failed]).update(status="failed")
    client = staff("view_job", "retry_job")
    page, done = _select_all(client, "retry_jobs", status__exact="failed")
    assert "Are you sure you want to retry 1,201 job(s)?" in page
    assert "and 1,101 more" in page  # the page lists a sample, and says so
    assert "1,201 job(s) retried." in done
    assert Job.objects.filter(status="failed").count() == 0
    assert Job.objects.filter(status="scheduled", attempts=0).count() == 1_201


def test_run_again_on_a_selection_copies_each_job_once() -> None:
    jobs.add.delay_many([((i, i), {}) for i in range(600)])
    client = staff("view_job", "run_again_job")
    # The copies match the filter too; they must not be copied in turn.
    _, done = _select_all(client, "run_again", name="tests.testapp.jobs.add")
    assert "600 job(s) enqueued again." in done
    assert Job.objects.filter(name="tests.testapp.jobs.add").count() == 1_200
    assert sorted(map(tuple, Job.objects.values_list("args", flat=True))) == sorted(
        2 * [(i, i) for i in range(600)]
    )


def test_a_hex_looking_term_also_searches_names_and_errors() -> None:
    by_error, by_name, by_id, other = (jobs.add.delay(i, i) for i in range(4))
    Job.objects.filter(pk=by_error.pk).update(error="ValueError: the cafe closed in 2026")
    Job.objects.filter(pk=by_name.pk).update(name="app.jobs.cafe_orders")
    Job.objects.filter(pk=by_id.pk).update(id=uuid.UUID("cafe1234-0000-4000-8000-000000000000"))
    Job.objects.filter(pk=other.pk).update(id=uuid.UUID("00001234-0000-4000-8000-000000000000"))
    client = staff("view_job")
    assert listed_ids(client, "cafe") == {
        str(by_error.pk),
        str(by_name.pk),
        "cafe1234-0000-4000-8000-000000000000",
    }
    assert listed_ids(client, "2026") == {str(by_error.pk)}  # a year, not an id prefix
    assert listed_ids(client, "CAFE1234") == {"cafe1234-0000-4000-8000-000000000000"}
    # Eight hex digits no id starts with are searched as a word.
    Job.objects.filter(pk=by_name.pk).update(name="app.jobs.deadbeef_sync")
    assert listed_ids(client, "deadbeef") == {str(by_name.pk)}
    # A whole id is a lookup by primary key, nothing else.
    assert listed_ids(client, "00001234-0000-4000-8000-000000000000") == {
        "00001234-0000-4000-8000-000000000000"
    }


def listed_ids(client: Client, term: str) -> set[str]:
    response = client.get(URL, {"q": term})
    assert response.status_code == 200
    return {str(job.pk) for job in response.context["cl"].result_list}


def test_the_list_shows_a_short_id_times_to_the_second_and_an_unbroken_due_time() -> None:
    job = jobs.add.using(run_after=dt.timedelta(minutes=3, seconds=20)).delay(1, 2)
    page = staff("view_job").get(URL).content.decode()
    assert f'title="{job.id}">{str(job.id)[:8]}</code>' in page
    created = timezone.localtime(Job.objects.get(pk=job.pk).created_at)
    assert created.strftime("%Y-%m-%d %H:%M:%S") in page
    assert re.search(r'<span style="white-space:nowrap" title="[^"]+">in 3 min</span>', page)


def test_the_overview_says_when_sqs_has_no_queue_yet_and_creates_none(queue_prefix: str) -> None:
    jobs.add.using(queue="reports").delay(1, 2)
    transport = SQSTransport(get_settings())
    try:
        transport.ensure_queue("default")
        client = staff("view_job")
        response = client.get(f"{URL}overview/")
        queues = {q.queue: q for q in response.context["queues"]}
        assert queues["reports"].sqs_missing and queues["reports"].sqs_visible is None
        assert not queues["default"].sqs_missing and queues["default"].sqs_visible == 0
        assert "no SQS queue yet" in response.content.decode()
        # A page that only looks: the queue and its dead-letter queue are still not there.
        assert transport.list_queues() == ["default"]
        assert client.get(f"{URL}overview/").status_code == 200
        assert transport.list_queues() == ["default"]
    finally:
        transport.close()


def test_the_overview_lists_configured_queues_without_jobs(
    settings: Any, queue_prefix: str
) -> None:
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": ["default", "quiet"]}
    jobs.add.delay(1, 2)
    response = staff("view_job").get(f"{URL}overview/")
    names = [q.queue for q in response.context["queues"]]
    assert names == ["default", "quiet"]
    assert "?queue=quiet" in response.content.decode()


def test_the_overview_chart_has_axes_and_shows_failures_only_when_some_failed(
    queue_prefix: str,
) -> None:
    done = jobs.add.delay(1, 2)
    Job.objects.filter(pk=done.pk).update(status="succeeded", finished_at=timezone.now())
    client = staff("view_job")
    page = client.get(f"{URL}overview/").content.decode()
    assert "asyncjobs-chart-succeeded" in page and "asyncjobs-chart-failed" not in page
    assert ">-60 min</text>" in page and ">now</text>" in page  # the x axis
    assert 'class="asyncjobs-chart-y"' in page  # the y axis: its peak
    assert "1 succeeded in the hour" in page
    failed = jobs.add.delay(1, 2)
    Job.objects.filter(pk=failed.pk).update(status="failed", finished_at=timezone.now())
    page = client.get(f"{URL}overview/").content.decode()
    assert "asyncjobs-chart-failed" in page and "1 succeeded, 1 failed in the hour" in page


def test_the_overview_breadcrumb_names_the_app(queue_prefix: str) -> None:
    page = staff("view_job").get(f"{URL}overview/").content.decode()
    crumbs = page[page.index('<div class="breadcrumbs">') :]
    crumbs = crumbs[: crumbs.index("</div>")]
    assert 'href="/admin/django_asyncjobs/"' in crumbs
