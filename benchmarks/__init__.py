"""Benchmark scripts for django-asyncjobs; they print figures and never assert timings."""
