"""Django settings of the procrastinate side of ``benchmarks/compare.py``.

Read from the environment, which the script sets:

* ``DATABASE_URL``: the PostgreSQL server (the same one django-asyncjobs uses); the database name
  comes from ``PROCRASTINATE_BENCH_DB_NAME`` (default ``bench_procrastinate``).
* ``PROCRASTINATE_BENCH_LOG_LEVEL``: the level of procrastinate's loggers (default INFO, a line
  or two per job, as the other systems' workers log).

``procrastinate.contrib.django`` defers through Django's connection (autocommit) and runs its
worker with a psycopg pool built from these settings.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

_db = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))

SECRET_KEY = "benchmarks-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["procrastinate.contrib.django", "benchmarks.procrastinate_project"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PROCRASTINATE_BENCH_DB_NAME", "bench_procrastinate"),
        "USER": unquote(_db.username or ""),
        "PASSWORD": unquote(_db.password or ""),
        "HOST": _db.hostname or "",
        "PORT": str(_db.port or ""),
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "procrastinate": {
            "handlers": ["console"],
            "level": os.environ.get("PROCRASTINATE_BENCH_LOG_LEVEL", "INFO"),
        }
    },
}
