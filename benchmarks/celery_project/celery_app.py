"""The Celery application: ``celery -A benchmarks.celery_project.celery_app worker``."""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-not-found,unused-ignore]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.celery_project.settings")

app = Celery("celerybench", include=["benchmarks.celery_project.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
