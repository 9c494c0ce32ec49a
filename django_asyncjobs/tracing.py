"""OpenTelemetry tracing: a job's trace goes from ``delay()`` through the relay to its run.

Optional: with ``opentelemetry-api`` installed (``pip install django-asyncjobs[otel]``) the
library makes spans; without it every function here returns at once and costs nothing. The
library never configures OpenTelemetry: the project installs a ``TracerProvider`` and an
exporter (or runs under ``opentelemetry-instrument``), in the web processes and in
``runworker`` / ``runscheduler`` alike. Without one, the API's no-op provider makes no spans.

- ``delay()`` (every INSERT of a job) stores the caller's trace context, the W3C
  ``traceparent`` and ``tracestate`` headers, in the row's ``trace_context``.
- The scheduler's relay makes one ``send <queue>`` span (kind PRODUCER) per SendMessageBatch,
  linked to the stored context of each job in the batch: the relay runs in the scheduler's own
  trace, since one batch serves jobs of many traces.
- The worker runs each attempt in a ``run <job name>`` span (kind CONSUMER), a child of the
  stored context, so that the web request's trace shows its job; the job's code runs with
  that span current, so spans it makes nest under it. The span ends when the outcome is
  written, with the outcome (``succeeded``, ``retrying``, ``failed``, ``cancelled``,
  ``timed_out``, ``interrupted``, ``lease_lost``) as an attribute, and a failure recorded as
  an exception event with status ERROR.

Attribute names follow the OpenTelemetry messaging conventions where one fits
(``messaging.system``, ``messaging.operation.type``, ``messaging.destination.name``,
``messaging.batch.message_count``); the job's own are under ``asyncjobs.job.*``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError:  # the optional extra is not installed: tracing is off
    trace = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: The instrumentation scope of our spans.
TRACER_NAME = "django_asyncjobs"

#: The headers of a trace context that are stored on a row (W3C Trace Context).
STORED_HEADERS = ("traceparent", "tracestate")

# Attribute names, the job's own and those of the messaging conventions.
JOB_ID = "asyncjobs.job.id"
JOB_NAME = "asyncjobs.job.name"
JOB_ATTEMPT = "asyncjobs.job.attempt"
JOB_OUTCOME = "asyncjobs.job.outcome"
JOB_STATUS = "asyncjobs.job.status"
JOB_IDS = "asyncjobs.job.ids"
WORKER = "asyncjobs.worker"
REFUSED_COUNT = "asyncjobs.messages.refused"
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_BATCH_COUNT = "messaging.batch.message_count"


def enabled() -> bool:
    """Return whether ``opentelemetry-api`` is installed (spans are made only then)."""
    return trace is not None


def current_context() -> dict[str, str] | None:
    """Return the caller's trace context as W3C headers, or ``None`` outside any span.

    What ``delay()`` stores on the row. ``None`` (nothing stored) when OpenTelemetry is not
    installed, no span is current, or the current span is not valid.

    Example::

        with tracer.start_as_current_span("GET /reports"):
            current_context()  # {"traceparent": "00-4bf92f35...-00f067aa...-01"}
    """
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    # The W3C propagator by name, not the global one: a project that configured B3 or Jaeger
    # headers still gets the two headers the column documents.
    _propagator().inject(carrier)
    stored = {key: carrier[key] for key in STORED_HEADERS if carrier.get(key)}
    return stored or None


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def _stored_context(carrier: Mapping[str, str] | None) -> Any:
    """Return the OpenTelemetry ``Context`` of a stored trace context (empty if none)."""
    if not carrier:
        return otel_context.Context()
    try:
        return _propagator().extract(carrier=dict(carrier), context=otel_context.Context())
    except Exception:  # a hand-written row: a malformed context must not stop the job
        logger.warning("ignoring a malformed trace context %r", carrier)
        return otel_context.Context()


def _span_context(carrier: Mapping[str, str] | None) -> Any:
    span_context = trace.get_current_span(_stored_context(carrier)).get_span_context()
    return span_context if span_context.is_valid else None


def _tracer() -> Any:
    # Looked up per span: the project may install its provider after our import.
    return trace.get_tracer(TRACER_NAME)


def messaging_system(transport: object) -> str:
    """Return the ``messaging.system`` of *transport*: its ``messaging_system`` attribute
    (``"aws_sqs"`` for SQS), else the class name of a transport that has none."""
    return str(getattr(transport, "messaging_system", None) or type(transport).__name__)


# Protocols, not the model and the outcome: models and execution import this module (through
# the queries and the worker), and it must not import them back, even for the type checker.
class RunningJob(Protocol):
    """What the run span reads of a claimed job (a :class:`~django_asyncjobs.models.Job`)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def total_attempts(self) -> int: ...
    @property
    def worker(self) -> str: ...
    @property
    def trace_context(self) -> Any: ...


class AttemptOutcome(Protocol):
    """What the run span reads of an attempt's :class:`~django_asyncjobs.execution.Outcome`."""

    @property
    def ok(self) -> bool: ...
    @property
    def error(self) -> str: ...
    @property
    def traceback(self) -> str: ...


