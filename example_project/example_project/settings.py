"""Settings of the example project, read from the environment with django-environ.

DATABASE_URL         postgres://postgres@127.0.0.1:5432/asyncjobs_example by default
AWS_ENDPOINT_URL_SQS read by boto3 itself (set it to a moto_server/LocalStack URL locally)
AWS_DEFAULT_REGION   read by boto3 itself
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  read by boto3 itself (dummies for an emulator)
DJANGO_DEBUG, DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS
ASYNCJOBS_QUEUE_PREFIX, ASYNCJOBS_WAIT_TIME_SECONDS
DEMO_HELLO_DELAY_SECONDS  how long the demo's "say hello" waits (the seeds say 60 s)
"""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="example-only-not-secret")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "example_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_asyncjobs",
    "demo",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
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
STATIC_URL = "static/"

DATABASES = {
    "default": env.db_url(
        "DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/asyncjobs_example"
    )
}

ASYNCJOBS = {
    "QUEUE_PREFIX": env.str("ASYNCJOBS_QUEUE_PREFIX", default="example-"),
    "WAIT_TIME_SECONDS": env.int("ASYNCJOBS_WAIT_TIME_SECONDS", default=20),
}

#: The seeds' walkthrough submits "say hello" with a 60 s delay; tests shorten it.
DEMO_HELLO_DELAY_SECONDS = env.float("DEMO_HELLO_DELAY_SECONDS", default=60.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"django_asyncjobs": {"handlers": ["console"], "level": "INFO"}},
}
