"""The queries of the process table: workers and schedulers register, heartbeat and leave, and
operators read who is alive and what each one runs now.

A process is alive while its heartbeat is younger than ``STALE_AFTER_SECONDS``, by the database's
clock: the rule that rescues the jobs of a lost worker decides here too, so a worker shown dead
is one whose jobs the scheduler rescues. What a process runs now is read from the job rows
(running jobs whose ``worker`` is the process's ``name``), never copied into its row.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from django.apps import apps
from django.db import connections, models, router
from django.db.models.expressions import RawSQL

from ..conf import get_settings
from ..status import JobStatus
from ._sql import DatabaseNow, table

#: The model of a manager here: ``django_asyncjobs.models.Process``.
ProcessT = TypeVar("ProcessT", bound=models.Model)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessInfo:
    """What a process writes about itself when it registers (see ``models.Process``)."""

    id: uuid.UUID
    kind: str
    name: str
    host: str
    pid: int
    queues: Sequence[str] = ()
    concurrency: int | None = None
    version: str = ""


def _stale_after(seconds: float | None) -> float:
    return get_settings().stale_after_seconds if seconds is None else seconds


class ProcessQuerySet(models.QuerySet[ProcessT]):
    """Read-side helpers for registered processes."""

    def live(self, *, stale_after_seconds: float | None = None) -> ProcessQuerySet[ProcessT]:
        """Return processes whose heartbeat is younger than *stale_after_seconds*
        (default: ``STALE_AFTER_SECONDS``)."""
        since = DatabaseNow() - dt.timedelta(seconds=_stale_after(stale_after_seconds))
        return self.filter(heartbeat_at__gte=since)

    def with_state(self, *, stale_after_seconds: float | None = None) -> ProcessQuerySet[ProcessT]:
        """Annotate ``alive`` (a bool) and ``running_jobs`` (what the process runs now).

        ``running_jobs`` is a list of ``{"id", "name", "queue", "started_at"}`` dicts, oldest
        first, read from the running jobs that name the process as their worker: one subquery
        per row, over the partial index of running jobs.

        Example::

            for process in Process.objects.get_queryset().with_state():
                print(process.name, process.alive, [j["name"] for j in process.running_jobs])
        """
        since = DatabaseNow() - dt.timedelta(seconds=_stale_after(stale_after_seconds))
        job_model = apps.get_model("django_asyncjobs", "Job")
        jobs = table(job_model)
        processes = table(self.model)
        running = RawSQL(
            f"""(SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'id', j.id, 'name', j.name, 'queue', j.queue, 'started_at', j.started_at)
                    ORDER BY j.started_at), '[]'::jsonb)
                 FROM {jobs} AS j WHERE j.status = %s AND j.worker = {processes}.name)""",
            (JobStatus.RUNNING.value,),
            output_field=models.JSONField(),
        )
        annotated = self.annotate(
            alive=models.ExpressionWrapper(
                models.Q(heartbeat_at__gte=since), output_field=models.BooleanField()
            ),
            running_jobs=running,
        )
        # django-stubs types an annotated queryset as one of plain Models; the rows are ours.
        return cast("ProcessQuerySet[ProcessT]", annotated)


class ProcessManager(models.Manager[ProcessT]):
    """``Process.objects``: register, heartbeat, unregister, prune; and who is alive."""

    def get_queryset(self) -> ProcessQuerySet[ProcessT]:
        return ProcessQuerySet(self.model, using=self._db)

    def live(self, *, stale_after_seconds: float | None = None) -> ProcessQuerySet[ProcessT]:
        """Return the processes alive now (see :meth:`ProcessQuerySet.live`)."""
        return self.get_queryset().live(stale_after_seconds=stale_after_seconds)

    @property
    def _alias(self) -> str:
        return self._db or router.db_for_write(self.model)

    def register(self, info: ProcessInfo) -> None:
        """Write *info*'s row, heartbeat now; drop the row of an earlier process of its name.

        A row of the same kind, host, pid and name belongs to a process that is gone (a
        container restarted with the same pid): its running jobs would be shown twice. Safe to
        call again: an existing row only gets a new heartbeat.
        """
        self._upsert(
            info,
            before=f"""WITH gone AS (
                DELETE FROM {table(self.model)}
                WHERE kind = %(kind)s AND host = %(host)s AND pid = %(pid)s AND name = %(name)s
                    AND id <> %(id)s)""",
        )

    def beat(self, info: ProcessInfo) -> bool:
        """Stamp *info*'s heartbeat; write its row again if it is missing (pruned, or its
        registration failed). Return whether the row had to be written again.

        Example::

            Process.objects.beat(info)   # every HEARTBEAT_INTERVAL_SECONDS
        """
        return self._upsert(info)

    def _upsert(self, info: ProcessInfo, *, before: str = "") -> bool:
        sql = f"""{before}
            INSERT INTO {table(self.model)}
                (id, kind, name, host, pid, queues, concurrency, version, started_at, heartbeat_at)
            VALUES (%(id)s, %(kind)s, %(name)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s,
                    %(version)s, now(), now())
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
            RETURNING (xmax = 0)"""
        params: dict[str, Any] = {
            "id": info.id,
            "kind": info.kind,
            "name": info.name,
            "host": info.host,
            "pid": info.pid,
            "queues": json.dumps(list(info.queues)),
            "concurrency": info.concurrency,
            "version": info.version,
        }
        with connections[self._alias].cursor() as cursor:
            cursor.execute(sql, params)
            (inserted,) = cursor.fetchone()
        return bool(inserted)

    def unregister(self, process_id: uuid.UUID) -> bool:
        """Delete the row of a process that stops cleanly; return whether there was one."""
        deleted, _ = self.filter(pk=process_id).delete()
        return bool(deleted)

    def prune_dead(self, *, older_than_seconds: float) -> int:
        """Delete the rows of processes silent for longer than *older_than_seconds*; return
        how many."""
        since = DatabaseNow() - dt.timedelta(seconds=older_than_seconds)
        deleted, _ = self.filter(heartbeat_at__lt=since).delete()
        return deleted
