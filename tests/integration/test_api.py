"""The HTTP jobs API: create, list with a cursor, read, result, retry, cancel; authentication,
permissions, CSRF, validation errors that name the field, 404s, and the OpenAPI document."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern

from django_asyncjobs.api import urls, views
from django_asyncjobs.api.openapi import document
from django_asyncjobs.models import Job
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import drain, relay
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api"


def user_with(*codenames: str, name: str = "bot") -> User:
    user = User.objects.create_user(name, password="x")
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def bearer(user: User) -> dict[str, str]:
    out = io.StringIO()
    call_command("asyncjobs", "api-token", user.username, stdout=out, stderr=io.StringIO())
    return {"Authorization": f"Bearer {out.getvalue().strip()}"}


def post(
    client: Client, path: str, body: Any = None, *, headers: dict[str, str] | None = None
) -> Any:
    data = json.dumps(body) if body is not None else ""
    return client.post(f"{API}{path}", data, content_type="application/json", headers=headers)


def test_a_script_creates_a_job_and_reads_its_result() -> None:
    auth = bearer(user_with("add_job", "view_job"))
    client = Client()
    response = post(client, "/jobs", {"name": jobs.api_add.name, "args": [2, 3]}, headers=auth)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "scheduled" and body["args"] == [2, 3]
    assert response["Location"] == f"{API}/jobs/{body['id']}"

    assert client.get(response["Location"], headers=auth).json()["id"] == body["id"]
    pending = client.get(f"{API}/jobs/{body['id']}/result", headers=auth)
    assert pending.status_code == 202 and pending.json()["status"] == "scheduled"
    transport = MemoryTransport()
    relay(transport)
    drain(transport)
    done = client.get(f"{API}/jobs/{body['id']}/result", headers=auth)
    assert done.status_code == 200 and done.json()["result"] == 5


def test_a_unique_job_that_is_already_active_is_answered_with_200() -> None:
    auth = bearer(user_with("add_job", "view_job"))
    client = Client()
    body = {"name": jobs.api_sync_account.name, "args": [7]}
    first = post(client, "/jobs", body, headers=auth)
    assert first.status_code == 201, first.content
    again = post(client, "/jobs", body, headers=auth)
    assert again.status_code == 200, again.content  # nothing was created
    assert again.json()["id"] == first.json()["id"]
    assert again["Location"] == first["Location"] == f"{API}/jobs/{first.json()['id']}"
    other = post(client, "/jobs", {**body, "args": [8]}, headers=auth)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    Job.objects.filter(id=first.json()["id"]).update(status="succeeded")
    # Once the first one has finished, the same arguments create a new job.
    after = post(client, "/jobs", body, headers=auth)
    assert after.status_code == 201 and after.json()["id"] != first.json()["id"]
    assert Job.objects.filter(name=jobs.api_sync_account.name).count() == 3
    documented = document()["paths"]["/jobs"]["post"]["responses"]
    assert {"200", "201"} <= set(documented)


def test_a_twin_stored_by_a_concurrent_request_is_answered_with_200(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = bearer(user_with("add_job"))
    client = Client()
    body = {"name": jobs.api_sync_account.name, "args": [7]}
    first = post(client, "/jobs", body, headers=auth)
    # As if the first request committed its job after the second one looked for a twin.
    monkeypatch.setattr(views, "unique_key_for", lambda name, args, kwargs: "not-stored-yet")
    again = post(client, "/jobs", body, headers=auth)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


@pytest.mark.django_db  # one transaction for the whole test, as in Django's TestCase
def test_a_twin_stored_earlier_in_the_same_transaction_is_answered_with_200() -> None:
    auth = bearer(user_with("add_job"))
    client = Client()
    body = {"name": jobs.api_sync_account.name, "args": [7]}
    first = post(client, "/jobs", body, headers=auth)
    again = post(client, "/jobs", body, headers=auth)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


def test_only_exposed_jobs_and_valid_fields_are_accepted() -> None:
    auth = bearer(user_with("add_job"))
    client = Client()
    cases = [
        ({"name": jobs.add.name, "args": [1, 2]}, "name", "may be created over the API"),
        ({"name": jobs.api_add.name, "args": "1,2"}, "args", "JSON array"),
        ({"name": jobs.api_add.name, "kwargs": [1]}, "kwargs", "JSON object"),
        ({"name": jobs.api_add.name, "args": [1, 2], "delay": -1}, "delay", "seconds from 0"),
        ({"name": jobs.api_add.name, "args": [1, 2], "run_at": "tomorrow"}, "run_at", "ISO 8601"),
        ({"name": jobs.api_add.name, "run_at": "2024-01-01T12:99:00Z"}, "run_at", "ISO 8601"),
        ({"name": jobs.api_add.name, "args": [1, 2], "priority": "high"}, "priority", "integer"),
        ({"name": jobs.api_add.name, "args": [1, 2], "queue": "a b"}, "queue", "letters"),
        ({"name": jobs.api_add.name, "args": [1]}, "args", "missing a required argument"),
        ({"name": jobs.api_add.name, "args": [1, 2], "colour": "red"}, "colour", "unknown field"),
        ([1, 2], "body", "JSON object"),
    ]
    for body, field, text in cases:
        response = post(client, "/jobs", body, headers=auth)
        assert response.status_code == 400, (body, response.content)
        assert text in response.json()["fields"][field], (body, response.json())
    response = client.post(
        f"{API}/jobs", "{not json", content_type="application/json", headers=auth
    )
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    assert not Job.objects.exists()


def test_authentication_permissions_and_csrf() -> None:
    client = Client(enforce_csrf_checks=True)
    assert client.get(f"{API}/jobs").status_code == 401
    assert client.get(f"{API}/jobs", headers={"Authorization": "Bearer forged"}).status_code == 401
    viewer = user_with("view_job", name="viewer")
    assert (
        post(client, "/jobs", {"name": jobs.api_add.name}, headers=bearer(viewer)).status_code
        == 403
    )
    staff = user_with("add_job", "view_job", name="staff")
    client.force_login(staff)
    # A session POST without the CSRF token is refused; with it, accepted.
    refused = post(client, "/jobs", {"name": jobs.api_add.name, "args": [1, 2]})
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    client.get("/admin/login/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    accepted = post(
        client, "/jobs", {"name": jobs.api_add.name, "args": [1, 2]}, headers={"X-CSRFToken": token}
    )
    assert accepted.status_code == 201, accepted.content
    assert client.delete(f"{API}/jobs").status_code == 405


def test_listing_filters_and_pages_with_a_cursor() -> None:
    auth = bearer(user_with("view_job"))
    created = [jobs.add.delay(i, i) for i in range(5)]
    jobs.high_echo.delay("h")
    client = Client()
    seen: list[str] = []
    url: str | None = f"{API}/jobs?name={jobs.add.name}&limit=2"
    while url:
        page = client.get(url, headers=auth).json()
        seen += [j["id"] for j in page["results"]]
        url = page["next"]
    assert seen == [str(j.id) for j in reversed(created)]
    high = client.get(f"{API}/jobs?queue=high", headers=auth).json()["results"]
    assert [j["name"] for j in high] == [jobs.high_echo.name]
    bad = client.get(f"{API}/jobs?status=lost&limit=0&cursor=xyz", headers=auth)
    assert bad.status_code == 400 and set(bad.json()["fields"]) == {"status", "limit", "cursor"}


def test_retry_cancel_result_errors_and_404() -> None:
    auth = bearer(user_with("view_job", "retry_job", "cancel_job"))
    client = Client()
    failed = jobs.fails_now.delay("api")
    transport = MemoryTransport()
    relay(transport)
    drain(transport)
    result = client.get(f"{API}/jobs/{failed.id}/result", headers=auth)
    assert result.status_code == 409 and "fails for good" in result.json()["detail"]
    assert post(client, f"/jobs/{failed.id}/retry", headers=auth).json()["status"] == "scheduled"
    assert post(client, f"/jobs/{failed.id}/cancel", headers=auth).json()["status"] == "cancelled"
    again = post(client, f"/jobs/{failed.id}/cancel", headers=auth)
    assert again.status_code == 409 and "only scheduled, queued or running" in again.json()["error"]
    missing = uuid.uuid4()
    for path in (f"/jobs/{missing}", f"/jobs/{missing}/result"):
        assert client.get(f"{API}{path}", headers=auth).status_code == 404
    assert post(client, f"/jobs/{missing}/retry", headers=auth).status_code == 404
    assert client.get(f"{API}/jobs/not-a-uuid", headers=auth).status_code == 404


def test_the_openapi_document_describes_every_route() -> None:
    served = Client().get(f"{API}/openapi.json").json()
    assert served == json.loads(json.dumps(document(base_path=API)))
    routes = {
        "/" + str(p.pattern).replace("<str:job_id>", "{job_id}")
        for p in urls.urlpatterns
        if isinstance(p, URLPattern)
    }
    assert routes == set(served["paths"])


def test_a_run_at_outside_the_range_is_a_400_naming_run_at_and_stores_nothing() -> None:
    auth = bearer(user_with("add_job", "view_job"))
    client = Client()
    for run_at in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00", "9999-12-30T00:01Z"):
        response = post(
            client,
            "/jobs",
            {"name": jobs.api_add.name, "args": [1, 2], "run_at": run_at},
            headers=auth,
        )
        assert response.status_code == 400, response.content
        assert response["Content-Type"] == "application/json"
        assert response.json()["fields"] == {
            "run_at": f"run_at={dt.datetime.fromisoformat(run_at).isoformat()} is outside the "
            "supported range 0001-01-02T00:00:00+00:00 to 9999-12-30T00:00:00+00:00 (UTC)"
        }
    assert not Job.objects.exists()
    # The edges are accepted, and every read of the job serves them.
    for run_at in ("9999-12-30T00:00:00Z", "0001-01-02T01:00:00+01:00"):
        created = post(
            client,
            "/jobs",
            {"name": jobs.api_add.name, "args": [1, 2], "run_at": run_at},
            headers=auth,
        )
        assert created.status_code == 201, created.content
        read = client.get(created["Location"], headers=auth)
        assert read.status_code == 200 and read.json()["run_at"] == created.json()["run_at"]
    listed = client.get(f"{API}/jobs", headers=auth).json()["results"]
    assert sorted(j["run_at"] for j in listed) == [
        "0001-01-02T00:00:00+00:00",
        "9999-12-30T00:00:00+00:00",
    ]


def test_deep_nesting_huge_bodies_and_lone_surrogates_are_json_errors() -> None:
    auth = bearer(user_with("add_job"))
    client = Client()
    api_add = jobs.api_add.name
    deep = "[" * 100_000 + "]" * 100_000
    cases = [
        ("[" * 100_000, 400, "the body is nested too deeply"),
        (f'{{"name": "{api_add}", "args": {deep}}}', 400, "the body is nested too deeply"),
        (
            json.dumps({"name": api_add, "args": [json.loads("[" * 200 + "]" * 200), 1]}),
            400,
            "] is nested deeper than 64 levels",
        ),
        (" " * 20_000_000, 413, "the body is 20,000,000 bytes; the limit is 2,621,440 bytes"),
        # json.dumps escapes the surrogate: the body is valid JSON, and valid UTF-8.
        (
            json.dumps({"name": api_add, "args": ["\ud800", 1]}),
            400,
            "args[0] contains a lone surrogate ('\\ud800'), which is not valid UTF-8",
        ),
        (
            json.dumps({"name": api_add, "args": [1], "kwargs": {"b": {"\udfff": 0}}}),
            400,
            "kwargs['b'] has the key '\\udfff', which contains a lone surrogate",
        ),
    ]
    for body, status, message in cases:
        response = client.post(f"{API}/jobs", body, content_type="application/json", headers=auth)
        assert response.status_code == status, (body[:80], response.content[:300])
        assert response["Content-Type"] == "application/json"
        answer = response.json()
        assert any(
            message in text for text in [answer["error"], *answer.get("fields", {}).values()]
        ), answer
    assert not Job.objects.exists()


def test_an_unexpected_error_is_a_logged_json_500_that_stores_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    auth = bearer(user_with("add_job", "view_job"))
    # As a server does: Django's test client would raise the exception in the test instead.
    client = Client(raise_request_exception=False)

    def broken(job: Job, **options: Any) -> dict[str, Any]:
        raise RuntimeError("a bug in the serializer")

    monkeypatch.setattr(views, "job_json", broken)
    jobs.add.delay(1, 2)
    for response in (
        post(client, "/jobs", {"name": jobs.api_add.name, "args": [1, 2]}, headers=auth),
        client.get(f"{API}/jobs", headers=auth),
    ):
        assert response.status_code == 500
        assert response["Content-Type"] == "application/json"
        assert "internal error" in response.json()["error"]
    assert "RuntimeError: a bug in the serializer" in caplog.text
    assert "API request failed method=POST path=/api/jobs" in caplog.text
    # The job the POST stored before the answer failed was rolled back with it.
    assert list(Job.objects.values_list("name", flat=True)) == [jobs.add.name]
