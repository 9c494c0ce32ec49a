"""When a burst worker (``runworker --burst``) may stop: the ledger decides, not an empty receive.

A short poll of SQS samples some of its servers and may return nothing although messages exist,
so "no message" proves nothing. A burst worker that received nothing and runs nothing asks the
ledger what its queues still hold (:class:`~django_asyncjobs.queries.QueueWork`) and long-polls
every queue once more; it stops when the ledger is clear and that poll brought nothing.

While the ledger is not clear it keeps receiving, and gives up only when nothing moved (no
message, no change in the ledger) for longer than anything legitimate takes:

- jobs ``queued`` with no message in sight: longer than a message can stay invisible (the
  visibility timeout of a delivery that failed, plus a claim's lock wait); their messages are
  then held elsewhere or lost, and the worker exits with :data:`EXIT_UNFINISHED`, naming them;
- jobs running on other live workers: as long, then it leaves them to those workers (exit 0);
- due jobs not sent yet: a scheduler pass and a second, then it says no scheduler sends them
  (exit 0: nothing of its queues was sent).

:class:`BurstEnd` holds that reckoning, free of I/O so that it reads (and is tested) alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..queries import QueueWork

#: Exit status of a burst worker that gave up while jobs of its queues were still queued.
EXIT_UNFINISHED = 4


class Verdict(enum.Enum):
    """What a burst worker does after an empty round."""

    #: Keep receiving: the ledger says work is on its way.
    WAIT = "wait"
    #: Stop: the ledger is clear and a long poll confirmed it.
    DONE = "done"
    #: Stop, with a warning: only other workers' jobs or unsent due jobs are left.
    LEAVE = "leave"
    #: Stop with :data:`EXIT_UNFINISHED`: jobs are queued and their messages never came.
    GIVE_UP = "give up"


@dataclass(slots=True)
class BurstEnd:
    """Decide, round after empty round, whether a burst worker may stop.

    *patience_seconds* bounds the wait for queued and running jobs, *relay_patience_seconds*
    the wait for due jobs to be sent. Example::

        end = BurstEnd(patience_seconds=37, relay_patience_seconds=6)
        end.observe(QueueWork(), now=0.0)            # Verdict.DONE
        end.observe(QueueWork(queued=2), now=1.0)    # Verdict.WAIT (until 38.0)
    """

    patience_seconds: float
    relay_patience_seconds: float
    _last: QueueWork | None = None
    _since: float | None = None

    def progress(self, now: float) -> None:
        """Note that something moved at *now* (a message came): the patience starts over."""
        self._since = now

    def observe(self, work: QueueWork | None, *, now: float) -> Verdict:
        """Return what to do after a round that received nothing; *work* ``None``: unreadable.

        >>> end = BurstEnd(patience_seconds=10, relay_patience_seconds=2)
        >>> end.observe(QueueWork(due=1), now=0.0), end.observe(QueueWork(due=1), now=2.5)
        (<Verdict.WAIT: 'wait'>, <Verdict.LEAVE: 'leave'>)
        >>> end.observe(QueueWork(queued=1), now=3.0), end.observe(QueueWork(queued=1), now=13.5)
        (<Verdict.WAIT: 'wait'>, <Verdict.GIVE_UP: 'give up'>)
        """
        if work is not None and work.clear:
            return Verdict.DONE
        if self._since is None or work != self._last:
            self._last, self._since = work, now
            return Verdict.WAIT
        waited = now - self._since
        if work is None or work.queued:
            return Verdict.GIVE_UP if waited > self.patience_seconds else Verdict.WAIT
        if work.running_elsewhere:
            return Verdict.LEAVE if waited > self.patience_seconds else Verdict.WAIT
        return Verdict.LEAVE if waited > self.relay_patience_seconds else Verdict.WAIT

    def waited(self, now: float) -> float:
        """Seconds since the last progress, or 0 if nothing was observed yet."""
        return 0.0 if self._since is None else now - self._since
