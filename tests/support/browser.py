"""Debian's Chromium for the browser tests (driven through Playwright), and their screenshots.

Set ``ASYNCJOBS_SCREENSHOTS=docs`` to write the screenshots the README shows into ``docs/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tests.support.processes import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Save a full-page screenshot of *page* under *tmp_path*, or ``docs/`` when asked to."""
    target = REPO_ROOT / "docs" if os.environ.get("ASYNCJOBS_SCREENSHOTS") == "docs" else tmp_path
    target.mkdir(exist_ok=True)
    path = target / name
    page.screenshot(path=str(path), full_page=True)
    return path
