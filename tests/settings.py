"""Django settings for the test suite; the database comes from DATABASE_URL (tests/plugin.py)."""

from __future__ import annotations

import importlib.util
import os
from urllib.parse import unquote, urlsplit

import django

_url = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/asyncjobs"))

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_asyncjobs",
    "tests.testapp",
]
# Django's Tasks API: built in from Django 6.0, the django-tasks backport before.
if django.VERSION < (6, 0) and importlib.util.find_spec("django_tasks"):
    INSTALLED_APPS.append("django_tasks")
TASKS = {
    "default": {
        "BACKEND": "django_asyncjobs.tasks_backend.AsyncJobsBackend",
        "QUEUES": ["default", "high", "low", "emails"],
    },
    # A second alias of the same backend, with a retry for the tasks declared on it.
    "secondary": {
        "BACKEND": "django_asyncjobs.tasks_backend.AsyncJobsBackend",
        "QUEUES": ["default", "low"],
        "OPTIONS": {"max_retries": 1},
    },
}
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")) or "asyncjobs",
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        # Subprocesses started by the tests are given the test database's name explicitly.
        "TEST": {"NAME": os.environ.get("ASYNCJOBS_TEST_DB_NAME", "test_asyncjobs")},
    }
}
ASYNCJOBS = {
    "QUEUE_PREFIX": os.environ.get("ASYNCJOBS_QUEUE_PREFIX", "test-"),
    "WAIT_TIME_SECONDS": 1,
    # Process tests change these through the environment of the processes they start.
    "VISIBILITY_TIMEOUT_SECONDS": int(os.environ.get("ASYNCJOBS_TEST_VISIBILITY_TIMEOUT", "5")),
    "HEARTBEAT_INTERVAL_SECONDS": float(os.environ.get("ASYNCJOBS_TEST_HEARTBEAT_INTERVAL", "0.5")),
    "STALE_AFTER_SECONDS": float(os.environ.get("ASYNCJOBS_TEST_STALE_AFTER", "5")),
    "REQUEUE_AFTER_SECONDS": float(os.environ.get("ASYNCJOBS_TEST_REQUEUE_AFTER", "60")),
    "MAX_QUEUED_PER_QUEUE": int(os.environ.get("ASYNCJOBS_TEST_MAX_QUEUED", "1000")),
    "TRANSPORT": os.environ.get("ASYNCJOBS_TEST_TRANSPORT", "sqs"),
    "SCHEDULER_INTERVAL_SECONDS": 0.5,
    "QUEUE_DISCOVERY_INTERVAL_SECONDS": 1,
    "RETRY_BACKOFF_SECONDS": 0.2,
    "RETRY_JITTER": 0,
    # The prepared-statement process test turns it on in the processes it starts.
    "PREPARED_STATEMENTS": os.environ.get("ASYNCJOBS_TEST_PREPARED") == "1",
}
if os.environ.get("ASYNCJOBS_TEST_PERIODIC"):
    # An every-second schedule for the periodic-job process test only: in every other test a
    # scheduler enqueueing jobs by itself would be noise.
    ASYNCJOBS["PERIODIC_JOBS"] = [
        {"job": "tests.ledgered", "cron": "* * * * * *", "kwargs": {"key": "tick"}, "missed": "all"}
    ]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # A process test may ask for DEBUG lines (the relay's message sizes, hand-backs).
    "loggers": {
        "django_asyncjobs": {
            "handlers": ["console"],
            "level": os.environ.get("ASYNCJOBS_TEST_LOG_LEVEL", "INFO"),
        }
    },
}
if os.environ.get("ASYNCJOBS_TEST_NO_LOGGING"):
    # A project that configures no logging, for the tests of what the commands print anyway.
    del LOGGING
if os.environ.get("ASYNCJOBS_TEST_SPANS_DIR"):
    # A project that configured OpenTelemetry, for the tracing tests (tests/support/spans.py).
    from tests.support.spans import install as _install_span_dump

    _install_span_dump(os.environ["ASYNCJOBS_TEST_SPANS_DIR"])
STATIC_URL = "/static/"
