"""Timestamps of each hop a job takes, written by the processes ``latency_hops.py`` starts.

Python imports this module at start-up when its folder is on ``PYTHONPATH`` (as
``benchmarks/latency_hops.py`` puts it for the ``runscheduler`` and ``runworker`` it starts),
and does nothing unless ``ASYNCJOBS_BENCH_TRACE_DIR`` is set. Then, once Django is set up, it
wraps the SQS transport's send and receive, the worker's claim and the scheduler's wait for a
NOTIFY, and appends one JSON line per call to ``<dir>/<pid>.jsonl``: the call's start and end
(``time.time()``, the clock PostgreSQL's ``now()`` reads too) and the job ids it carried. Nothing
in the library knows about it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

_DIRECTORY = os.environ.get("ASYNCJOBS_BENCH_TRACE_DIR")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _record(kind: str, started: float, ended: float, ids: list[str]) -> None:
    assert _DIRECTORY is not None
    line = json.dumps({"kind": kind, "t0": started, "t1": ended, "ids": ids})
    with open(os.path.join(_DIRECTORY, f"{os.getpid()}.jsonl"), "a") as out:
        out.write(line + "\n")


def _timed(kind: str, ids_of: Callable[[tuple[Any, ...], Any], list[str]]) -> Callable[..., Any]:
    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            result = method(*args, **kwargs)
            ids = ids_of(args, result)
            if ids or kind == "woke":
                _record(kind, started, time.time(), ids)
            return result

        return wrapper

    return decorate


def _install() -> None:
    from django_asyncjobs.queries.claim import ClaimQueries
    from django_asyncjobs.scheduler import Scheduler
    from django_asyncjobs.transports.sqs import SQSTransport

    send, receive = SQSTransport.send_batch, SQSTransport.receive
    SQSTransport.send_batch = _timed(  # type: ignore[method-assign]
        "send", lambda args, _: [i for m in args[2] for i in _UUID.findall(m.body)]
    )(send)
    SQSTransport.receive = _timed(  # type: ignore[method-assign]
        "receive", lambda _, result: [i for m in result for i in _UUID.findall(m.body)]
    )(receive)
    ClaimQueries.claim_many = _timed(  # type: ignore[method-assign]
        "claim", lambda args, _: [str(job_id) for job_id, _ in args[1]]
    )(ClaimQueries.claim_many)
    Scheduler._wait_for_notify = _timed("woke", lambda _, __: [])(  # type: ignore[method-assign]
        Scheduler._wait_for_notify
    )


if _DIRECTORY:
    import django

    _setup = django.setup

    def _setup_then_install(*args: Any, **kwargs: Any) -> None:
        _setup(*args, **kwargs)
        _install()

    django.setup = _setup_then_install
