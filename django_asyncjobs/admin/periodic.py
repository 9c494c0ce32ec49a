"""The admin page of periodic schedules: read-only, they are declared in code or settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest

from ..models import PeriodicSchedule

if TYPE_CHECKING:
    _PeriodicAdmin = admin.ModelAdmin[PeriodicSchedule]
else:  # generic only in django-stubs
    _PeriodicAdmin = admin.ModelAdmin


@admin.register(PeriodicSchedule)
class PeriodicScheduleAdmin(_PeriodicAdmin):
    """Periodic schedules with their last and next run; they are declared in code or settings."""

    list_display = ("key", "name", "cron", "timezone", "last_run_at", "next_run_at")
    search_fields = ("key", "name")
    ordering = ("next_run_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
