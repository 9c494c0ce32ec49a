"""The Celery counterpart of ``benchmarks/benchjobs/jobs.py``."""

from __future__ import annotations

import time

from celery import shared_task  # type: ignore[import-not-found,unused-ignore]


@shared_task(name="bench.noop")
def noop(i: int) -> float:
    """Do nothing but return when it started: the latency measurement reads it from the result.

    django-asyncjobs records ``started_at`` itself; Celery stores a start time only with
    ``task_track_started``, which costs one more write per task, so the task reports it instead.
    """
    return time.time()
