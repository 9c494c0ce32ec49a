"""Flow control of the relay: how many jobs of a queue to keep in SQS, and how many per message.

The scheduler keeps only a short stretch of each queue's work in SQS and the rest in PostgreSQL,
where priority order is exact. How long a stretch depends on how fast the queue's jobs start,
which :class:`QueueFlow` measures from the ledger alone: the jobs that left ``queued`` between
two passes (started, or handed back) over the time between them, smoothed over about a second.

From that rate it derives two figures:

- **in flight**: about ``IN_FLIGHT_SECONDS`` of the queue's starts, never fewer than
  ``MIN_IN_FLIGHT`` and never more than ``MAX_QUEUED_PER_QUEUE``;
- **per message**: about ``MESSAGE_SECONDS`` of one worker process's starts (the queue's rate
  shared among the live worker processes that consume it), 1 to ``MAX_JOBS_PER_MESSAGE``. One
  send, one receive and one delete then serve that many jobs; an idle queue's job is sent alone,
  at once, so a trickle keeps its latency.

While a queue has a message's worth of jobs in flight, it is topped up only by whole messages:
a top-up of a few jobs would cost as many requests as a full one, and the workers have work to go
on with meanwhile. A queue with less than that in flight is never held back: an idle queue's job
goes out at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .payload import MAX_JOBS_PER_MESSAGE

#: How much of a queue's work (in seconds of its start rate) waits in SQS at most, beyond the
#: floor: enough for the workers to go on while the scheduler sends the next messages.
IN_FLIGHT_SECONDS = 0.5
#: How much of a queue's work one message names: a worker holds the jobs of a message it cannot
#: start at once, so this bounds how long they wait there (workers hand back what they cannot
#: start soon, and a held job after ``HOLD_SECONDS``). One second of a worker's starts: at
#: 0.2 s a drain cost 0.12 SQS requests per job with one job at a time (0.06 with eight), at
#: 1 s 0.05 (0.04), and no job went back for want of room (benchmarks/throughput.py).
MESSAGE_SECONDS = 1.0
#: The in-flight figure of a queue whose rate is not known yet (or is slow): as many jobs as
#: flow control always kept in SQS.
MIN_IN_FLIGHT = 50
#: Time constant of the rate's smoothing, in seconds.
RATE_SMOOTHING_SECONDS = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to send of one queue in this pass."""

    #: How many jobs may be sent now (``None``: no limit).
    room: int | None
    #: How many jobs each message names.
    per_message: int
    #: Send nothing unless this many are due: a part of a message waits while the workers
    #: have a whole one to go on with.
    minimum: int = 1


@dataclass(slots=True)
class QueueFlow:
    """The start rate of one queue, and what it allows to send.

    Example::

        flow = QueueFlow()
        flow.observe(queued=0, now=0.0)
        plan = flow.plan(queued=0, cap=1000)     # Plan(room=50, per_message=1)
        flow.sent(plan.room or 0)
    """

    #: Jobs per second leaving ``queued``, smoothed.
    rate: float = 0.0
    _last_at: float | None = None
    _last_queued: int = 0

    def observe(self, *, queued: int, now: float) -> None:
        """Take in the queue's ``queued`` count at *now* (monotonic seconds)."""
        if self._last_at is not None:
            elapsed = now - self._last_at
            if elapsed > 0:
                left = max(0, self._last_queued - queued)
                weight = 1.0 - math.exp(-elapsed / RATE_SMOOTHING_SECONDS)
                self.rate += weight * (left / elapsed - self.rate)
        self._last_at = now
        self._last_queued = queued

    def sent(self, count: int) -> None:
        """Count *count* jobs sent since the last :meth:`observe` (they are ``queued`` now)."""
        self._last_queued += count

    def plan(self, *, queued: int, cap: int, consumers: int = 1) -> Plan:
        """Return what may be sent, given *queued* jobs in flight, the ``MAX_QUEUED_PER_QUEUE``
        *cap* (0: no limit) and how many worker processes consume the queue.

        >>> QueueFlow(rate=500.0).plan(queued=0, cap=1000)
        Plan(room=250, per_message=100, minimum=1)
        >>> QueueFlow(rate=500.0).plan(queued=200, cap=1000)  # less than a message of room
        Plan(room=0, per_message=100, minimum=100)
        >>> QueueFlow(rate=500.0).plan(queued=120, cap=1000)  # a message's worth in flight
        Plan(room=100, per_message=100, minimum=100)
        >>> QueueFlow().plan(queued=3, cap=1000)
        Plan(room=47, per_message=1, minimum=1)
        >>> QueueFlow(rate=500.0).plan(queued=30, cap=1000)  # workers short of work
        Plan(room=200, per_message=100, minimum=1)
        >>> QueueFlow(rate=100.0).plan(queued=0, cap=1000, consumers=4)
        Plan(room=50, per_message=25, minimum=1)
        """
        # A worker holds what it cannot start at once for a moment only, then hands it back:
        # a message is sized for one worker process, not for the whole fleet.
        per_worker = self.rate * MESSAGE_SECONDS / max(1, consumers)
        per_message = max(1, min(MAX_JOBS_PER_MESSAGE, round(per_worker)))
        if not cap:
            return Plan(room=None, per_message=per_message)
        in_flight = max(MIN_IN_FLIGHT, round(self.rate * IN_FLIGHT_SECONDS), 2 * per_message)
        limit = min(cap, in_flight)
        # Under a small cap, messages shrink so that two of them fit: one being worked through
        # while the next is on its way.
        per_message = max(1, min(per_message, limit // 2))
        room = max(0, limit - queued)
        if queued:
            # Whole messages only while the workers have jobs to go on with: a top-up of a few
            # jobs costs as many requests as a full message.
            room -= room % per_message
        # While the workers have a whole message to go on with, send only whole ones.
        minimum = per_message if queued >= per_message else 1
        return Plan(room=room, per_message=per_message, minimum=minimum)
