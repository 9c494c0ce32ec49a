"""Where an operator meets a paused queue: ``asyncjobs pause / resume / list / stats``, the
admin's queue overview (buttons behind ``pause_queue``), job list and job page, and the HTTP
API's jobs. Each says that the queue is paused, since when, by whom, and why jobs wait."""

from __future__ import annotations

import html
import io
import json
import re
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client

from django_asyncjobs.models import QueueState
from tests.support.admin import staff
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

ADMIN = "/admin/django_asyncjobs/job/"
PAUSED_SINCE = r"queue 'default' is paused since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC by "


def run(*args: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("asyncjobs", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# -- the command ---------------------------------------------------------------------------------


def test_pause_and_resume_say_what_they_did_and_list_and_stats_show_the_pause() -> None:
    waiting = jobs.add.delay(1, 2)
    out, _ = run("pause", "default", "--reason", "SMTP down", "--by", "alice")
    assert re.search(PAUSED_SINCE + r"alice: SMTP down; no job of it is sent or started", out)

    table, _ = run("list")
    (row,) = [line for line in table.splitlines() if line.startswith(str(waiting.id)[:8])]
    assert "default (paused)" in row
    assert re.search(PAUSED_SINCE + r"alice: SMTP down; 1 job\(s\) above wait for", table)
    assert "'manage.py asyncjobs resume default'" in table
    (line,) = run("list", "--json")[0].splitlines()
    paused = json.loads(line)["queue_paused"]
    assert (paused["by"], paused["reason"]) == ("alice", "SMTP down")
    assert re.match(PAUSED_SINCE, paused["message"])

    stats, _ = run("stats")
    header, *rows = stats.splitlines()
    assert header.split()[-1] == "PAUSED"
    by_queue = {r.split()[0]: r.split() for r in rows if not r.startswith("queue ")}
    assert by_queue["default"][-1] == "yes"
    assert re.search(PAUSED_SINCE + r"alice: SMTP down; 1 job\(s\) wait", stats)

    out, _ = run("pause", "default", "--by", "bob")
    assert re.search(PAUSED_SINCE + r"alice: SMTP down; nothing changed", out)

    out, _ = run("resume", "default", "--by", "bob")
    assert "queue 'default' resumed; its 1 scheduled job(s) are sent when due" in out
    assert "paused" not in run("list")[0]
    assert json.loads(run("list", "--json")[0])["queue_paused"] is None
    out, _ = run("resume", "default")
    assert out == "queue 'default' is not paused; nothing changed\n"


def test_pause_refuses_a_queue_nobody_uses_unless_forced() -> None:
    with pytest.raises(CommandError, match=r"unknown queue 'defualt'.*pass --force") as refused:
        run("pause", "defualt")
    assert refused.value.returncode == 1
    assert not QueueState.objects.exists()
    with pytest.raises(CommandError, match="unknown queue 'defualt'"):
        run("resume", "defualt")
    out, err = run("pause", "defualt", "--force")
    assert "queue 'defualt' is paused since" in out
    assert "warning: queue 'defualt' is not in ASYNCJOBS['QUEUES']" in err
    # The default "by" names who ran it: user@host.
    assert re.search(r"paused since .* by \S+@\S+;", out)
    with pytest.raises(CommandError, match="may only hold letters"):
        run("pause", "no.dots")


def test_a_paused_queue_without_jobs_shows_in_stats() -> None:
    run("pause", "low")
    stats, _ = run("stats")
    rows = {r.split()[0]: r.split() for r in stats.splitlines()[1:] if not r.startswith("queue ")}
    assert rows["low"][1:7] == ["0"] * 6 and rows["low"][-1] == "yes"


# -- the admin -----------------------------------------------------------------------------------


def test_the_overview_shows_pause_buttons_only_with_the_permission() -> None:
    jobs.add.delay(1, 2)
    viewer = staff("view_job", username="viewer")
    page = viewer.get(f"{ADMIN}overview/").content.decode()
    assert "asyncjobs-pause-button" not in page
    operator = staff("view_job", "pause_queue", username="operator")
    page = operator.get(f"{ADMIN}overview/").content.decode()
    assert f'action="{ADMIN}overview/default/pause/"' in page
    assert "asyncjobs-pause-button" in page


def test_pausing_from_the_overview_asks_first_then_shows_everywhere() -> None:
    job = jobs.add.delay(1, 2)
    operator = staff("view_job", "pause_queue")
    url = f"{ADMIN}overview/default/pause/"
    assert operator.get(url).status_code == 405
    confirmation = operator.post(url)
    assert confirmation.status_code == 200
    page = html.unescape(confirmation.content.decode())
    assert "Are you sure you want to pause queue 'default'?" in page
    assert 'name="reason"' in page and "1 job(s) of this queue" in page
    assert not QueueState.objects.exists()

    done = operator.post(url, {"confirmed": "yes", "reason": "deploy"}, follow=True)
    overview = html.unescape(done.content.decode())
    assert re.search(PAUSED_SINCE + r"staff \(admin\): deploy", overview)
    assert "1 job(s) wait" in overview
    assert f'action="{ADMIN}overview/default/resume/"' in overview
    state = QueueState.objects.get(name="default")
    assert (state.paused, state.paused_by, state.reason) == (True, "staff (admin)", "deploy")
    assert LogEntry.objects.filter(object_id="default", change_message="paused").exists()

    listing = operator.get(ADMIN).content.decode()
    assert "(paused)</span>" in listing
    assert "default (paused)" in listing  # the queue filter's choice
    detail = html.unescape(operator.get(f"{ADMIN}{job.pk}/change/").content.decode())
    assert re.search("waiting: " + PAUSED_SINCE + r"staff \(admin\): deploy", detail)

    operator.post(f"{ADMIN}overview/default/resume/", {"confirmed": "yes"})
    assert not QueueState.objects.get(name="default").paused
    assert "waiting: " not in operator.get(f"{ADMIN}{job.pk}/change/").content.decode()


def test_pausing_without_the_permission_or_the_csrf_token_is_refused() -> None:
    jobs.add.delay(1, 2)
    viewer = staff("view_job", username="viewer")
    url = f"{ADMIN}overview/default/pause/"
    assert viewer.post(url).status_code == 403
    assert viewer.post(url, {"confirmed": "yes"}).status_code == 403
    assert not QueueState.objects.exists()

    strict = Client(enforce_csrf_checks=True)
    user = User.objects.create_user("operator", password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", "pause_queue"]))
    strict.force_login(user)
    assert strict.post(url, {"confirmed": "yes"}).status_code == 403
    assert not QueueState.objects.exists()


# -- the HTTP API --------------------------------------------------------------------------------


def test_the_api_shows_the_pause_of_a_jobs_queue() -> None:
    job = jobs.add.delay(1, 2)
    other = jobs.high_echo.delay("x")
    run("pause", "default", "--by", "alice", "--reason", "deploy")
    client = Client()
    client.force_login(User.objects.create_user("api", password="x"))
    User.objects.get(username="api").user_permissions.add(
        Permission.objects.get(codename="view_job")
    )
    one = client.get(f"/api/jobs/{job.id}").json()
    assert (one["queue_paused"]["by"], one["queue_paused"]["reason"]) == ("alice", "deploy")
    assert re.match(PAUSED_SINCE + "alice: deploy", one["queue_paused"]["message"])
    listed = {j["id"]: j["queue_paused"] for j in client.get("/api/jobs").json()["results"]}
    assert listed[str(job.id)] == one["queue_paused"]
    assert listed[str(other.id)] is None
