"""OpenTelemetry across real processes: a web request's trace shows its job in a worker.

The test process plays the web process: it opens a span ("GET /reports") and calls ``delay()``
inside it. ``runscheduler`` and ``runworker`` run as subprocesses with an SDK tracer provider
that writes their finished spans to files (tests/support/spans.py), read back here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from django_asyncjobs.models import Job
from tests.support.flows import start_scheduler, start_worker, wait_for_final
from tests.support.processes import ProcessGroup, wait_until
from tests.support.spans import SPANS_DIR_ENV, Span, format_tree, read_spans
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_web_requests_trace_shows_its_jobs_relayed_and_run_in_other_processes(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    spans_dir = tmp_path / "spans"
    spans_dir.mkdir()
    processes.env[SPANS_DIR_ENV] = str(spans_dir)
    scheduler = start_scheduler(processes)
    worker = start_worker(processes, "--processes", "2", "--concurrency", "2")

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("tests.web").start_as_current_span("GET /reports") as web:
        ok = jobs.traced.delay("ok")
        bad = jobs.traced.delay("bad", fail=True)
    web_context = web.get_span_context()
    trace_id, web_span_id = f"{web_context.trace_id:032x}", f"{web_context.span_id:016x}"
    flags = f"{web_context.trace_flags:02x}"

    # delay() stored the request's context on the rows.
    for enqueued in (ok, bad):
        stored = Job.objects.get(id=enqueued.id).trace_context
        assert stored == {"traceparent": f"00-{trace_id}-{web_span_id}-{flags}"}, stored

    rows = wait_for_final([ok, bad], processes)
    assert rows[ok.id].status == "succeeded", rows[ok.id].error
    assert rows[bad.id].status == "failed" and rows[bad.id].total_attempts == 2

    def collected() -> list[Span] | None:
        spans = read_spans(spans_dir)
        runs = [s for s in spans if s.name == "run tests.traced"]
        users = [s for s in spans if s.name == "user work"]
        relays = [s for s in spans if s.name.startswith("send ")]
        linked = {link["attributes"].get("asyncjobs.job.id") for s in relays for link in s.links}
        done = len(runs) == 3 and len(users) == 3 and {str(ok.id), str(bad.id)} <= linked
        return spans if done else None

    spans = wait_until(
        collected,
        timeout=30,
        message=lambda: (
            f"spans missing:\n{format_tree(read_spans(spans_dir))}\n" + processes.report()
        ),
    )
    assert scheduler.stop() == 0, scheduler.describe()
    assert worker.stop() == 0, worker.describe()
    spans = read_spans(spans_dir)
    web_spans = [
        Span.from_json(json.loads(s.to_json()), pid=0) for s in exporter.get_finished_spans()
    ]
    print(format_tree(spans, extra=web_spans))

    by_id = {span.span_id: span for span in spans}
    runs = {
        (span.attributes["asyncjobs.job.id"], span.attributes["asyncjobs.job.attempt"]): span
        for span in spans
        if span.name == "run tests.traced"
    }
    assert set(runs) == {(str(ok.id), 1), (str(bad.id), 1), (str(bad.id), 2)}
    for run in runs.values():
        # The run is a child of the web request's span: same trace, its parent the stored one.
        assert run.trace_id == trace_id and run.parent_id == web_span_id, run
        assert run.kind == "CONSUMER"
        assert run.attributes["asyncjobs.job.name"] == "tests.traced"
        assert run.attributes["messaging.destination.name"] == "default"
        assert run.attributes["messaging.system"] == "aws_sqs"
        assert run.attributes["messaging.operation.type"] == "process"
        assert run.attributes["asyncjobs.worker"].endswith(f":{run.pid}")
        # The job's own span nests under its run span.
        (user,) = [s for s in spans if s.name == "user work" and s.parent_id == run.span_id]
        assert user.trace_id == trace_id and user.pid == run.pid
    assert runs[(str(ok.id), 1)].attributes["asyncjobs.job.outcome"] == "succeeded"
    assert runs[(str(ok.id), 1)].status == "UNSET"
    assert runs[(str(ok.id), 1)].events == []
    for attempt, outcome in ((1, "retrying"), (2, "failed")):
        run = runs[(str(bad.id), attempt)]
        assert run.attributes["asyncjobs.job.outcome"] == outcome
        assert run.status == "ERROR"
        (event,) = run.events
        assert event["name"] == "exception"
        assert event["attributes"]["exception.type"] == "ValueError"
        assert event["attributes"]["exception.message"] == "traced failure bad"
        assert "raise ValueError" in event["attributes"]["exception.stacktrace"]

    # The relay: a PRODUCER span of the scheduler per batch, linked to each job's stored context.
    relays = [s for s in spans if s.name == "send default"]
    assert relays and {s.pid for s in relays} == {scheduler.pid}
    for job_id in (str(ok.id), str(bad.id)):
        links = [
            (relay, link)
            for relay in relays
            for link in relay.links
            if link["attributes"]["asyncjobs.job.id"] == job_id
        ]
        # bad was relayed twice: its first attempt and its retry.
        assert len(links) == (1 if job_id == str(ok.id) else 2), links
        for relay, link in links:
            assert (link["trace_id"], link["span_id"]) == (trace_id, web_span_id)
            assert relay.trace_id != trace_id  # its own trace: a batch serves many requests
            assert relay.kind == "PRODUCER"
            assert relay.attributes["messaging.system"] == "aws_sqs"
            assert relay.attributes["messaging.operation.type"] == "send"
            assert relay.attributes["messaging.destination.name"] == "default"
            assert job_id in relay.attributes["asyncjobs.job.ids"]
    assert all(
        span.parent_id is None or span.parent_id in by_id or span.parent_id == web_span_id
        for span in spans
    )
