"""The one retry decision, retry.decide(): what becomes of a job whose attempt did not succeed,
read from its row. Pure: no database.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_asyncjobs.retry import Action, Backoff, Basis, Ending, decide


def row(
    *,
    attempts: int = 1,
    max_retries: int = 3,
    at_most_once: bool = False,
    interruptions: int = 0,
    cancel_requested: bool = False,
) -> Basis:
    return Basis(
        attempts=attempts,
        max_retries=max_retries,
        at_most_once=at_most_once,
        interruptions=interruptions,
        cancel_requested=cancel_requested,
    )


@pytest.mark.parametrize(
    ("values", "ending", "action", "refund"),
    [
        # An exception is an outcome: the retry budget decides, at_most_once does not.
        ({}, Ending.FAILED, Action.RETRY, False),
        ({"at_most_once": True}, Ending.FAILED, Action.RETRY, False),
        ({"attempts": 4}, Ending.FAILED, Action.FAIL, False),
        # A lost worker: an at_most_once row fails with retries left.
        ({}, Ending.LOST, Action.RETRY, False),
        ({"at_most_once": True}, Ending.LOST, Action.FAIL, False),
        ({"attempts": 4}, Ending.LOST, Action.FAIL, False),
        # A hand-back: free interruptions give the attempt back, later ones count it.
        ({"attempts": 4, "interruptions": 2}, Ending.INTERRUPTED, Action.HAND_BACK, True),
        ({"attempts": 3, "interruptions": 3}, Ending.INTERRUPTED, Action.HAND_BACK, False),
        ({"attempts": 4, "interruptions": 3}, Ending.INTERRUPTED, Action.FAIL, False),
        ({"at_most_once": True}, Ending.INTERRUPTED, Action.FAIL, True),
    ],
)
def test_the_decision_reads_the_row(
    values: dict[str, Any], ending: Ending, action: Action, refund: bool
) -> None:
    decision = decide(row(**values), ending=ending, backoff=Backoff.fixed(5), free_interruptions=3)
    assert decision.action is action
    assert decision.refund_attempt is refund
    assert decision.retry_in_seconds == (5 if action is Action.RETRY else 0)
    assert decision.basis == row(**values)


@pytest.mark.parametrize("ending", list(Ending))
@pytest.mark.parametrize(
    "values", [{}, {"at_most_once": True}, {"attempts": 4}, {"interruptions": 1}]
)
def test_a_cancel_request_wins_over_every_retry_and_hand_back(
    ending: Ending, values: dict[str, Any]
) -> None:
    decision = decide(
        row(cancel_requested=True, **values),
        ending=ending,
        backoff=Backoff.fixed(5),
        free_interruptions=3,
    )
    assert decision.action is Action.CANCEL
    assert (decision.retry_in_seconds, decision.refund_attempt) == (0, False)
    assert decision.basis.cancel_requested


def test_a_fixed_backoff_waits_the_same_before_every_retry() -> None:
    assert [Backoff.fixed(0.5).delay_seconds(n) for n in (1, 2, 10)] == [0.5, 0.5, 0.5]
