"""URLs of the HTTP jobs API: ``path("api/", include("django_asyncjobs.api.urls"))``."""

from __future__ import annotations

from django.urls import path

from . import metrics, views

app_name = "asyncjobs_api"

urlpatterns = [
    path("jobs", views.jobs, name="jobs"),
    path("jobs/<str:job_id>", views.job, name="job"),
    path("jobs/<str:job_id>/result", views.result, name="result"),
    path("jobs/<str:job_id>/retry", views.retry, name="retry"),
    path("jobs/<str:job_id>/cancel", views.cancel, name="cancel"),
    path("openapi.json", views.openapi, name="openapi"),
    path("metrics", metrics.metrics, name="metrics"),
]
