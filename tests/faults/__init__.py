"""Processes with one fault injected each, ending in one invariant check (``pytest -m faults``)."""
