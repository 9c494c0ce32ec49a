"""Run one job's code: sync or async, function or class, with its timeout, capturing the outcome.

Nothing here touches the job row; the worker records the :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import traceback as traceback_module
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

from . import tracing
from .conf import get_settings
from .context import JobContext, running
from .exceptions import JobCancelled, JobTimeout
from .payload import check_result, storable_text
from .registry import JobDefinition

#: Stored tracebacks and error texts are cut to this many characters (the end is kept).
MAX_TRACEBACK_CHARS = 64 * 1024
MAX_ERROR_CHARS = 4 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one attempt ended: a JSON-ready *result*, or an *error* and its *traceback*."""

    ok: bool
    duration_seconds: float
    result: Any = None
    error: str = ""
    traceback: str = ""

    @property
    def timed_out(self) -> bool:
        """Return whether the attempt was stopped by its timeout."""
        return self.error.startswith("JobTimeout:")


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"... [{len(text) - limit:,} characters cut]\n" + text[-limit:]


def failure(exc: BaseException, *, started: float) -> Outcome:
    """Return the failed :class:`Outcome` for *exc*, with its formatted traceback."""
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    formatted = "".join(traceback_module.format_exception(exc))
    # RuntimeError(f"bad row {text!r}") may quote a lone surrogate or a NUL: the worker could
    # not record the failure at all, and the job would stay running until rescued.
    message, formatted = storable_text(message), storable_text(formatted)
    return Outcome(
        ok=False,
        duration_seconds=time.monotonic() - started,
        error=_truncate(message, MAX_ERROR_CHARS),
        traceback=_truncate(formatted, MAX_TRACEBACK_CHARS),
    )


def _success(result: Any, *, started: float) -> Outcome:
    try:
        check_result(result, max_bytes=get_settings().max_payload_bytes)
    except (TypeError, ValueError) as exc:
        return failure(exc, started=started)
    return Outcome(ok=True, duration_seconds=time.monotonic() - started, result=result)


def _running(context: JobContext | None) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext() if context is None else running(context)


def _invoke(definition: JobDefinition[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    if definition.is_class:
        return definition.target(*args, **kwargs).handle()
    return definition.target(*args, **kwargs)


def cancelled(context: JobContext, *, started: float) -> Outcome:
    """Return the outcome of an attempt that ended after it was told of its cancel request."""
    return failure(JobCancelled(by=context.cancel_requested_by), started=started)


def run_sync(
    definition: JobDefinition[Any, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    context: JobContext | None = None,
    trace: tracing.RunSpan | None = None,
) -> Outcome:
    """Run a ``def`` job (or a class with a sync ``handle``) and return its outcome.

    *context* is what :func:`~django_asyncjobs.current_job` returns to the job's code; *trace*
    is the attempt's span, current while the code runs (see :mod:`~django_asyncjobs.tracing`). The
    timeout of a sync job is enforced by the worker, which cannot interrupt the thread. A job
    that was told of a cancel request (:meth:`JobContext.cancel_requested`) and then returned
    normally was cancelled, not successful: it may have stopped half-way.
    """
    started = time.monotonic()
    try:
        with _running(context), tracing.activate(trace):
            result = _invoke(definition, args, kwargs)
    except BaseException as exc:  # SystemExit from a job fails the attempt, not the worker
        return failure(exc, started=started)
    if context is not None and context.cancel_seen:
        return cancelled(context, started=started)
    return _success(result, started=started)


async def run_async(
    definition: JobDefinition[Any, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    timeout_seconds: float | None,
    context: JobContext | None = None,
    trace: tracing.RunSpan | None = None,
) -> Outcome:
    """Run an ``async def`` job, cancelling it when it outlives *timeout_seconds*.

    When an operator cancels the attempt (the worker sets *context*'s cancel request), the
    task is cancelled at once: ``asyncio.CancelledError`` is raised at the job's current
    ``await``, and the outcome is a ``JobCancelled`` failure.
    """
    started = time.monotonic()
    task = asyncio.current_task()
    if context is not None and task is not None:
        loop = asyncio.get_running_loop()
        # The request is set in the heartbeat thread; the task is cancelled on its own loop.
        context.on_cancel_request(functools.partial(_cancel_soon, loop, task, context))
    try:
        # wait_for's task copies the context, so the job sees it (and the span is current).
        with _running(context), tracing.activate(trace):
            awaitable = cast(Awaitable[Any], _invoke(definition, args, kwargs))
            result = await asyncio.wait_for(awaitable, timeout_seconds)
    except TimeoutError:
        assert timeout_seconds is not None
        return failure(JobTimeout(timeout_seconds), started=started)
    except asyncio.CancelledError:
        if context is None or not context.cancel_seen:
            raise  # the worker cancels jobs it hands back at shutdown
        if task is not None:
            task.uncancel()  # this cancellation is handled: it ends the attempt, not the task
        return cancelled(context, started=started)
    except BaseException as exc:
        return failure(exc, started=started)
    if context is not None and context.cancel_seen:
        return cancelled(context, started=started)  # it swallowed the cancellation
    return _success(result, started=started)


def _cancel_soon(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], context: JobContext
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the job is long over
        loop.call_soon_threadsafe(_cancel_task, task, context)


def _cancel_task(task: asyncio.Task[Any], context: JobContext) -> None:
    """Cancel the running job's *task* (on its event loop), once its cancel was requested."""
    if not task.done():
        context.mark_cancel_seen()
        task.cancel("cancel requested")


def timed_out(timeout_seconds: float, *, started: float) -> Outcome:
    """Return the outcome of a sync attempt the worker gave up on at its timeout."""
    return failure(JobTimeout(timeout_seconds), started=started)
