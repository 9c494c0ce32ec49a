"""Jobs used by the test suite; autodiscovered because tests.testapp is an installed app.

Jobs record each execution in the ``Execution`` ledger (written in autocommit, outside any job
transaction), so tests can count how often a job body really ran.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from typing import Any

from django_asyncjobs import (
    Backoff,
    areport_progress,
    cancel_requested,
    current_job,
    job,
    report_progress,
)

from .durable import retry_through_restart
from .models import Execution


def _ledger(name: str, key: str, **extra: Any) -> None:
    Execution.objects.create(job=name, key=key, payload=extra)


@job
def add(a: int, b: int) -> int:
    _ledger("add", f"{a}+{b}")
    return a + b


@job(name="tests.echo", queue="default")
def echo(value: Any = None, *, key: str = "") -> Any:
    _ledger("echo", key, value=value)
    return value


@job(queue="high", priority=5)
def high_echo(key: str) -> str:
    _ledger("high_echo", key)
    return key


@job(queue="low")
def low_echo(key: str) -> str:
    _ledger("low_echo", key)
    return key


@job(max_retries=2)
def always_fails(key: str) -> None:
    _ledger("always_fails", key)
    raise ValueError(f"boom {key}")


@job(max_retries=3)
def fails_then_succeeds(key: str, failures: int) -> str:
    _ledger("fails_then_succeeds", key)
    done = Execution.objects.filter(job="fails_then_succeeds", key=key).count()
    if done <= failures:
        raise RuntimeError(f"attempt {done} fails on purpose")
    return f"ok after {done}"


@job
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@job(timeout=1, max_retries=0)
async def async_sleeper(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


@job(timeout=1, max_retries=0)
def sync_sleeper(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@job
def returns_set() -> Any:
    return {1, 2}


@job(max_retries=0)
def returns_lone_surrogate() -> Any:
    return {"text": "half of a pair: \ud800"}


@job(max_retries=0)
def raises_lone_surrogate() -> None:
    raise RuntimeError("half of a pair: \ud800, and a NUL: \x00")


@job
class SayHello:
    """A class-based job like the seed documents' ``BaseJob`` subclasses."""

    def __init__(self, name: str, punctuation: str = "!") -> None:
        self.name = name
        self.punctuation = punctuation

    def handle(self) -> str:
        _ledger("SayHello", self.name)
        return f"Hello, {self.name}{self.punctuation}"


@job
class AsyncGreeter:
    def __init__(self, name: str) -> None:
        self.name = name

    async def handle(self) -> str:
        await asyncio.sleep(0)
        return f"Hi {self.name}"


@job(timeout=30, max_retries=0)
def slow_job(seconds: float, *, key: str = "") -> str:
    """Sleep, then return: a sync job that is still running when a test stops its worker."""
    _ledger("slow_job", key)
    time.sleep(seconds)
    return f"slept {seconds:g}s"


# -- jobs of the fault-injection suite (tests/faults) ------------------------------------------
# Each writes a "start" and a "finish" row to the ledger, outside any transaction of the job, so
# a test can tell an attempt that was cut off from one that completed.


def _phase(name: str, key: str, phase: str) -> int:
    """Record *phase* of one run of *name*; return how many runs with *key* have started."""
    token = uuid.uuid4().hex

    def write() -> int:
        if not Execution.objects.filter(payload__token=token).exists():
            Execution.objects.create(
                job=name, key=key, payload={"phase": phase, "pid": os.getpid(), "token": token}
            )
        return Execution.objects.filter(job=name, key=key, payload__phase="start").count()

    return retry_through_restart(write)


@job(name="tests.ledgered", max_retries=3, timeout=120)
def ledgered(key: str, seconds: float = 0.0) -> dict[str, Any]:
    """Sleep *seconds* between a start and a finish record; return who ran it."""
    _phase("ledgered", key, "start")
    time.sleep(seconds)
    _phase("ledgered", key, "finish")
    return {"key": key, "pid": os.getpid()}


