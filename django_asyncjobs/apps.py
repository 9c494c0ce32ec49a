"""App configuration: system checks and autodiscovery of ``jobs.py`` (and ``tasks.py``) modules."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class AsyncJobsConfig(AppConfig):
    """Registers the system checks and imports every installed app's ``jobs.py``."""

    name = "django_asyncjobs"
    label = "django_asyncjobs"
    verbose_name = "Async jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)

        autodiscover_modules("jobs")
        if uses_tasks_backend():
            # Django's @task functions live in tasks.py; importing them registers them as jobs,
            # so that workers and schedulers know them by name.
            from . import tasks_backend  # noqa: F401  (connects Django's task signals)

            autodiscover_modules("tasks")


def uses_tasks_backend() -> bool:
    """Return whether ``settings.TASKS`` names our backend for Django's Tasks API."""
    from django.conf import settings

    backends = getattr(settings, "TASKS", None) or {}
    return any(
        str(params.get("BACKEND", "")).startswith("django_asyncjobs.")
        for params in backends.values()
    )
