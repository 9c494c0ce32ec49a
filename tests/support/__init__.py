"""Helpers shared by the test kinds: subprocesses, process flows, fault invariants, admin clients.

Test modules import these; fixtures live in tests/conftest.py (and tests/plugin.py for the
PostgreSQL and moto_server services).
"""
