from __future__ import annotations

from django.apps import AppConfig


class BenchJobsConfig(AppConfig):
    name = "benchmarks.benchjobs"
    label = "benchjobs"
    verbose_name = "Benchmark jobs"
