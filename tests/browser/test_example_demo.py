"""The example project's demo page in a real browser: every demo job enqueued from the page, and
shown live as it runs in the example's own ``runjobs``.

Set ``ASYNCJOBS_SCREENSHOTS=docs`` to write the demo page's screenshot into ``docs/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, screenshot
from tests.support.example_site import PASSWORD, Site, example_database, running_site


@pytest.fixture
def example_env(queue_prefix: str) -> Iterator[dict[str, str]]:
    """The environment of the example project, with a fresh database of its own."""
    with example_database(queue_prefix=queue_prefix) as env:
        yield env


@pytest.fixture
def site(example_env: dict[str, str], tmp_path: Path) -> Iterator[Site]:
    """The example site running: migrated, a superuser, ``runjobs`` and ``runserver``."""
    with running_site(example_env, log_dir=tmp_path) as running:
        yield running


def test_the_demo_page_enqueues_every_demo_job_and_shows_them_live(
    site: Site, tmp_path: Path
) -> None:
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        try:
            page.goto(site.url + "/")
            page.wait_for_selector("text=No jobs yet")
            for demo in ("long", "fibonacci", "slow-query", "aggregate", "async", "fail", "hello"):
                page.click(f"#demo-{demo}")
                page.wait_for_load_state()
            # The long job reports progress, and the page shows it moving without a reload.
            progress = page.locator("tr", has_text="long_job").locator("td").nth(3)
            progress.filter(has_text="of 20").wait_for(timeout=30_000)
            page.locator("tr[data-status=succeeded]", has_text="aggregate_orders").wait_for()
            page.locator("tr[data-status=succeeded]", has_text="long_job").wait_for(timeout=60_000)
            page.locator("tr[data-status=succeeded]", has_text="say_hello").wait_for()
            page.locator("tr[data-status=succeeded]", has_text="gather_readings").wait_for()
            page.locator("tr[data-status=succeeded]", has_text="slow_query").wait_for()
            failed = page.locator("tr[data-status=failed]", has_text="always_fails")
            failed.wait_for(timeout=60_000)
            assert "3 / 3" in failed.inner_text() and "RuntimeError" in failed.inner_text()
            screenshot(page, "example-demo.png", tmp_path)
            # Each row links to the job in the admin.
            page.locator("tr", has_text="fibonacci").get_by_text("details").click()
            page.fill("#id_username", "admin")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_selector("text=43466557686937456435688527675040625802564660517371780402")
        finally:
            browser.close()
