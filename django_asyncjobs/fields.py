"""Model fields of our own, so that the app needs nothing but Django and PostgreSQL.

``django.contrib.postgres`` has an ArrayField, but Django 6 requires that app in INSTALLED_APPS
to use it; a job system should not ask projects to change their app list for one column.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper


class UUIDArrayField(models.Field):
    """A PostgreSQL ``uuid[]`` column holding a list of UUIDs (psycopg adapts both ways).

    >>> depends_on = UUIDArrayField(default=list, blank=True)
    """

    description = "A list of UUIDs (uuid[])"

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        return "uuid[]"

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        return [v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)) for v in value]

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        return value

    def to_python(self, value: Any) -> Any:
        if value is None or isinstance(value, list):
            return value
        return list(value)


class BoundedDateTimeField(models.DateTimeField):
    """A NOT NULL ``timestamptz`` read back clamped to what Python's ``datetime`` can hold.

    The CHECK constraint on ``run_at`` keeps new rows in range; this keeps a row written before it
    (or by hand, with the constraint dropped) from making every list of jobs fail to load: psycopg
    cannot build a ``datetime`` for the year 10000, and would raise for the whole page.

    >>> run_at = BoundedDateTimeField("run at")
    """

    def select_format(self, compiler: Any, sql: str, params: Any) -> tuple[str, Any]:
        from .timebounds import clamp_sql

        sql, params = super().select_format(compiler, sql, params)
        if compiler.connection.vendor != "postgresql":
            return sql, params
        # GREATEST and LEAST skip NULLs, which is why this field is for NOT NULL columns only.
        return clamp_sql(sql), params
