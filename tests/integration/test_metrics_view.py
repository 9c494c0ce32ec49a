"""``GET /api/metrics``: the database's figures in Prometheus's format, for a user with
``view_job`` (session or bearer token) and nobody else."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from django_asyncjobs.api.metrics import METRIC_NAMES
from django_asyncjobs.models import Job, QueueState
from tests.support.admin import staff
from tests.support.metrics import parse, value
from tests.support.operators import bearer_headers
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/metrics"


def test_anonymous_callers_and_users_without_view_job_are_refused() -> None:
    jobs.add.delay(1, 2)
    anonymous = Client().get(URL)
    assert anonymous.status_code == 401
    assert "asyncjobs_queue_jobs" not in anonymous.content.decode()
    no_permission = staff().get(URL)
    assert no_permission.status_code == 403
    assert no_permission.json() == {"error": "permission 'django_asyncjobs.view_job' required"}
    assert Client().get(URL, headers={"Authorization": "Bearer forged"}).status_code == 401


def test_a_staff_user_reads_queue_depth_oldest_waiting_pauses_and_processes() -> None:
    waiting = [jobs.add.delay(1, 2), jobs.add.delay(3, 4)]
    Job.objects.filter(pk=waiting[0].pk).update(
        run_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    )
    jobs.add.using(run_after=dt.timedelta(hours=1)).delay(5, 6)  # scheduled, not due
    jobs.high_echo.delay("x")
    Job.objects.filter(pk=waiting[1].pk).update(status="queued")
    QueueState.objects.pause("low", by="alice")

    response = staff("view_job").get(URL)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse(response.content.decode())
    assert {name for name, _ in samples} == set(METRIC_NAMES)
    depth = "asyncjobs_queue_jobs"
    assert value(samples, depth, queue="default", status="scheduled") == 2
    assert value(samples, depth, queue="default", status="queued") == 1
    assert value(samples, depth, queue="default", status="running") == 0
    assert value(samples, depth, queue="high", status="scheduled") == 1
    # A configured queue without jobs shows zeros rather than nothing.
    assert (depth, frozenset({("queue", "low"), ("status", "queued")})) in samples
    oldest = value(samples, "asyncjobs_queue_oldest_waiting_seconds", queue="default")
    assert 300 <= oldest < 400
    assert value(samples, "asyncjobs_queue_oldest_waiting_seconds", queue="low") == 0
    assert value(samples, "asyncjobs_queue_paused", queue="low") == 1
    assert value(samples, "asyncjobs_processes_live", kind="worker") == 0
    assert value(samples, "asyncjobs_processes_live", kind="scheduler") == 0


def test_prometheus_scrapes_with_a_bearer_token() -> None:
    jobs.add.delay(1, 2)
    response = Client().get(URL, headers=bearer_headers("view_job"))
    assert response.status_code == 200
    samples = parse(response.content.decode())
    assert value(samples, "asyncjobs_queue_jobs", queue="default", status="scheduled") == 1
