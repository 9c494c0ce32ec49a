"""Django settings of the Celery side of ``benchmarks/compare_celery.py``.

Read from the environment, which the script sets:

* ``DATABASE_URL``: the PostgreSQL server (the same one django-asyncjobs uses); the database name
  comes from ``CELERY_BENCH_DB_NAME`` (default ``bench_celery``).
* ``AWS_ENDPOINT_URL_SQS``: the SQS endpoint (moto_server). kombu takes the endpoint from the
  broker URL's host and port, so the URL is built from it; ``is_secure`` picks http or https.
* ``CELERY_BENCH_QUEUE_PREFIX``: ``queue_name_prefix``, so that every run gets queues of its own.
* ``CELERY_BENCH_POLLING_INTERVAL`` / ``CELERY_BENCH_WAIT_SECONDS``: the consumer's pause after an
  empty receive, and the long-poll wait (kombu's defaults are 1 and 10 seconds).
* ``CELERY_BENCH_CONN_MAX_AGE``: ``CONN_MAX_AGE`` in seconds, ``none`` for persistent connections.
  Celery closes an obsolete connection after every task, so with Django's default (0) each task
  opens a new PostgreSQL connection to store its result.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

_db = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
_sqs = urlsplit(os.environ.get("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:5000"))
_conn_max_age = os.environ.get("CELERY_BENCH_CONN_MAX_AGE", "none")

SECRET_KEY = "benchmarks-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django_celery_results"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("CELERY_BENCH_DB_NAME", "bench_celery"),
        "USER": unquote(_db.username or ""),
        "PASSWORD": unquote(_db.password or ""),
        "HOST": _db.hostname or "",
        "PORT": str(_db.port or ""),
        "CONN_MAX_AGE": None if _conn_max_age.lower() == "none" else int(_conn_max_age),
    }
}

# Credentials are left out of the URL: boto3 reads AWS_ACCESS_KEY_ID and friends itself.
CELERY_BROKER_URL = f"sqs://{_sqs.hostname}:{_sqs.port or (443 if _sqs.scheme == 'https' else 80)}"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    "is_secure": _sqs.scheme == "https",
    "queue_name_prefix": os.environ.get("CELERY_BENCH_QUEUE_PREFIX", "celerybench-"),
    "polling_interval": float(os.environ.get("CELERY_BENCH_POLLING_INTERVAL", "0.1")),
    "wait_time_seconds": int(os.environ.get("CELERY_BENCH_WAIT_SECONDS", "10")),
}
CELERY_RESULT_BACKEND = "django-db"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# SQS has no fanout without SNS: no remote control, no events, no gossip (see the worker flags).
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
