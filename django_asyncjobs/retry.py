"""Retry policy: the one decision on how an attempt that did not succeed ends, and the backoff.

An attempt that did not succeed ended in one of three ways (:class:`Ending`). :func:`decide`
turns the ending and the job's row into a :class:`Decision`: retry after a backoff, hand back
(due again at once), fail for good, or, when an operator asked to cancel the job, cancel it.
The worker, the scheduler, the supervisor and ``run_jobs()`` call it;
``JobManager.end_attempt`` only records the decision it is given, and only while the row still
holds the values the decision was made from.

The policy comes from the row (``attempts``, ``max_retries``, ``at_most_once``,
``interruptions``, and whether a cancel was requested), never from the code's job definition,
so that a process that does not know the job's name (a rolling deploy) decides as one that
does. Only the backoff comes from the
code, when the caller knows the job; otherwise the project's default applies.

This module is pure: it reads settings only for defaults, and never the database.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from .conf import get_settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter.

    The n-th retry (n = 1, 2, ...) waits ``min(max_seconds, base_seconds * factor ** (n - 1))``,
    spread by plus or minus ``jitter`` (a fraction) so that jobs failing together do not all come
    back in the same second. The defaults wait about 1, 4 and 16 minutes.

    >>> Backoff(base_seconds=60.0, factor=4.0, jitter=0.0).delay_seconds(2)
    240.0
    """

    base_seconds: float = 60.0
    factor: float = 4.0
    max_seconds: float = 3600.0
    jitter: float = 0.2

    @classmethod
    def from_settings(cls) -> Backoff:
        """Return the project-wide policy from ``ASYNCJOBS``."""
        conf = get_settings()
        return cls(
            base_seconds=conf.retry_backoff_seconds,
            factor=conf.retry_backoff_factor,
            max_seconds=conf.retry_backoff_max_seconds,
            jitter=conf.retry_jitter,
        )

    @classmethod
    def fixed(cls, seconds: float) -> Backoff:
        """Return a policy that waits *seconds* before every retry.

        >>> Backoff.fixed(0.5).delay_seconds(3)
        0.5
        """
        return cls(base_seconds=seconds, factor=1.0, max_seconds=seconds, jitter=0.0)

    def delay_seconds(self, retry: int, *, rng: random.Random | None = None) -> float:
        """Return the wait before retry number *retry* (1 for the first retry)."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1, not {retry}")
        exponent = min(retry - 1, 64)  # keeps the power finite; max_seconds caps it anyway
        try:
            grown = self.base_seconds * self.factor**exponent
        except OverflowError:  # a factor so large that even 64 steps leave float's range
            grown = math.inf
        # No cap on the result here: the statement that stores the retry caps it at the latest
        # time a job may be scheduled for (queries.storable_delay_seconds).
        delay = min(self.max_seconds, grown)
        if self.jitter:
            delay *= (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return max(0.0, delay)


def next_retry_seconds(*, attempts: int, max_retries: int, backoff: Backoff | None) -> float | None:
    """Return the wait before the job's next attempt, or ``None`` when it must fail for good.

    *attempts* counts the attempt that just failed; *backoff* ``None`` is the project's default.
    This is the retry budget alone: :func:`decide` adds what the row's ``at_most_once`` and
    interruptions say.

    >>> next_retry_seconds(attempts=4, max_retries=3, backoff=None) is None
    True
    """
    if attempts > max_retries:
        return None
    return (backoff or Backoff.from_settings()).delay_seconds(max(1, attempts))


class Ending(Enum):
    """How an attempt that did not succeed ended."""

    #: The job raised, returned what cannot be stored, or timed out: its retry policy applies.
    FAILED = "failed"
    #: Its worker died or went silent: the attempt may have partly run.
    LOST = "lost"
    #: Its worker handed it back at a graceful shutdown: the attempt may have partly run.
    INTERRUPTED = "interrupted"


class Action(Enum):
    """What becomes of the job."""

    #: Scheduled again after ``Decision.retry_in_seconds``; the attempt counts.
    RETRY = "retry"
    #: Scheduled again at once; the interruption counts, and the attempt unless it was free.
    HAND_BACK = "hand back"
    #: Failed for good.
    FAIL = "fail"
    #: Cancelled: an operator asked to cancel the job while it ran. Never retried.
    CANCEL = "cancel"


class AttemptRow(Protocol):
    """The values of a job's row that a decision reads (a ``Job`` has them)."""

    @property
    def attempts(self) -> int: ...

    @property
    def max_retries(self) -> int: ...

    @property
    def at_most_once(self) -> bool: ...

    @property
    def interruptions(self) -> int: ...

    @property
    def cancel_requested(self) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Basis:
    """The values of a row that a decision was made from.

    The statement that records a decision requires the row to hold them still, so a decision
    made from values the row no longer holds is never applied.
    """

    attempts: int
    max_retries: int
    at_most_once: bool
    interruptions: int
    cancel_requested: bool = False

    @classmethod
    def of(cls, row: AttemptRow) -> Basis:
        """Return the values of *row* that a decision reads."""
        return cls(
            attempts=row.attempts,
            max_retries=row.max_retries,
            at_most_once=row.at_most_once,
            interruptions=row.interruptions,
            cancel_requested=row.cancel_requested,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to record for an attempt that did not succeed, and the row values it assumed."""

    action: Action
    ending: Ending
    basis: Basis
    #: For ``RETRY``: how long the job waits before its next attempt.
    retry_in_seconds: float = 0.0
    #: An interruption within the free ones gives the attempt back (``attempts - 1``), whatever
    #: the action.
    refund_attempt: bool = False


def decide(
    row: AttemptRow,
    *,
    ending: Ending,
    backoff: Backoff | None = None,
    free_interruptions: int | None = None,
) -> Decision:
    """Decide what becomes of the job whose attempt ended in *ending*, from its *row*.

    - Whatever the ending: ``CANCEL`` when an operator asked to cancel the job while it ran
      (``row.cancel_requested``). The request wins over retries, hand-backs and rescues.
    - ``INTERRUPTED``: handed back, due at once. The job's first *free_interruptions*
      interruptions (``None``: the ``FREE_INTERRUPTIONS`` setting) give the attempt back, so
      deploys do not use up retries; later ones count it. Failed instead when the row is
      ``at_most_once``, or when the attempt counts and no retry is left.
    - ``LOST``: failed when the row is ``at_most_once``, whatever retries are left; otherwise as
      ``FAILED``.
    - ``FAILED``: retried after *backoff* (``None``: the project's default) while ``attempts``
      (which counts the attempt that just ended) is at most ``max_retries``; failed after that.

    Pure; *row* may be a ``Job`` or anything with its four values, such as a :class:`Basis`:

    >>> row = Basis(attempts=1, max_retries=3, at_most_once=True, interruptions=0)
    >>> decide(row, ending=Ending.LOST).action
    <Action.FAIL: 'fail'>
    >>> decide(row, ending=Ending.FAILED, backoff=Backoff.fixed(30.0)).retry_in_seconds
    30.0
    >>> decide(row, ending=Ending.INTERRUPTED, free_interruptions=3).refund_attempt
    True
    >>> decide(Basis(attempts=1, max_retries=3, at_most_once=False, interruptions=0,
    ...              cancel_requested=True), ending=Ending.LOST).action
    <Action.CANCEL: 'cancel'>
    """
    basis = Basis.of(row)
    if basis.cancel_requested:
        return Decision(action=Action.CANCEL, ending=ending, basis=basis)
    if ending is Ending.INTERRUPTED:
        if free_interruptions is None:
            free_interruptions = get_settings().free_interruptions
        free = basis.interruptions < free_interruptions
        give_up = basis.at_most_once or (not free and basis.attempts > basis.max_retries)
        action = Action.FAIL if give_up else Action.HAND_BACK
        return Decision(action=action, ending=ending, basis=basis, refund_attempt=free)
    if ending is Ending.LOST and basis.at_most_once:
        return Decision(action=Action.FAIL, ending=ending, basis=basis)
    retry_in = next_retry_seconds(
        attempts=basis.attempts, max_retries=basis.max_retries, backoff=backoff
    )
    if retry_in is None:
        return Decision(action=Action.FAIL, ending=ending, basis=basis)
    return Decision(action=Action.RETRY, ending=ending, basis=basis, retry_in_seconds=retry_in)
