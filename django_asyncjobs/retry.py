"""Retry policy: how long a failed job waits before its next attempt."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .conf import get_settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter.

    The n-th retry (n = 1, 2, ...) waits ``min(max_seconds, base_seconds * factor ** (n - 1))``,
    spread by plus or minus ``jitter`` (a fraction) so that jobs failing together do not all come
    back in the same second. The defaults wait about 1, 4 and 16 minutes.

    >>> Backoff(base_seconds=60, factor=4, jitter=0).delay_seconds(2)
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

    *attempts* counts the attempt that just failed. The ``at_most_once`` policy is not decided
    here: it lives on the job's row, and the statements that record a lost or interrupted
    attempt read it there (``JobManager.record_failure(lost=True)``, ``JobManager.hand_back``),
    so that a process that does not know the job's name still honours it.

    >>> next_retry_seconds(attempts=4, max_retries=3, backoff=None) is None
    True
    """
    if attempts > max_retries:
        return None
    return (backoff or Backoff.from_settings()).delay_seconds(max(1, attempts))
