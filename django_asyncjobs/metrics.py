"""Prometheus metrics of the worker and scheduler processes (the optional ``metrics`` extra).

``runworker --metrics-port 9100`` and ``runscheduler --metrics-port 9101`` call :func:`serve`,
which imports ``prometheus_client`` (``pip install django-asyncjobs[metrics]``), builds the
metrics, connects the job signals that feed them and serves ``/metrics`` over HTTP. Without the
option nothing here is imported or connected, and the hooks that other modules call
(:func:`instrument_sqs_client`, :func:`relay_pass`, :func:`relayed`) return at once.

``runworker`` runs its jobs in child processes (``--processes``): the supervisor, which
serves ``/metrics``, gives them prometheus_client's multiprocess mode with a directory of its
own (``PROMETHEUS_MULTIPROC_DIR`` when it is set, else a temporary one that it deletes when it
exits), so a scrape sums every child, those that died and were replaced included; the running
jobs of a dead child stop counting.

The metrics (labels in braces):

- ``asyncjobs_jobs_started_total{job,queue}``: attempts started (claimed) by a worker;
- ``asyncjobs_jobs_finished_total{job,queue,outcome}``: attempts ended, by outcome
  ``succeeded``, ``failed`` (for good), ``retried`` (failed, scheduled again) or ``cancelled``;
- ``asyncjobs_jobs_timed_out_total{job,queue}``: attempts that ran past their timeout (also
  counted as ``retried`` or ``failed``);
- ``asyncjobs_job_run_seconds{job,queue}``: histogram of the duration of attempts, from the
  claim to the recorded end (the admin's duration);
- ``asyncjobs_job_wait_seconds{job,queue}``: histogram from when a job was due (``run_at``:
  enqueued, or its retry's time) to its start, by the database's clock;
- ``asyncjobs_jobs_running{job,queue}``: attempts running now;
- ``asyncjobs_sqs_requests_total{operation}`` and ``asyncjobs_sqs_errors_total{operation}``:
  SQS API calls (``SendMessageBatch``, ``ReceiveMessage``, ``DeleteMessageBatch``,
  ``ChangeMessageVisibility``, ``GetQueueUrl``, ...) and those that failed after boto3's retries;
- ``asyncjobs_scheduler_passes_total`` and ``asyncjobs_jobs_relayed_total{queue}``: the
  scheduler's passes and the jobs it sent to SQS.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)

#: What to install when ``--metrics-port`` finds no prometheus_client.
INSTALL_HINT = "pip install django-asyncjobs[metrics]"
#: The environment variable prometheus_client's multiprocess mode reads.
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: Jobs last from milliseconds to hours; prometheus_client's default buckets stop at 10 s.
RUN_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
WAIT_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Every metric this module exports, without the suffixes Prometheus adds (``_total``,
#: ``_bucket``, ...): the Grafana dashboard's test checks its queries against these.
METRIC_NAMES = (
    "asyncjobs_jobs_started",
    "asyncjobs_jobs_finished",
    "asyncjobs_jobs_timed_out",
    "asyncjobs_job_run_seconds",
    "asyncjobs_job_wait_seconds",
    "asyncjobs_jobs_running",
    "asyncjobs_sqs_requests",
    "asyncjobs_sqs_errors",
    "asyncjobs_scheduler_passes",
    "asyncjobs_jobs_relayed",
)


class MetricsUnavailable(Exception):
    """``--metrics-port`` was given and prometheus_client is not installed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    """Where :func:`serve` listens: ``url`` is the scrape address."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


class _Metrics:
    """The metric objects of this process, built by :func:`serve`."""

    def __init__(self, *, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        job = ("job", "queue")
        self.started = Counter(
            "asyncjobs_jobs_started", "Job attempts started.", job, registry=registry
        )
        self.finished = Counter(
            "asyncjobs_jobs_finished",
            "Job attempts ended, by outcome (succeeded, failed, retried, cancelled).",
            (*job, "outcome"),
            registry=registry,
        )
        self.timed_out = Counter(
            "asyncjobs_jobs_timed_out",
            "Job attempts that ran past their timeout.",
            job,
            registry=registry,
        )
        self.run_seconds = Histogram(
            "asyncjobs_job_run_seconds",
            "Duration of job attempts, from the claim to the recorded end.",
            job,
            buckets=RUN_SECONDS_BUCKETS,
            registry=registry,
        )
        self.wait_seconds = Histogram(
            "asyncjobs_job_wait_seconds",
            "From when a job was due (run_at) to the start of its attempt.",
            job,
            buckets=WAIT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.running = Gauge(
            "asyncjobs_jobs_running",
            "Job attempts running now.",
            job,
            registry=registry,
            # Summed over the live worker processes; a dead one's jobs no longer run there.
            multiprocess_mode="livesum",
        )
        self.sqs_requests = Counter(
            "asyncjobs_sqs_requests", "SQS API calls.", ("operation",), registry=registry
        )
        self.sqs_errors = Counter(
            "asyncjobs_sqs_errors",
            "SQS API calls that failed (after boto3's retries).",
            ("operation",),
            registry=registry,
        )
        self.passes = Counter(
            "asyncjobs_scheduler_passes", "Passes of the scheduler's loop.", registry=registry
        )
        self.relayed = Counter(
            "asyncjobs_jobs_relayed",
            "Jobs sent to SQS by the scheduler.",
            ("queue",),
            registry=registry,
        )
        self._lock = threading.Lock()
        #: Attempts started in this process: job id -> (monotonic start, labels).
        self._running: dict[Any, tuple[float, tuple[str, str]]] = {}

    # -- job signals -----------------------------------------------------------------------------

    def on_status_changed(
        self, sender: Any, job: Any, old_status: str | None, new_status: str, **kwargs: Any
    ) -> None:
        labels = (job.name, job.queue)
        if new_status == "running":
            self.started.labels(*labels).inc()
            if job.started_at is not None and job.run_at is not None:
                waited = (job.started_at - job.run_at).total_seconds()
                self.wait_seconds.labels(*labels).observe(max(0.0, waited))
            with self._lock:
                if job.id not in self._running:
                    self._running[job.id] = (time.monotonic(), labels)
                    self.running.labels(*labels).inc()
        elif old_status == "running":
            if new_status == "cancelled":
                self.finished.labels(*labels, "cancelled").inc()
            # Whatever the outcome (a hand-back too), the attempt no longer runs here.
            with self._lock:
                start = self._running.pop(job.id, None)
            if start is not None:
                self.running.labels(*start[1]).dec()
                self.run_seconds.labels(*start[1]).observe(time.monotonic() - start[0])
            elif job.started_at is not None and job.finished_at is not None:
                # Recorded by another process than the one that ran it (the supervisor, for a
                # worker process that died or retired): the database's times.
                ran = (job.finished_at - job.started_at).total_seconds()
                self.run_seconds.labels(*labels).observe(max(0.0, ran))

    def on_ended(self, outcome: str) -> Any:
        def receiver(sender: Any, job: Any, **kwargs: Any) -> None:
            self.finished.labels(job.name, job.queue, outcome).inc()
            if outcome in ("failed", "retried") and (job.error or "").startswith("JobTimeout"):
                self.timed_out.labels(job.name, job.queue).inc()

        return receiver

    # -- boto3 events ----------------------------------------------------------------------------

    def on_sqs_call(self, model: Any, **kwargs: Any) -> None:
        self.sqs_requests.labels(model.name).inc()

    def on_sqs_error(self, event_name: str, **kwargs: Any) -> None:
        self.sqs_errors.labels(event_name.rsplit(".", 1)[-1]).inc()


_metrics: _Metrics | None = None
#: The receivers connected by serve(), kept for disconnecting (signals hold them weakly).
_receivers: list[tuple[Any, Any]] = []


def enabled() -> bool:
    """Return whether this process collects metrics (:func:`serve` was called)."""
    return _metrics is not None


# -- hooks called by the transport and the scheduler: nothing when metrics are off -----------


def instrument_sqs_client(client: Any) -> None:
    """Count the SQS API calls of the boto3 *client*, when metrics are on.

    Called by the SQS transport for each client it builds. boto3 emits ``before-call`` once
    per API call (its retries are inside it) and ``after-call-error`` when the call failed.
    """
    metrics = _metrics
    if metrics is None:
        return
    client.meta.events.register("before-call.sqs", metrics.on_sqs_call)
    client.meta.events.register("after-call-error.sqs", metrics.on_sqs_error)


def relay_pass() -> None:
    """Count one pass of the scheduler's loop, when metrics are on."""
    if _metrics is not None:
        _metrics.passes.inc()


