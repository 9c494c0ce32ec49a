"""Where an operator meets a concurrency or rate limit: the admin's job page (why the job
waits, which limits apply), its queue overview (jobs held per queue), and ``asyncjobs show`` /
``stats``."""

from __future__ import annotations

import html
import io
import json
import re
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import _current_asyncjobs, relay
from tests.support.admin import staff
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

ADMIN = "/admin/django_asyncjobs/job/"
HELD_BY_KEY = (
    "waiting: concurrency limit: 2 of 2 jobs with key 'tests.per_customer:acme' are queued or "
    "running; it is sent when one ends"
)


def run(*args: Any) -> str:
    out = io.StringIO()
    call_command("asyncjobs", *args, stdout=out)
    return out.getvalue()


def test_a_job_held_by_its_key_says_why_on_the_job_page_and_in_show() -> None:
    sent = [jobs.per_customer.delay("acme", key=str(i)) for i in range(2)]
    held = jobs.per_customer.delay("acme", key="2")
    relay(MemoryTransport())
    viewer = staff("view_job")

    page = html.unescape(viewer.get(f"{ADMIN}{held.pk}/change/").content.decode())
    assert HELD_BY_KEY in page
    assert "concurrency 2 per key 'tests.per_customer:acme'" in page
    # A sent job holds a slot; it does not wait for one.
    page = html.unescape(viewer.get(f"{ADMIN}{sent[0].pk}/change/").content.decode())
    assert "waiting: concurrency limit" not in page

    out = run("show", str(held.id))
    assert re.search(r"waiting\s+" + re.escape(HELD_BY_KEY), out), out
    assert re.search(r"limits\s+concurrency 2 per key 'tests.per_customer:acme'", out), out
    shown = json.loads(run("show", str(held.id), "--json"))
    assert shown["waiting"] == HELD_BY_KEY
    assert (shown["concurrency_key"], shown["concurrency_limit"]) == ("tests.per_customer:acme", 2)


def test_a_job_held_by_a_rate_says_so_and_the_overview_and_stats_count_held_jobs() -> None:
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), "QUEUE_RATE_LIMITS": {"low": "2/h"}}):
        rated = [jobs.rated.delay(str(i)) for i in range(7)]
        low = [jobs.low_echo.delay(str(i)) for i in range(3)]
        relay(MemoryTransport())

        out = run("show", str(rated[-1].id))
        assert "waiting: rate limit 5/s of job tests.rated: 5 started in the last 1 s" in out
        out = run("show", str(low[-1].id))
        assert "waiting: rate limit 2/h of queue 'low': 2 started in the last 3600 s" in out

        stats = run("stats")
        header, *rows = stats.splitlines()
        columns = header.split()
        by_queue = {r.split()[0]: dict(zip(columns, r.split(), strict=False)) for r in rows}
        assert by_queue["default"]["HELD"] == "2"
        assert by_queue["low"]["HELD"] == "1"

        page = staff("view_job").get(f"{ADMIN}overview/").content.decode()
        held_cells = re.findall(r'<td class="asyncjobs-held">(\d+)', page)
        assert sorted(held_cells) == ["0", "1", "2"], held_cells
        assert "rate 2/h" in page
