"""Chromium driven through Playwright against a live server (``pytest -m browser``)."""
