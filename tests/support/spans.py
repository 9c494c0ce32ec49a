"""Spans of other processes: an OpenTelemetry SDK set up from an environment variable.

``runscheduler`` and ``runworker`` run in subprocesses, out of reach of an in-memory exporter in
the test process. When ``ASYNCJOBS_TEST_SPANS_DIR`` names a folder, ``tests/settings.py`` calls
:func:`install`: the subprocess gets an SDK ``TracerProvider`` that writes each span, as it
ends, as one JSON line to ``<folder>/<pid>.jsonl`` (forked worker processes write files of
their own). The test reads them back with :func:`read_spans`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The environment variable that turns the hook on (see tests/settings.py).
SPANS_DIR_ENV = "ASYNCJOBS_TEST_SPANS_DIR"


def install(folder: str) -> None:
    """Install an SDK tracer provider that writes every finished span to *folder*."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class FileSpanExporter(SpanExporter):
        """Append each finished span to this process's file, as the SDK's JSON on one line."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            path = Path(folder) / f"{os.getpid()}.jsonl"
            with path.open("a", encoding="utf-8") as out:
                for span in spans:
                    out.write(json.dumps(json.loads(span.to_json())) + "\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    # Simple, not batched: each span is on disk when it ends, whatever the process does next.
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter()))
    trace.set_tracer_provider(provider)


@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    """A finished span as the SDK's ``to_json()`` describes it: ids in hex without ``0x``,
    kind and status by name (``CONSUMER``, ``ERROR``)."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any]
    status: str
    events: list[dict[str, Any]]
    links: list[dict[str, Any]] = field(default_factory=list)
    pid: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any], *, pid: int) -> Span:
        """Build a span from one line of a dump."""
        return cls(
            name=data["name"],
            kind=data["kind"].removeprefix("SpanKind."),
            trace_id=_hex(data["context"]["trace_id"]),
            span_id=_hex(data["context"]["span_id"]),
            parent_id=_hex(data["parent_id"]) if data.get("parent_id") else None,
            attributes=dict(data.get("attributes") or {}),
            status=data["status"]["status_code"].removeprefix("StatusCode."),
            events=list(data.get("events") or []),
            links=[
                {
                    "trace_id": _hex(link["context"]["trace_id"]),
                    "span_id": _hex(link["context"]["span_id"]),
                    "attributes": dict(link.get("attributes") or {}),
                }
                for link in data.get("links") or []
            ],
            pid=pid,
        )


def _hex(value: str) -> str:
    return value.removeprefix("0x")


def read_spans(folder: Path) -> list[Span]:
    """Return every span the subprocesses wrote to *folder* so far."""
    spans = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                spans.append(Span.from_json(json.loads(line), pid=int(path.stem)))
    return spans


def format_tree(spans: Sequence[Span], *, extra: Sequence[Span] = ()) -> str:
    """Return *spans* and *extra* (say, the test process's own) as an indented trace tree.

    Roots first (a span whose parent is not among them is a root), children under their
    parent, each with its kind, process, status, attributes and links.
    """
    every = [*extra, *spans]
    by_id = {span.span_id: span for span in every}
    children: dict[str | None, list[Span]] = {}
    for span in every:
        parent = span.parent_id if span.parent_id in by_id else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def show(span: Span, depth: int) -> None:
        pad = "    " * depth
        where = f"pid {span.pid}" if span.pid else "test process"
        lines.append(
            f"{pad}{span.name}  [{span.kind}, {where}, {span.status}] trace={span.trace_id} "
            f"span={span.span_id} parent={span.parent_id or '-'}"
        )
        for key, value in sorted(span.attributes.items()):
            lines.append(f"{pad}    {key} = {value}")
        for event in span.events:
            attrs = event.get("attributes") or {}
            lines.append(
                f"{pad}    event {event['name']}: {attrs.get('exception.type', '')} "
                f"{attrs.get('exception.message', '')}".rstrip()
            )
        for link in span.links:
            lines.append(
                f"{pad}    link -> trace={link['trace_id']} span={link['span_id']} "
                f"{link['attributes']}"
            )
        for child in children.get(span.span_id, []):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)
    return "\n".join(lines)
