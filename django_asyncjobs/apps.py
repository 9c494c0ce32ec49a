"""App configuration: system checks and autodiscovery of ``jobs.py`` modules."""

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
