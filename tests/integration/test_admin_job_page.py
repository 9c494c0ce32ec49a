"""The job page of the admin: a button for each action that applies to the job and that the user
may take, going through the list action's confirmation; and figures that tell what happened
(attempts numbered on across retries, which attempt an error is from, the run's own duration,
an operator's note apart from the error)."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from django_asyncjobs.models import Job, JobAttempt
from django_asyncjobs.queries import ClaimOutcome
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import drain, relay
from tests.support.admin import staff
from tests.testapp import jobs

#: How the job list shows a run of two seconds.
NO_WRAP_TWO_SECONDS = '<span style="white-space:nowrap">2.00 s</span>'
pytestmark = pytest.mark.django_db

URL = "/admin/django_asyncjobs/job/"
ALL_ACTIONS = ("retry_job", "cancel_job", "mark_succeeded_job", "run_again_job")


def user_client(*perms: str, username: str = "ops") -> Client:
    """A staff client that may view jobs and take the actions of *perms*."""
    return staff("view_job", *perms, username=username)


def job_in(status: str) -> Job:
    job = jobs.add.delay(1, 2)
    Job.objects.filter(pk=job.pk).update(status=status)
    return Job.objects.get(pk=job.pk)


def buttons(client: Client, job: Job) -> dict[str, dict[str, list[str]]]:
    """Return the job page's action buttons: each form's action name -> its posted fields."""
    response = client.get(f"{URL}{job.pk}/change/")
    assert response.status_code == 200
    forms = re.findall(
        r'<form method="post" action="([^"]+)" class="asyncjobs-job-action">(.*?)</form>',
        response.content.decode(),
        re.S,
    )
    found = {}
    for target, body in forms:
        assert target == URL  # the list's action, as when the job is selected there
        fields: dict[str, list[str]] = {}
        for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body):
            fields.setdefault(name, []).append(value)
        found[fields["action"][0]] = fields
    return found


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ("failed", ["retry_jobs", "mark_succeeded", "run_again"]),
        ("cancelled", ["retry_jobs", "mark_succeeded", "run_again"]),
        ("scheduled", ["cancel_jobs", "mark_succeeded", "run_again"]),
        ("queued", ["cancel_jobs", "mark_succeeded", "run_again"]),
        ("running", ["cancel_jobs", "run_again"]),
        ("succeeded", ["run_again"]),
    ],
)
def test_the_job_page_shows_the_buttons_of_the_actions_that_apply_to_its_status(
    status: str, shown: list[str]
) -> None:
    job = job_in(status)
    assert list(buttons(user_client(*ALL_ACTIONS), job)) == shown


def test_the_job_page_shows_only_the_buttons_the_user_has_the_permission_for() -> None:
    job = job_in("failed")
    assert buttons(user_client(username="viewer"), job) == {}
    assert list(buttons(user_client("retry_job", username="retrier"), job)) == ["retry_jobs"]
    assert list(buttons(user_client("run_again_job", username="copier"), job)) == ["run_again"]


def test_a_button_goes_through_the_confirmation_page_acts_and_returns_to_the_job() -> None:
    job = job_in("failed")
    client = user_client("retry_job")
    fields = buttons(client, job)["retry_jobs"]

    confirmation = client.post(URL, fields)
    page = confirmation.content.decode()

    assert confirmation.status_code == 200
    assert "Are you sure you want to retry 1 job(s)?" in page
    assert f'href="{URL}{job.pk}/change/" class="button cancel-link"' in page  # "No" goes back
    assert Job.objects.get(pk=job.pk).status == "failed"  # nothing yet

    form = page[page.index('<form method="post">') :]
    confirmed: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form):
        confirmed.setdefault(name, []).append(value)
    done = client.post(URL, confirmed)

    assert done.status_code == 302 and done["Location"] == f"{URL}{job.pk}/change/"
    assert "1 job(s) retried." in client.get(done["Location"]).content.decode()
    assert Job.objects.get(pk=job.pk).status == "scheduled"
    entry = LogEntry.objects.get(object_id=str(job.pk))
    assert entry.change_message == "retried (failed -> scheduled)"


def test_a_button_posted_without_the_permission_changes_nothing() -> None:
    job = job_in("failed")
    fields = buttons(user_client(*ALL_ACTIONS), job)["retry_jobs"]
    viewer = user_client(username="viewer")

    page = viewer.post(URL, fields, follow=True).content.decode()
    page += viewer.post(URL, {**fields, "confirmed": ["yes"]}, follow=True).content.decode()

    assert "Are you sure" not in page and "retried" not in page
    assert Job.objects.get(pk=job.pk).status == "failed"


def test_run_again_from_the_job_page_returns_to_it_and_links_the_new_job() -> None:
    job = job_in("succeeded")
    client = user_client("run_again_job")
    fields = buttons(client, job)["run_again"]

    done = client.post(URL, {**fields, "confirmed": ["yes"]})

    copy = Job.objects.exclude(pk=job.pk).get()
    assert done["Location"] == f"{URL}{job.pk}/change/"
    page = client.get(done["Location"]).content.decode()
    assert "1 job(s) enqueued again." in page
    assert f'The new job is <a href="{URL}{copy.pk}/change/">{copy.pk}</a>.' in page


def test_mark_as_succeeded_keeps_its_note_out_of_the_error_and_its_time_out_of_the_duration() -> (
    None
):
    job = failed_two_hours_ago()
    client = user_client("mark_succeeded_job")
    fields = buttons(client, job)["mark_succeeded"]

    client.post(URL, {**fields, "confirmed": ["yes"]})

    row = Job.objects.get(pk=job.pk)
    assert row.status == "succeeded"
    assert row.note == "marked as succeeded by ops in the admin" and row.error == ""
    page = client.get(f"{URL}{job.pk}/change/").content.decode()
    assert "marked as succeeded by ops in the admin" in page
    # The timeline ends with what ended the job, and no time since its run (that was 2 hours).
    timeline = re.search(
        r'<span class="asyncjobs-step"><b>marked as succeeded</b> ([^<]+)</span>', page
    )
    assert timeline is not None and "(+" not in timeline.group(1)
    # The list's duration is the run's: 2 s, not the 2 hours until the operator acted.
    listed = client.get(URL).content.decode()
    assert f'<td class="field-duration_display">{NO_WRAP_TWO_SECONDS}</td>' in listed


def failed_two_hours_ago() -> Job:
    """A job whose one attempt ran for 2 s two hours ago and failed."""
    job = jobs.add.delay(1, 2)
    start = Job.objects.database_now() - dt.timedelta(hours=2)
    end = start + dt.timedelta(seconds=2)
    Job.objects.filter(pk=job.pk).update(
        status="failed",
        attempts=1,
        total_attempts=1,
        started_at=start,
        finished_at=end,
        error="ValueError: no such invoice",
        worker="host:1",
    )
    JobAttempt.objects.create(
        job_id=job.pk,
        number=1,
        worker="host:1",
        started_at=start,
        finished_at=end,
        outcome="failed",
        error="ValueError: no such invoice",
    )
    return Job.objects.get(pk=job.pk)


def test_a_cancelled_job_s_duration_is_its_run_s_and_its_timeline_says_it_was_cancelled() -> None:
    job = failed_two_hours_ago()
    Job.objects.retry(job.pk)
    Job.objects.cancel(job.pk)
    client = user_client()

    page = client.get(f"{URL}{job.pk}/change/").content.decode()
    listed = client.get(URL).content.decode()

    assert re.search(r"<b>cancelled</b> [\d:. -]+</span>", page)  # no "(+2 h)" after it
    assert f'<td class="field-duration_display">{NO_WRAP_TWO_SECONDS}</td>' in listed


def claim(job: Job, worker: str) -> Job:
    """Send *job* and let *worker* claim it, through the ledger's own transitions."""
    token = uuid.uuid4()
    Job.objects.filter(pk=job.pk).update(status="queued", dispatch_token=token)
    result = Job.objects.claim(
        job_id=job.pk,
        dispatch_token=token,
        worker=worker,
        registered_names=[job.name],
        lock_timeout_seconds=1,
    )
    assert result.outcome is ClaimOutcome.CLAIMED and result.job is not None
    return result.job


