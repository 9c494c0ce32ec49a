"""Jobs for the benchmarks; autodiscovered because benchmarks.benchjobs is an installed app."""

from __future__ import annotations

from django_asyncjobs import job


@job(name="bench.noop", max_retries=0)
def noop(i: int) -> None:
    """Do nothing, so that a benchmark measures the job system and not the job."""
    return None
