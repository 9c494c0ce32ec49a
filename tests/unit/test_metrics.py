"""The metrics module without processes: what it exports, the signals that feed it, the
Grafana dashboard's queries, and the hooks that cost nothing while metrics are off."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from django_asyncjobs import metrics, signals
from django_asyncjobs.api.metrics import METRIC_NAMES as DATABASE_METRIC_NAMES
from django_asyncjobs.management.commands._metrics import port_number
from tests.support.metrics import parse, value

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "django-asyncjobs.json"
#: What Prometheus appends to a counter's or a histogram's name in its samples.
SUFFIXES = re.compile(r"_(total|bucket|count|sum|created)$")


def _scrape(server: metrics.Server) -> dict[Any, float]:
    with urllib.request.urlopen(server.url, timeout=5) as response:
        return parse(response.read().decode())


def _send(signal: Any, job: SimpleNamespace, **extra: Any) -> None:
    """Call the receivers serve() connected to *signal* (the test app has its own, which write
    to the database)."""
    receivers = [r for s, r in metrics._receivers if s is signal]
    assert receivers, f"serve() connected nothing to {signal}"
    for receiver in receivers:
        receiver(sender=object, job=job, **extra)


def _job(**fields: Any) -> SimpleNamespace:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    defaults = {"id": uuid.uuid4(), "name": "app.send", "queue": "emails", "error": ""}
    defaults.update(run_at=now, started_at=now + dt.timedelta(seconds=2), finished_at=None)
    return SimpleNamespace(**{**defaults, **fields})


def test_metric_names_lists_what_the_worker_and_scheduler_export() -> None:
    registry = CollectorRegistry()
    metrics._Metrics(registry=registry)
    assert {family.name for family in registry.collect()} == set(metrics.METRIC_NAMES)


def test_every_dashboard_query_names_an_exported_metric_and_every_metric_is_graphed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(dashboard["panels"]) >= 6
    used = {
        SUFFIXES.sub("", name)
        for expr in expressions
        for name in re.findall(r"\basyncjobs_[a-z_]+", expr)
    }
    exported = set(metrics.METRIC_NAMES) | set(DATABASE_METRIC_NAMES)
    assert used - exported == set(), "the dashboard queries metrics nobody exports"
    assert exported - used == set(), "exported metrics the dashboard leaves out"
    for expr in expressions:
        # A histogram is graphed through its buckets, by le.
        if "histogram_quantile" in expr:
            assert re.search(r"asyncjobs_\w+_seconds_bucket", expr), expr
            assert "by (le)" in expr, expr


def test_job_signals_feed_the_counters_histograms_and_running_gauge() -> None:
    with metrics.serve(port=0) as server:
        assert metrics.enabled()
        job = _job()
        _send(signals.job_status_changed, job, old_status="queued", new_status="running")
        running = _scrape(server)
        assert value(running, "asyncjobs_jobs_running", job="app.send", queue="emails") == 1
        assert value(running, "asyncjobs_jobs_started_total", job="app.send", queue="emails") == 1
        wait = "asyncjobs_job_wait_seconds_bucket"
        assert value(running, wait, job="app.send", queue="emails", le="1.0") == 0
        assert value(running, wait, job="app.send", queue="emails", le="2.5") == 1

        job.error = "JobTimeout: timed out after 1 s"
        _send(signals.job_retrying, job)
        _send(signals.job_status_changed, job, old_status="running", new_status="scheduled")
        ended = _scrape(server)
        labels = {"job": "app.send", "queue": "emails"}
        assert value(ended, "asyncjobs_jobs_running", **labels) == 0
        assert value(ended, "asyncjobs_jobs_finished_total", **labels, outcome="retried") == 1
        assert value(ended, "asyncjobs_jobs_timed_out_total", **labels) == 1
        assert value(ended, "asyncjobs_job_run_seconds_count", **labels) == 1
        # A single-process server also exports the process's own figures.
        assert any(name == "process_cpu_seconds_total" for name, _ in ended)
    assert not metrics.enabled()
    assert metrics._receivers == []


def test_a_job_cancelled_while_running_ends_its_attempt_as_cancelled() -> None:
    with metrics.serve(port=0) as server:
        job = _job()
        _send(signals.job_status_changed, job, old_status="queued", new_status="running")
        _send(signals.job_status_changed, job, old_status="running", new_status="cancelled")
        samples = _scrape(server)
    finished = "asyncjobs_jobs_finished_total"
    assert value(samples, finished, job="app.send", queue="emails", outcome="cancelled") == 1


def test_a_scheduler_connects_no_job_signal() -> None:
    # A receiver of job_status_changed would make the relay read back every job it sends.
    with metrics.serve(port=0, jobs=False) as server:
        assert metrics._receivers == []
        metrics.relay_pass()
        metrics.relayed("emails", 3)
        samples = _scrape(server)
    assert value(samples, "asyncjobs_scheduler_passes_total") == 1
    assert value(samples, "asyncjobs_jobs_relayed_total", queue="emails") == 3


def test_hooks_do_nothing_while_metrics_are_off() -> None:
    registered: list[str] = []
    client = SimpleNamespace(
        meta=SimpleNamespace(
            events=SimpleNamespace(register=lambda event, handler: registered.append(event))
        )
    )
    metrics.instrument_sqs_client(client)
    metrics.relay_pass()
    metrics.relayed("emails", 3)
    assert registered == []
    with metrics.serve(port=0):
        metrics.instrument_sqs_client(client)
    assert registered == ["before-call.sqs", "after-call-error.sqs"]


@pytest.mark.parametrize(
    ("text", "error"),
    [("http", "'http' is not a port number"), ("65536", "must be 0-65535, not 65536")],
)
def test_metrics_port_is_a_port_number(text: str, error: str) -> None:
    assert port_number("9100") == 9100
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(error)):
        port_number(text)