class RelayedJob(Protocol):
    """What the relay span reads of each job of a batch (the relay's ``DueJob``)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def trace_context(self) -> Mapping[str, str] | None: ...


@contextlib.contextmanager
def relay_span(
    *,
    queue: str,
    jobs: Sequence[RelayedJob],
    transport: object,
    message_count: int | None = None,
) -> Iterator[Any | None]:
    """Make the ``send <queue>`` span of one SendMessageBatch, linked to each job's context.

    *message_count* is the request's SQS messages (one may name several jobs; default: one per
    job). Yields the span (``None`` without OpenTelemetry); an exception that leaves the block is
    recorded on it with status ERROR, and raised on.

    Example::

        with tracing.relay_span(queue="default", jobs=batch, transport=transport):
            transport.send_batch("default", messages)
    """
    if trace is None:
        yield None
        return
    links = []
    for job in jobs:
        span_context = _span_context(job.trace_context)
        if span_context is not None:
            links.append(Link(span_context, {JOB_ID: str(job.id), JOB_NAME: job.name}))
    attributes = {
        MESSAGING_SYSTEM: messaging_system(transport),
        MESSAGING_OPERATION_TYPE: "send",
        MESSAGING_OPERATION_NAME: "send",
        MESSAGING_DESTINATION: queue,
        MESSAGING_BATCH_COUNT: len(jobs) if message_count is None else message_count,
        JOB_IDS: [str(job.id) for job in jobs],
    }
    with _tracer().start_as_current_span(
        f"send {queue}", kind=SpanKind.PRODUCER, links=links, attributes=attributes
    ) as span:
        yield span


def refused(span: Any | None, *, count: int) -> None:
    """Mark the relay *span* of a batch of which SQS refused *count* messages (put back)."""
    if span is None or not count:
        return
    span.set_attribute(REFUSED_COUNT, count)
    span.set_status(Status(StatusCode.ERROR, f"{count} message(s) refused; put back"))


def flush(timeout_seconds: float = 5.0) -> None:
    """Export the spans the project's tracer provider still holds (a no-op without one).

    For processes that leave with ``os._exit`` (the worker processes of ``runworker``), which
    skips the ``atexit`` hook where an SDK provider flushes.
    """
    if trace is None:
        return
    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        try:
            force_flush(int(timeout_seconds * 1000))
        except Exception:  # an exporter's failure must not change the exit status
            logger.warning("could not export the last spans", exc_info=True)


class RunSpan:
    """The span of one attempt, from its claim until its outcome is written.

    Started by the worker's main loop, made current in the thread (or task) that runs the job's
    code, ended by the main loop again: OpenTelemetry spans may cross threads.
    """

    __slots__ = ("error_recorded", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.error_recorded = False


def start_run(job: RunningJob, *, transport: object) -> RunSpan | None:
    """Start the ``run <name>`` span of *job*'s attempt, a child of its stored trace context.

    Returns ``None`` without OpenTelemetry. A job stored outside any trace starts a trace of
    its own.
    """
    if trace is None:
        return None
    attributes = {
        MESSAGING_SYSTEM: messaging_system(transport),
        MESSAGING_OPERATION_TYPE: "process",
        MESSAGING_OPERATION_NAME: "process",
        MESSAGING_DESTINATION: job.queue,
        JOB_ID: str(job.id),
        JOB_NAME: job.name,
        JOB_ATTEMPT: job.total_attempts,
        WORKER: job.worker,
    }
    span = _tracer().start_span(
        f"run {job.name}",
        context=_stored_context(job.trace_context),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )
    return RunSpan(span)


@contextlib.contextmanager
def activate(run: RunSpan | None) -> Iterator[None]:
    """Make *run*'s span current while the job's code runs (a no-op for ``None``).

    An exception that leaves the block is recorded on the span, and raised on.
    """
    if run is None:
        yield
        return
    with trace.use_span(run.span, end_on_exit=False, record_exception=False):
        try:
            yield
        except BaseException as exc:
            record_exception(run, exc)
            raise


def record_exception(run: RunSpan | None, exc: BaseException) -> None:
    """Record *exc* on *run*'s span (once per attempt) and set its status to ERROR."""
    if run is None or run.error_recorded or not run.span.is_recording():
        return
    run.error_recorded = True
    run.span.record_exception(exc)
    run.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def end_run(
    run: RunSpan | None,
    *,
    outcome_name: str,
    outcome: AttemptOutcome | None = None,
    status: str | None = None,
) -> None:
    """End *run*'s span with its *outcome_name*; a failed *outcome* sets status ERROR.

    An error the job's code raised was recorded where it was raised; one it did not raise (a
    timeout the worker enforced, a result that is not JSON) is recorded here from the outcome.
    """
    if run is None:
        return
    span = run.span
    span.set_attribute(JOB_OUTCOME, outcome_name)
    if status is not None:
        span.set_attribute(JOB_STATUS, status)
    if outcome is not None and not outcome.ok:
        if not run.error_recorded:
            run.error_recorded = True
            kind, _, message = outcome.error.partition(": ")
            span.add_event(
                "exception",
                {
                    "exception.type": kind,
                    "exception.message": message,
                    "exception.stacktrace": outcome.traceback,
                },
            )
        span.set_status(Status(StatusCode.ERROR, outcome.error))
    span.end()