def relayed(queue: str, count: int) -> None:
    """Count *count* jobs of *queue* sent to SQS by the scheduler, when metrics are on."""
    if _metrics is not None and count:
        _metrics.relayed.labels(queue).inc(count)


# -- serving ---------------------------------------------------------------------------------


def require() -> None:
    """Raise :class:`MetricsUnavailable`, naming the extra to install, without prometheus_client."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise MetricsUnavailable(
            f"metrics need the prometheus_client package: {INSTALL_HINT}"
        ) from exc


@contextlib.contextmanager
def serve(
    *, port: int, host: str = "127.0.0.1", jobs: bool = True, processes: bool = False
) -> Iterator[Server]:
    """Collect this process's metrics and serve them at ``http://host:port/metrics`` until exit.

    *jobs* connects the job signals (a worker; a scheduler runs no jobs, and a receiver of
    ``job_status_changed`` would make its relay read back every job it sends). *processes*
    (``runworker``'s supervisor) collects the metrics of the child processes forked inside the
    block too (multiprocess mode, see the module's docstring). Raises
    :class:`MetricsUnavailable` without prometheus_client and :class:`OSError` when the port
    cannot be bound.

    Example::

        with metrics.serve(port=9100) as server:
            print(server.url)        # http://127.0.0.1:9100/metrics
            worker.run()
    """
    global _metrics
    require()
    from prometheus_client import CollectorRegistry, start_http_server, values

    owned_dir: str | None = None
    registry = CollectorRegistry()
    if processes:
        directory = os.environ.get(MULTIPROC_DIR_VARIABLE)
        if not directory:
            owned_dir = directory = tempfile.mkdtemp(prefix="asyncjobs-metrics-")
            os.environ[MULTIPROC_DIR_VARIABLE] = directory
        # Metrics built from here on write to per-process files in the directory, whatever
        # prometheus_client chose when it was imported (before the variable was set, maybe).
        values.ValueClass = values.MultiProcessValue()
        _MultiProcessCollector(directory, registry=registry)
        _metrics = _Metrics(registry=None)
    else:
        from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        _metrics = _Metrics(registry=registry)
    try:
        if jobs:
            _connect(_metrics)
        server, thread = start_http_server(port, addr=host, registry=registry)
        # Children forked from here must not hold the listening socket: after a crash of
        # this process it would keep the port bound, answering nothing.
        os.register_at_fork(after_in_child=_close_in_child(server))
        try:
            yield Server(host=host, port=server.server_address[1])
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
    finally:
        _disconnect()
        _metrics = None
        if owned_dir is not None:
            os.environ.pop(MULTIPROC_DIR_VARIABLE, None)
            shutil.rmtree(owned_dir, ignore_errors=True)
        if processes:
            values.ValueClass = values.get_value_class()


def _close_in_child(server: Any) -> Any:
    def close() -> None:
        with contextlib.suppress(OSError):
            server.socket.close()

    return close


def _connect(metrics: _Metrics) -> None:
    from . import signals

    pairs = [
        (signals.job_status_changed, metrics.on_status_changed),
        (signals.job_succeeded, metrics.on_ended("succeeded")),
        (signals.job_failed, metrics.on_ended("failed")),
        (signals.job_retrying, metrics.on_ended("retried")),
    ]
    for signal, receiver in pairs:
        signal.connect(receiver, weak=False)
        _receivers.append((signal, receiver))


def _disconnect() -> None:
    while _receivers:
        signal, receiver = _receivers.pop()
        signal.disconnect(receiver)


_PID_IN_FILE = re.compile(r"_(\d+)\.db$")


class _MultiProcessCollector:
    """prometheus_client's MultiProcessCollector that first forgets the live gauges of dead
    processes (a worker process that crashed and was replaced: its jobs run no more)."""

    def __init__(self, directory: str, *, registry: CollectorRegistry) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.directory = directory
        self._inner = MultiProcessCollector(None, path=directory)
        registry.register(self)

    def collect(self) -> Any:
        from prometheus_client.multiprocess import mark_process_dead

        for path in glob.glob(os.path.join(self.directory, "gauge_live*_*.db")):
            match = _PID_IN_FILE.search(path)
            if match and not _alive(int(match.group(1))):
                mark_process_dead(int(match.group(1)), path=self.directory)
        return self._inner.collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
