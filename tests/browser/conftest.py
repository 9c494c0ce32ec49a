"""The browser tests' page: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import CHROMIUM

# Playwright's sync API runs an event loop in this thread; the ORM calls of the test itself are
# still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def _playwright_installed() -> None:
    """Skip the browser tests where Playwright (the 'browser' extra) is not installed."""
    pytest.importorskip("playwright", reason="Playwright comes with the 'browser' extra")


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    """A Chromium page (Debian's browser, driven by Playwright), closed after the test."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing; .ci/run installs Debian's chromium package")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()
