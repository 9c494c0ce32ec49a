"""The first Job admin: list, filters, search, read-only detail, permission-guarded actions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from django_asyncjobs.models import Job
from tests.testapp import jobs

pytestmark = pytest.mark.django_db

URL = "/admin/django_asyncjobs/job/"


def staff(*perms: str) -> Client:
    user = User.objects.create_user("staff", password="x", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_changelist_filters_and_search() -> None:
    a = jobs.add.delay(1, 2)
    jobs.high_echo.delay("x")
    Job.objects.filter(pk=a.pk).update(status="failed", attempts=2)
    client = staff("view_job")
    page = client.get(URL).content.decode()
    assert "tests.testapp.jobs.add" in page and "tests.testapp.jobs.high_echo" in page
    assert "2 / 4" in page  # attempts of max_retries + 1
    assert listed(client, status__exact="failed") == {"tests.testapp.jobs.add"}
    assert listed(client, queue__exact="high") == {"tests.testapp.jobs.high_echo"}
    assert listed(client, q=str(a.id)) == {"tests.testapp.jobs.add"}
    assert listed(client, q="high_echo") == {"tests.testapp.jobs.high_echo"}


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


def _post_action(client: Client, action: str, job: Job) -> str:
    response = client.post(URL, {"action": action, "_selected_action": [str(job.pk)]}, follow=True)
    return response.content.decode()


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


def test_running_jobs_cannot_be_deleted() -> None:
    job = jobs.add.delay(1, 2)
    Job.objects.filter(pk=job.pk).update(status="running")
    client = staff("view_job", "delete_job")
    assert client.get(f"{URL}{job.pk}/delete/").status_code == 403
