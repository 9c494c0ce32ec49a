"""Flow control of the relay: the start rate it measures and what it lets through."""

from __future__ import annotations

import pytest

from django_asyncjobs.flow import MESSAGE_SECONDS, MIN_IN_FLIGHT, QueueFlow
from django_asyncjobs.payload import MAX_JOBS_PER_MESSAGE


def drained(rate_per_second: float, *, seconds: float, start_queued: int = 1000) -> QueueFlow:
    """A flow that watched a queue's queued count fall at *rate_per_second* for *seconds*."""
    flow = QueueFlow()
    queued, now = start_queued, 0.0
    flow.observe(queued=queued, now=now)
    while now < seconds:
        now += 0.05
        queued -= round(rate_per_second * 0.05)
        flow.observe(queued=queued, now=now)
        flow.sent(round(rate_per_second * 0.05))
        queued += round(rate_per_second * 0.05)
    return flow


def test_the_rate_follows_the_jobs_leaving_queued() -> None:
    assert drained(400, seconds=5).rate == pytest.approx(400, rel=0.02)
    assert drained(400, seconds=0.2).rate < 400  # smoothed: a blip does not count in full


def test_an_idle_queue_sends_each_job_alone_and_at_once() -> None:
    plan = QueueFlow().plan(queued=0, cap=1000)
    assert (plan.room, plan.per_message, plan.minimum) == (MIN_IN_FLIGHT, 1, 1)


def test_a_busy_queue_sends_whole_messages_sized_for_one_worker() -> None:
    flow = drained(1000, seconds=5)
    alone = flow.plan(queued=0, cap=10_000)
    assert alone.per_message == MAX_JOBS_PER_MESSAGE
    # A second of one worker's starts: the queue's 1,000 a second shared by 20 workers.
    shared = flow.plan(queued=0, cap=10_000, consumers=20)
    assert shared.per_message == round(1000 * MESSAGE_SECONDS / 20) == 50
    # Less than a message of room while the workers have a message to go on with: wait.
    in_flight = round(flow.rate / 2)  # half a second of starts
    assert flow.plan(queued=in_flight - 10, cap=10_000, consumers=20).room == 0
    waiting = flow.plan(queued=100, cap=10_000, consumers=20)
    assert waiting.minimum == 50 and waiting.room == (in_flight - 100) // 50 * 50


def test_the_cap_bounds_what_is_in_flight_and_shrinks_messages() -> None:
    flow = drained(1000, seconds=5)
    plan = flow.plan(queued=0, cap=10)
    assert plan.room == 10 and plan.per_message == 5
    assert flow.plan(queued=0, cap=0).room is None  # no flow control