@job(name="tests.ledgered_once", max_retries=3, timeout=120, at_most_once=True)
def ledgered_once(key: str, seconds: float = 0.0) -> dict[str, Any]:
    """Like ``ledgered``, for a job that must never run twice."""
    _phase("ledgered_once", key, "start")
    time.sleep(seconds)
    _phase("ledgered_once", key, "finish")
    return {"key": key, "pid": os.getpid()}


@job(name="tests.stuck", max_retries=1, timeout=2)
def stuck(key: str, how: str, stuck_runs: int = 1) -> str:
    """Hang past the 2 s timeout in the first *stuck_runs* runs, then succeed.

    *how*: ``sleep`` blocks in a C call that releases the GIL; ``gil`` runs a regular expression
    that backtracks for ages while holding the GIL, so no other thread of the process runs.
    """
    started = _phase("stuck", key, "start")
    if started <= stuck_runs:
        if how == "sleep":
            time.sleep(10**6)
        elif how == "gil":
            re.match(r"(a+)+$", "a" * 64 + "b")
        else:
            raise ValueError(f"unknown way to get stuck: {how!r}")
    _phase("stuck", key, "finish")
    return f"{key} done on run {started}"


@job(name="tests.async_stuck", max_retries=1, timeout=2)
async def async_stuck(key: str, stuck_runs: int = 1) -> str:
    """An ``async def`` job that awaits forever in its first *stuck_runs* runs."""
    from asgiref.sync import sync_to_async

    started = await sync_to_async(_phase)("async_stuck", key, "start")
    if started <= stuck_runs:
        await asyncio.sleep(10**6)
    await sync_to_async(_phase)("async_stuck", key, "finish")
    return f"{key} done on run {started}"


@job(max_retries=0)
def big_result(characters: int) -> str:
    """Return *characters* two-byte characters: a result of 2 x characters + 2 bytes of JSON."""
    return "é" * characters


@job(max_retries=0)
def fails_now(key: str) -> None:
    """Fail for good on the first attempt."""
    _ledger("fails_now", key)
    raise RuntimeError(f"{key} fails for good")


@job(unique=True)
def sync_account(account: int) -> int:
    """A unique job: one per account while one is waiting or running."""
    _ledger("sync_account", str(account))
    return account


@job(max_retries=0)
def flaky_once(key: str) -> str:
    """Fail on the first run for *key* (for good: no retries), succeed on any later run."""
    _ledger("flaky_once", key)
    if Execution.objects.filter(job="flaky_once", key=key).count() == 1:
        raise RuntimeError(f"{key}: the first run always fails")
    return f"{key} fixed"


@job(api=True)
def api_add(a: int, b: int) -> int:
    """A job that the HTTP jobs API may create."""
    return a + b


@job(api=True, unique=True)
def api_sync_account(account: int) -> int:
    """A unique job the HTTP jobs API may create: one per account while one is active."""
    return account


@job(max_retries=0)
def progressing(steps: int) -> dict[str, Any]:
    """Report progress on every step; return what ``current_job()`` said and what was written."""
    context = current_job()
    written = [report_progress(i, steps, f"step {i}") for i in range(1, steps + 1)]
    return {
        "attempt": context.attempt if context else None,
        "name": context.name if context else None,
        "written": written,
    }


@job(max_retries=0)
async def async_progressing(steps: int) -> dict[str, Any]:
    """The ``async def`` twin of ``progressing``."""
    context = current_job()
    written = [await areport_progress(i, steps, f"step {i}") for i in range(1, steps + 1)]
    return {"attempt": context.attempt if context else None, "written": written}


# -- jobs of the running-job cancel tests (tests/processes/test_cancel_running.py) ---------------
# Each records "start" when it begins and "finish" only if it ran to its end, so a test can tell
# a job that was stopped from one that completed. They retry, so a test also sees that a
# cancelled job is never run again.


