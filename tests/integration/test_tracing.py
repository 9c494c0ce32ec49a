"""OpenTelemetry in one process: what ``delay()`` stores, and the spans of a relay and a run.

The spans go to an SDK provider of the test's own (the global one can be set once per
process); the process test (tests/processes/test_tracing.py) shows the same across processes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from django_asyncjobs import tracing
from django_asyncjobs.models import Job
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import drain, relay
from tests.testapp import jobs, tasks

pytestmark = pytest.mark.django_db(transaction=True)

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Collect the spans the library makes in this test."""
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    monkeypatch.setattr(tracing, "_tracer", lambda: provider.get_tracer(tracing.TRACER_NAME))
    yield exported
    provider.shutdown()


def remote_parent(*, state: TraceState | None = None) -> NonRecordingSpan:
    """The span of an incoming request whose trace began elsewhere."""
    return NonRecordingSpan(
        SpanContext(
            TRACE_ID,
            SPAN_ID,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=state,
        )
    )


def test_every_way_of_enqueueing_stores_the_callers_trace_context() -> None:
    with trace.use_span(remote_parent(state=TraceState([("vendor", "abc")]))):
        one = jobs.add.delay(1, 2)
        many = jobs.add.delay_many([([1], {"b": 1}), ([2], {"b": 2})])
        task = tasks.add.enqueue(2, 3)
    expected = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}
    ids = [one.id, *(job.id for job in many), uuid.UUID(task.id)]
    assert one.trace_context == expected  # the returned job, as the row
    assert {str(job.id): job.trace_context for job in Job.objects.filter(id__in=ids)} == {
        str(job_id): expected for job_id in ids
    }


def test_outside_a_span_nothing_is_stored() -> None:
    job = jobs.add.delay(1, 2)
    assert job.trace_context is None
    assert Job.objects.get(id=job.id).trace_context is None


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def test_the_run_is_a_child_of_the_stored_context_and_the_relay_links_to_it(
    memory_transport: MemoryTransport, exporter: InMemorySpanExporter
) -> None:
    with trace.use_span(remote_parent()):
        job = jobs.add.delay(2, 3)
    untraced = jobs.add.delay(4, 5)
    assert relay(memory_transport) == 2
    drain(memory_transport)

    spans = exporter.get_finished_spans()
    (send,) = _by_name(spans, "send default")
    assert send.kind is trace.SpanKind.PRODUCER
    assert send.attributes is not None
    assert set(send.attributes["asyncjobs.job.ids"]) == {str(job.id), str(untraced.id)}  # type: ignore[arg-type]
    # One SQS message may name several jobs: the count is of messages.
    assert send.attributes["messaging.batch.message_count"] in (1, 2)
    assert send.attributes["messaging.system"] == "memory"
    # One link, for the job enqueued in a trace; the other had none to link to.
    assert [(link.context.trace_id, link.context.span_id) for link in send.links] == [
        (TRACE_ID, SPAN_ID)
    ]
    assert send.links[0].attributes == {
        "asyncjobs.job.id": str(job.id),
        "asyncjobs.job.name": jobs.add.name,
    }

    runs = {
        span.attributes["asyncjobs.job.id"]: span
        for span in _by_name(spans, f"run {jobs.add.name}")
        if span.attributes
    }
    traced, own = runs[str(job.id)], runs[str(untraced.id)]
    assert traced.context.trace_id == TRACE_ID
    assert traced.parent is not None and traced.parent.span_id == SPAN_ID
    assert own.parent is None and own.context.trace_id != TRACE_ID  # a trace of its own
    assert traced.attributes is not None
    assert dict(traced.attributes) == {
        "messaging.system": "memory",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "default",
        "asyncjobs.job.id": str(job.id),
        "asyncjobs.job.name": jobs.add.name,
        "asyncjobs.job.attempt": 1,
        "asyncjobs.worker": "test-worker",
        "asyncjobs.job.outcome": "succeeded",
        "asyncjobs.job.status": "succeeded",
    }


@pytest.mark.parametrize(
    ("job_name", "args", "outcome", "exception_type"),
    [
        # Raised by the job's code: recorded where it was raised, with its own traceback.
        ("raises_lone_surrogate", [], "failed", "RuntimeError"),
        ("async_sleeper", [5], "timed_out", "TimeoutError"),
        # Not raised by the code: a result that cannot be stored, recorded from the outcome.
        ("returns_lone_surrogate", [], "failed", "TypeError"),
    ],
)
def test_a_failed_attempt_records_its_error_and_status_error(
    memory_transport: MemoryTransport,
    exporter: InMemorySpanExporter,
    job_name: str,
    args: list[object],
    outcome: str,
    exception_type: str,
) -> None:
    definition = getattr(jobs, job_name)
    job = definition.delay(*args)
    relay(memory_transport)
    drain(memory_transport)

    (run,) = [s for s in exporter.get_finished_spans() if s.name == f"run {definition.name}"]
    assert run.attributes is not None
    assert run.attributes["asyncjobs.job.id"] == str(job.id)
    assert run.attributes["asyncjobs.job.outcome"] == outcome
    assert run.status.status_code is trace.StatusCode.ERROR
    assert run.status.description == Job.objects.get(id=job.id).error
    (event,) = run.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == exception_type
