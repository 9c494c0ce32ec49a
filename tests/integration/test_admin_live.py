"""Live admin pages: the job list, a job's page, the queue overview and the process list carry
the live toggle, its script (a static file: no inline script) and the markers of the parts that
refresh."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.template.loader import render_to_string
from django.test import Client

from tests.testapp import jobs

pytestmark = pytest.mark.django_db

URL = "/admin/django_asyncjobs/job/"
SCRIPT = '<script src="/static/django_asyncjobs/live.js" defer></script>'


def test_the_live_pages_carry_the_toggle_script_and_live_regions(
    admin_client: Client,
) -> None:
    job = jobs.add.delay(1, 2)
    pages = {
        URL: ({"results", "pagination", "attention"}, 5),
        f"{URL}{job.pk}/change/": ({"fields", "attempts", "tools"}, 5),
        f"{URL}overview/": ({"queues", "attention"}, 10),
        "/admin/django_asyncjobs/process/": ({"results", "pagination", "attention"}, 5),
    }
    for url, (regions, seconds) in pages.items():
        response = admin_client.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        assert html.count(SCRIPT) == 1, url
        assert 'class="asyncjobs-live-toggle"' in html
        assert f'data-interval-seconds="{seconds}"' in html
        assert set(re.findall(r'data-asyncjobs-live="([^"]+)"', html)) == regions, url


def test_the_toggle_has_no_inline_script_and_its_files_are_static_files() -> None:
    html = render_to_string("admin/django_asyncjobs/live.html", {"live_seconds": 3})
    # A strict Content-Security-Policy refuses inline scripts and event handler attributes.
    assert re.findall(r"<script\b(?![^>]*\bsrc=)", html) == []
    assert not re.search(r"\son[a-z]+=", html)
    assert 'data-interval-seconds="3"' in html
    assert finders.find("django_asyncjobs/live.js") and finders.find("django_asyncjobs/live.css")
