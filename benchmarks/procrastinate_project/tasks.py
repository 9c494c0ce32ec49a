"""The procrastinate counterpart of ``benchmarks/benchjobs/jobs.py`` (autodiscovered: ``tasks``)."""

from __future__ import annotations

from procrastinate.contrib.django import app  # type: ignore[import-not-found,unused-ignore]


@app.task(name="bench.noop")  # type: ignore[misc,unused-ignore]
def noop(i: int) -> None:
    """Do nothing, so that the benchmark measures the job system and not the job.

    Its start time is read from procrastinate's own ``procrastinate_events`` table (the
    ``started`` event, database clock), as django-asyncjobs' ``started_at`` is.
    """
    return None
