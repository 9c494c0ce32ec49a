"""Django settings for ``benchmarks/throughput.py`` and the worker/scheduler it starts.

The server comes from ``DATABASE_URL``; the database name from ``ASYNCJOBS_BENCH_DB_NAME`` (the
script drops and recreates it each run). ``ASYNCJOBS_BENCH_QUEUE_PREFIX`` keeps every run's SQS
queues apart; ``ASYNCJOBS_BENCH_WAIT_SECONDS`` sets the long-poll wait. Everything else is the
library's defaults, as a production project would run them.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

_url = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))

SECRET_KEY = "benchmarks-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_asyncjobs",
    "benchmarks.benchjobs",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("ASYNCJOBS_BENCH_DB_NAME", "bench_asyncjobs"),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
    }
}
ASYNCJOBS = {
    "QUEUE_PREFIX": os.environ.get("ASYNCJOBS_BENCH_QUEUE_PREFIX", "bench-"),
    "WAIT_TIME_SECONDS": int(os.environ.get("ASYNCJOBS_BENCH_WAIT_SECONDS", "20")),
}
if os.environ.get("ASYNCJOBS_BENCH_PREPARED"):  # --prepared-statements
    ASYNCJOBS["PREPARED_STATEMENTS"] = True
if os.environ.get("ASYNCJOBS_BENCH_MAX_QUEUED"):  # to compare flow-control targets
    ASYNCJOBS["MAX_QUEUED_PER_QUEUE"] = int(os.environ["ASYNCJOBS_BENCH_MAX_QUEUED"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_asyncjobs": {
            "handlers": ["console"],
            "level": os.environ.get("ASYNCJOBS_BENCH_LOG_LEVEL", "INFO"),
        }
    },
}
if os.environ.get("ASYNCJOBS_BENCH_RETENTION_DAYS"):  # sustained.py: what retention does
    ASYNCJOBS["RETENTION_DAYS"] = float(os.environ["ASYNCJOBS_BENCH_RETENTION_DAYS"])
