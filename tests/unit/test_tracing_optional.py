"""Without ``opentelemetry-api`` installed, tracing imports and does nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

import django_asyncjobs


def load_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import a fresh copy of tracing.py while ``import opentelemetry`` fails."""
    for name in [n for n in sys.modules if n == "opentelemetry" or n.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # None: the import raises
    path = Path(django_asyncjobs.__file__).with_name("tracing.py")
    spec = importlib.util.spec_from_file_location("django_asyncjobs._tracing_copy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_hook_is_a_no_op_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    tracing = load_without_opentelemetry(monkeypatch)
    assert tracing.enabled() is False
    assert tracing.current_context() is None
    assert tracing.start_run(object(), transport=object()) is None
    with tracing.relay_span(queue="default", jobs=[object()], transport=object()) as span:
        assert span is None
    tracing.refused(None, count=3)
    with pytest.raises(ValueError, match="raised on"), tracing.activate(None):
        raise ValueError("raised on")
    tracing.record_exception(None, ValueError())
    tracing.end_run(None, outcome_name="succeeded")
    tracing.flush()


def test_with_opentelemetry_installed_the_module_says_so() -> None:
    from django_asyncjobs import tracing

    assert tracing.enabled() is True  # the test extra installs it
