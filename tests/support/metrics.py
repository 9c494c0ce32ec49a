"""Scrape and read Prometheus ``/metrics`` pages, as Prometheus would."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from .processes import ManagedProcess

#: A sample by its name (with Prometheus's suffix: ``_total``, ``_count``...) and labels.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_url(process: ManagedProcess) -> str:
    """Return the scrape address a command started with ``--metrics-port`` printed."""
    return process.wait_for_output(r"metrics (http://\S+/metrics)").group(1)


def scrape(url: str, *, headers: Mapping[str, str] | None = None) -> Samples:
    """GET *url* and parse it with prometheus_client's parser: a page it rejects fails here."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain"), response.headers
        return parse(response.read().decode())


def parse(text: str) -> Samples:
    """Parse Prometheus text into :data:`Samples`."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return the sample *name* with exactly *labels*, or 0 when the page has none."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Return the sum of the samples *name* whose labels include *labels*."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)