@job(name="tests.cancel.async_waits", max_retries=3, timeout=120)
async def async_waits(key: str, seconds: float = 60.0) -> str:
    """An ``async def`` job that awaits *seconds*; a cancel stops it at that await."""
    from asgiref.sync import sync_to_async

    await sync_to_async(_phase)("cancel.async_waits", key, "start")
    await asyncio.sleep(seconds)
    await sync_to_async(_phase)("cancel.async_waits", key, "finish")
    return "waited"


@job(name="tests.cancel.reports_progress", max_retries=3, timeout=120)
def reports_progress(key: str, steps: int = 600) -> str:
    """A ``def`` job that reports progress each 0.1 s step: the report after a cancel raises."""
    _phase("cancel.reports_progress", key, "start")
    for step in range(1, steps + 1):
        time.sleep(0.1)
        report_progress(step, steps, f"step {step}")
    _phase("cancel.reports_progress", key, "finish")
    return "all steps"


@job(name="tests.cancel.checks", max_retries=3, timeout=120)
def checks_cancel(key: str, seconds: float = 60.0) -> str:
    """A ``def`` job that checks ``cancel_requested()`` and returns early (it still ends
    cancelled, since it was told)."""
    _phase("cancel.checks", key, "start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cancel_requested():
            return "stopped early"
        time.sleep(0.05)
    _phase("cancel.checks", key, "finish")
    return "ran to the end"


@job(name="tests.cancel.ignores", max_retries=3, timeout=4)
def ignores_cancel(key: str, seconds: float = 60.0) -> str:
    """A ``def`` job that never checks: only its 4 s timeout stops it."""
    _phase("cancel.ignores", key, "start")
    time.sleep(seconds)
    _phase("cancel.ignores", key, "finish")
    return "ran to the end"


# -- jobs of the run_jobs() tests (tests/integration/test_testing.py) ------------------------------


@job(max_retries=0)
def enqueues_next(key: str, hops: int) -> int:
    """Enqueue itself with one hop less until *hops* is 0; return *hops*."""
    _ledger("enqueues_next", key, hops=hops)
    if hops > 0:
        enqueues_next.delay(key, hops - 1)
    return hops


@job(max_retries=0)
async def async_ledger(key: str) -> int:
    """Write the ledger through the ORM from an ``async def`` job; return its rows for *key*."""
    from asgiref.sync import sync_to_async

    await sync_to_async(_ledger)("async_ledger", key)
    return await Execution.objects.filter(key=key).acount()


@job(max_retries=3)
def interrupted(key: str) -> None:
    """Stop the way Ctrl+C stops code running in the main thread."""
    _ledger("interrupted", key)
    raise KeyboardInterrupt


@job(max_retries=3, at_most_once=True)
def interrupted_once(key: str) -> None:
    """Like ``interrupted``, for a job that must never run twice."""
    _ledger("interrupted_once", key)
    raise KeyboardInterrupt


@job(max_retries=0)
def breaks_transaction(key: str) -> None:
    """Write the ledger, then fail with a database error (a unique token used twice)."""
    from .models import Transition

    _ledger("breaks_transaction", key)
    token = uuid.uuid4()
    for _ in range(2):
        Transition.objects.create(job_id=uuid.uuid4(), new_status="x", pid=0, token=token)


@job(max_retries=0)
def leaves_state_behind(language: str) -> None:
    """Activate a translation and leave a transaction open: state a next job must not inherit."""
    from django.db import transaction
    from django.utils import translation

    translation.activate(language)
    transaction.atomic().__enter__()  # never exited, as a buggy job might
    _ledger("leaves_state_behind", language)


@job(max_retries=0)
def reports_state() -> dict[str, Any]:
    """Return the active language and whether the ORM works here."""
    from django.utils import translation

    _ledger("reports_state", "")
    return {"language": translation.get_language(), "ledger": Execution.objects.count()}


@job(queue="low")
def slow_low(key: str, seconds: float) -> str:
    """A low-priority job that takes *seconds*."""
    time.sleep(seconds)
    _ledger("slow_low", key)
    return key


@job(max_retries=1, backoff=Backoff(base_seconds=1e300, factor=1e300, max_seconds=1e300, jitter=0))
def fails_with_endless_backoff(key: str) -> None:
    """Fail with a retry left, under a backoff that waits longer than any row can hold."""
    _ledger("fails_with_endless_backoff", key)
    raise RuntimeError(f"{key} fails")


# -- jobs of the connection tests (tests/integration/test_worker.py) -------------------------------


@job(max_retries=0)
def session(leave_autocommit_off: bool = False) -> dict[str, Any]:
    """Return this job's database session (backend pid) and whether it found autocommit on."""
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    autocommit = transaction.get_autocommit()
    if leave_autocommit_off:
        transaction.set_autocommit(False)  # a bug of the job's: the worker must not reuse this
    return {"pid": pid, "autocommit": autocommit}


# -- jobs of the progress tests (tests/integration/test_context.py) --------------------------------


def _side_connection() -> Any:
    """Open a psycopg connection of its own to the job's database (autocommit)."""
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    return psycopg.connect(**params, autocommit=True)


@job(max_retries=0)
def progress_after_losing_the_connection(key: str) -> bool:
    """Report progress on a connection the server has just ended; then use the database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with _side_connection() as side:
        side.execute("SELECT pg_terminate_backend(%s)", [pid])
    written = report_progress(1, 2, "after the connection dropped")
    _ledger("progress_after_losing_the_connection", key)  # the job's next query works
    return written


@job(max_retries=0)
def progress_on_a_locked_row(key: str) -> bool:
    """Report progress while another session holds the job's row; then use the database."""
    from django.db import connection

    context = current_job()
    assert context is not None
    with _side_connection() as side, side.transaction():
        side.execute("SELECT 1 FROM asyncjobs_job WHERE id = %s FOR UPDATE", [context.id])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '100ms'")
        try:
            written = report_progress(1, 2, "the row is locked")
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
    _ledger("progress_on_a_locked_row", key)
    return written


@job(max_retries=0)
def progress_in_a_transaction(key: str, seconds: float) -> dict[str, Any]:
    """Report progress inside a transaction of its own that lasts *seconds*; return how far the
    worker's heartbeat moved meanwhile, as another session sees the row."""
    from django.db import transaction

    context = current_job()
    assert context is not None
    with transaction.atomic():
        _ledger("progress_in_a_transaction", key)
        written = report_progress(1, 2, "inside")
        time.sleep(seconds)
        with _side_connection() as side:
            row = side.execute(
                "SELECT extract(epoch FROM heartbeat_at - started_at), progress "
                "FROM asyncjobs_job WHERE id = %s",
                [context.id],
            ).fetchone()
    return {"written": written, "heartbeat_moved": float(row[0]), "progress_seen": row[1]}


@job(name="tests.traced", max_retries=1)
def traced(key: str, fail: bool = False) -> str:
    """Make a span of its own and log a line, then fail (retried once) if *fail*."""
    from opentelemetry import trace

    _ledger("traced", key)
    with trace.get_tracer("tests.testapp").start_as_current_span("user work") as span:
        span.set_attribute("key", key)
        logging.getLogger("tests.testapp.jobs").warning("traced job working key=%s", key)
    if fail:
        raise ValueError(f"traced failure {key}")
    return key


def _customer(customer: str, *args: Any, **kwargs: Any) -> str:
    return customer


@job(name="tests.per_customer", concurrency=2, concurrency_key=_customer, max_retries=3, timeout=60)
def per_customer(customer: str, seconds: float = 0.0, *, key: str = "") -> str:
    """At most two per customer at once; sleeps *seconds* to hold its slot."""
    _ledger("per_customer", key or customer)
    time.sleep(seconds)
    return customer


@job(name="tests.one_at_a_time", concurrency=1, max_retries=0)
def one_at_a_time(key: str) -> str:
    _ledger("one_at_a_time", key)
    return key


@job(name="tests.rated", rate_limit="5/s", max_retries=0)
def rated(key: str) -> str:
    _ledger("rated", key)
    return key