def test_the_error_of_a_running_job_says_which_attempt_it_is_from() -> None:
    first = claim(jobs.add.delay(1, 2), "host:1")
    Job.objects.record_failure(
        job_id=first.pk,
        lease_token=first.lease_token,  # type: ignore[arg-type]
        error="ValueError: the first try broke",
        traceback="Traceback (most recent call last):\nValueError: the first try broke",
        retry_in_seconds=0,
    )
    claim(first, "host:2")

    page = user_client().get(f"{URL}{first.pk}/change/").content.decode()

    assert (
        '<p class="asyncjobs-error-origin">From attempt 1 (failed); attempt 2 is running.</p>'
        in page
    )
    assert "ValueError: the first try broke" in page


@pytest.mark.django_db(transaction=True)  # the worker's threads use connections of their own
def test_attempts_are_numbered_on_after_an_operator_retry_on_the_list_and_the_job_page() -> None:
    job = jobs.fails_now.delay("numbered")
    for _ in range(3):  # the first run, then two operator retries
        transport = MemoryTransport()
        relay(transport)
        drain(transport)
        Job.objects.retry(job.pk)
    client = user_client()

    listed = client.get(URL).content.decode()
    page = client.get(f"{URL}{job.pk}/change/").content.decode()

    row = Job.objects.get(pk=job.pk)
    assert (row.status, row.attempts, row.total_attempts) == ("scheduled", 0, 3)
    assert re.search(
        r'title="ran 3 time\(s\); 0 of the 1 attempts allowed[^"]*">3 \(0 / 1 counted\)', listed
    )
    numbers = re.findall(r'<td class="field-number">\s*<p>(\d+)</p>', page)
    assert numbers == ["1", "2", "3"]
    assert "From attempt 3 (failed); attempt 4 has not started yet." in page
