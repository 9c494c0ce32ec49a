"""The transport contract: the same tests for every transport: memory, and SQS on moto_server and
on LocalStack (the ``localstack`` marker).

They check what the scheduler and the worker rely on (``transports/base.py``): sending batches,
receiving with a wait, visibility, deleting, dead letters, queue discovery, and the errors.
Where the transports differ today, a test says what each one does rather than skipping one:
either the difference is allowed (the expectation is written per transport, with the reason),
or the contract should not allow it and that one case is ``xfail(strict=True)`` with the reason,
so that a fix turns it into a failure that asks for the mark to go.

Where the two SQS emulators differ from each other, the test says which does what and which one
AWS agrees with (docs/explanation/sqs-emulators.md lists these quirks).

Each test has fresh queues: a new memory transport, or a queue prefix of its own on the SQS
endpoint. Visibility timeouts are 1 s, so that what comes back after one is seen quickly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from django_asyncjobs.conf import DEAD_LETTER_SUFFIX, get_settings
from django_asyncjobs.exceptions import TransportError, TransportMisconfigured
from django_asyncjobs.transports.base import (
    MAX_BATCH_SIZE,
    OutgoingMessage,
    ReceivedMessage,
    Transport,
)
from django_asyncjobs.transports.memory import MemoryTransport
from django_asyncjobs.transports.sqs import SQSTransport
from django_asyncjobs.transports.sqs_errors import ENDPOINT_HINT, REGION_HINT
from tests.conftest import SQS_ENDPOINTS, use_sqs_endpoint

QUEUE = "default"
VISIBILITY_TIMEOUT_SECONDS = 1
#: Past the visibility timeout, with room for a slow machine.
AFTER_VISIBILITY_SECONDS = 1.5
#: LocalStack makes messages whose visibility timeout ended visible again in a sweep once a
#: second (``QueueUpdateWorker`` in localstack/services/sqs/provider.py), so up to 1 s late:
#: a 1 s timeout ended after 1.05 to 1.62 s in 8 tries, against 1.00 to 1.05 s on moto.
LOCALSTACK_VISIBILITY_SWEEP_SECONDS = 1.0
#: SQS moves a message to the dead-letter queue when it would be received a 4th time.
DEAD_LETTER_MAX_RECEIVES = 3


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """A transport under contract, and the handles only some transports offer."""

    name: str
    transport: Transport
    #: How long after receiving a message it is surely visible again (its timeout is 1 s).
    after_visibility_seconds: float
    #: Build another transport of this kind with these settings changed (``AsyncJobsSettings``
    #: field names). ``None``: the transport reads no setting (memory).
    variant: Callable[..., Transport] | None
    #: Make the service refuse the batch entries with these ids, as SQS does with a per-entry
    #: error (moto never does by itself). ``None``: the transport never refuses an entry.
    refusing: Callable[[set[str]], contextlib.AbstractContextManager[None]] | None


@pytest.fixture(params=[pytest.param("memory", id="memory"), *SQS_ENDPOINTS])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    """Each transport in turn, SQS on each endpoint, with empty queues of this test's own."""
    if request.param == "memory":
        memory = MemoryTransport(visibility_timeout_seconds=VISIBILITY_TIMEOUT_SECONDS)
        yield Subject(
            name="memory",
            transport=memory,
            after_visibility_seconds=AFTER_VISIBILITY_SECONDS,
            variant=None,
            refusing=None,
        )
        memory.purge()
        return
    use_sqs_endpoint(request, request.param)
    request.getfixturevalue("queue_prefix")  # this test's own SQS queues
    conf = dataclasses.replace(
        get_settings(),
        visibility_timeout_seconds=VISIBILITY_TIMEOUT_SECONDS,
        dead_letter_max_receives=DEAD_LETTER_MAX_RECEIVES,
    )
    built: list[SQSTransport] = []

    def variant(**changes: Any) -> SQSTransport:
        built.append(SQSTransport(dataclasses.replace(conf, **changes)))
        return built[-1]

    sqs = variant()
    try:
        yield Subject(
            name=request.param,
            transport=sqs,
            after_visibility_seconds=AFTER_VISIBILITY_SECONDS
            + (LOCALSTACK_VISIBILITY_SWEEP_SECONDS if request.param == "localstack" else 0),
            variant=variant,
            refusing=lambda ids: _sqs_refusing(sqs, ids),
        )
    finally:
        for transport in built:
            transport.close()


@contextlib.contextmanager
def _sqs_refusing(transport: SQSTransport, ids: set[str]) -> Iterator[None]:
    """Have SendMessageBatch refuse the entries *ids* the way SQS reports a per-entry failure.

    The entries are taken out of the request before it is sent and come back in the response's
    ``Failed`` list (botocore event hooks), so moto never stores them.
    """

    def leave_out(params: dict[str, Any], **kwargs: Any) -> None:
        params["Entries"] = [e for e in params["Entries"] if e["Id"] not in ids]

    def report(parsed: dict[str, Any], **kwargs: Any) -> None:
        parsed.setdefault("Failed", []).extend(
            {"Id": id_, "SenderFault": False, "Code": "InternalError", "Message": "injected"}
            for id_ in sorted(ids)
        )

    events = transport.client.meta.events
    events.register("before-parameter-build.sqs.SendMessageBatch", leave_out, "contract-leave")
    events.register("after-call.sqs.SendMessageBatch", report, "contract-report")
    try:
        yield
    finally:
        events.unregister("before-parameter-build.sqs.SendMessageBatch", unique_id="contract-leave")
        events.unregister("after-call.sqs.SendMessageBatch", unique_id="contract-report")


def messages(*ids: str) -> list[OutgoingMessage]:
    """Return a message for each id, whose body names the id."""
    return [OutgoingMessage(id=id_, body=f'{{"n":"{id_}"}}') for id_ in ids]


def receive_all(
    transport: Transport, queue: str, *, count: int, timeout: float = 5.0
) -> list[ReceivedMessage]:
    """Receive until *count* messages came (or *timeout* passed); return them all."""
    received: list[ReceivedMessage] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        received += transport.receive(queue, max_messages=MAX_BATCH_SIZE, wait_seconds=0)
    return received


def bodies(received: Sequence[ReceivedMessage]) -> list[str]:
    return sorted(m.body for m in received)


def bodies_of(batch: Sequence[OutgoingMessage]) -> list[str]:
    return sorted(m.body for m in batch)


def nothing_left(subject: Subject, *queues: str, transport: Transport | None = None) -> bool:
    """Return whether no message of *queues* is delivered once every visibility timeout passed.

    The queues are *subject*'s, or those of *transport*, a variant of it.
    """
    transport = transport or subject.transport
    time.sleep(subject.after_visibility_seconds)
    return all(
        transport.receive(q, max_messages=MAX_BATCH_SIZE, wait_seconds=0) == [] for q in queues
    )


def warm_up(transport: Transport) -> None:
    """Receive once from ``QUEUE``, so that creating it (or a client) takes no time of a wait."""
    assert transport.receive(QUEUE, max_messages=1, wait_seconds=0) == []


@contextlib.contextmanager
def sent_later(transport: Transport, body: str, *, after_seconds: float) -> Iterator[None]:
    """Send one message to ``QUEUE`` *after_seconds* into the block (from another thread)."""
    timer = threading.Timer(
        after_seconds, transport.send_batch, [QUEUE, [OutgoingMessage(id="late", body=body)]]
    )
    timer.start()
    try:
        yield
    finally:
        timer.join()


# -- sending ------------------------------------------------------------------------------------


def test_a_sent_message_is_received_once_with_its_body_queue_and_a_receipt(
    subject: Subject,
) -> None:
    body = '{"v":1,"note":"café ✓"}'  # bodies are text: UTF-8 comes back unchanged
    assert subject.transport.send_batch(QUEUE, [OutgoingMessage(id="1", body=body)]) == set()
    (received,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=1)
    assert (received.queue, received.body, received.receive_count) == (QUEUE, body, 1)
    assert isinstance(received.receipt, str) and received.receipt
    # Received means hidden from every other receiver until its visibility timeout.
    assert subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0) == []


def test_a_batch_of_ten_is_delivered_whole(subject: Subject) -> None:
    batch = messages(*(f"m{i}" for i in range(MAX_BATCH_SIZE)))
    assert subject.transport.send_batch(QUEUE, batch) == set()
    received = receive_all(subject.transport, QUEUE, count=MAX_BATCH_SIZE)
    assert bodies(received) == bodies_of(batch)


def test_an_empty_batch_sends_and_fails_nothing(subject: Subject) -> None:
    assert subject.transport.send_batch(QUEUE, []) == set()
    assert subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0) == []


def test_more_than_ten_messages_a_batch_is_a_value_error_that_sends_nothing(
    subject: Subject,
) -> None:
    with pytest.raises(ValueError, match="at most 10 messages a batch, not 11"):
        subject.transport.send_batch(QUEUE, messages(*(f"m{i}" for i in range(11))))
    assert subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0) == []


def test_a_batch_that_repeats_an_id_is_refused_whole(subject: Subject) -> None:
    batch = [OutgoingMessage(id="same", body="first"), OutgoingMessage(id="same", body="second")]
    with pytest.raises((ValueError, TransportError)):
        subject.transport.send_batch(QUEUE, batch)
    assert subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0) == []


def test_a_batch_entry_the_service_refuses_is_reported_and_the_others_delivered(
    subject: Subject, caplog: pytest.LogCaptureFixture
) -> None:
    batch = messages("ok-1", "refused", "ok-2")
    if subject.refusing is None:
        # Memory never refuses an entry (no throttling, no service errors): every entry is
        # delivered and none reported, so the scheduler's put-back of failed entries is only
        # exercised on SQS.
        assert subject.transport.send_batch(QUEUE, batch) == set()
        assert bodies(receive_all(subject.transport, QUEUE, count=3)) == bodies_of(batch)
        return
    with subject.refusing({"refused"}):
        assert subject.transport.send_batch(QUEUE, batch) == {"refused"}
    received = receive_all(subject.transport, QUEUE, count=2)
    assert bodies(received) == bodies_of([batch[0], batch[2]])
    assert "SQS refused a message queue=default id=refused code=InternalError" in caplog.text


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param([OutgoingMessage(id="not allowed", body="x")], id="id-with-a-space"),
        pytest.param([OutgoingMessage(id="i" * 81, body="x")], id="id-of-81-characters"),
        pytest.param([OutgoingMessage(id="big", body="x" * (1024 * 1024 + 1))], id="over-1-MiB"),
    ],
)
def test_a_batch_beyond_the_services_limits(subject: Subject, batch: list[OutgoingMessage]) -> None:
    if subject.name == "memory":
        # Memory has no limits on ids or sizes; the scheduler's batches never come near them
        # (ids "0" to "9", doorbells under 100 bytes: payload.MAX_MESSAGE_BODY_BYTES).
        assert subject.transport.send_batch(QUEUE, batch) == set()
        assert bodies(receive_all(subject.transport, QUEUE, count=1)) == bodies_of(batch)
        return
    # SQS refuses the whole request (InvalidBatchEntryId, BatchRequestTooLong).
    with pytest.raises(TransportError, match="SQS SendMessageBatch on queue 'default' failed"):
        subject.transport.send_batch(QUEUE, batch)
    assert subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0) == []


# -- receiving ----------------------------------------------------------------------------------


def test_receive_returns_at_most_max_messages_and_never_more_than_ten(subject: Subject) -> None:
    subject.transport.send_batch(QUEUE, messages(*(f"a{i}" for i in range(10))))
    subject.transport.send_batch(QUEUE, messages(*(f"b{i}" for i in range(5))))
    two = subject.transport.receive(QUEUE, max_messages=2, wait_seconds=0)
    assert 1 <= len(two) <= 2
    many = subject.transport.receive(QUEUE, max_messages=50, wait_seconds=0)
    assert 1 <= len(many) <= MAX_BATCH_SIZE
    rest = receive_all(subject.transport, QUEUE, count=15 - len(two) - len(many))
    assert len({m.body for m in [*two, *many, *rest]}) == 15


def test_receive_of_zero_messages_returns_none_and_hides_none(subject: Subject) -> None:
    subject.transport.send_batch(QUEUE, messages("kept"))
    assert subject.transport.receive(QUEUE, max_messages=0, wait_seconds=0) == []
    assert len(subject.transport.receive(QUEUE, max_messages=1, wait_seconds=0)) == 1


def test_an_empty_queue_is_waited_on_for_wait_seconds(subject: Subject) -> None:
    warm_up(subject.transport)
    started = time.monotonic()
    assert subject.transport.receive(QUEUE, max_messages=10, wait_seconds=1) == []
    assert 0.9 <= time.monotonic() - started < 5


def test_a_message_sent_during_the_wait_is_returned_without_waiting_it_out(
    subject: Subject,
) -> None:
    warm_up(subject.transport)
    started = time.monotonic()
    with sent_later(subject.transport, "late", after_seconds=0.3):
        received = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=5)
    assert bodies(received) == ["late"]
    assert time.monotonic() - started < 4


def test_a_wait_of_less_than_a_second_still_waits(subject: Subject) -> None:
    warm_up(subject.transport)
    with sent_later(subject.transport, "late", after_seconds=0.3):
        received = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0.9)
    assert bodies(received) == ["late"]


# -- visibility ---------------------------------------------------------------------------------


def test_a_message_not_deleted_comes_back_after_its_visibility_timeout(subject: Subject) -> None:
    subject.transport.send_batch(QUEUE, messages("again"))
    (first,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    time.sleep(subject.after_visibility_seconds)
    (second,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    assert second.body == first.body
    assert (first.receive_count, second.receive_count) == (1, 2)
    assert second.receipt != first.receipt


def test_a_visibility_of_zero_hands_the_message_back_at_once(subject: Subject) -> None:
    subject.transport.send_batch(QUEUE, messages("released"))
    (first,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    subject.transport.change_visibility(first, timeout_seconds=0)
    (second,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    assert second.body == first.body and second.receive_count == 2


def test_a_longer_visibility_keeps_the_message_hidden_until_it_ends(subject: Subject) -> None:
    subject.transport.send_batch(QUEUE, messages("extended"))
    (first,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    subject.transport.change_visibility(first, timeout_seconds=3)
    extended_at = time.monotonic()
    time.sleep(subject.after_visibility_seconds)  # the queue's own timeout (1 s) is over
    assert subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0) == []
    back = receive_all(subject.transport, QUEUE, count=1)
    assert bodies(back) == [first.body] and time.monotonic() - extended_at >= 2.9


# -- deleting -----------------------------------------------------------------------------------


def test_a_deleted_message_is_never_delivered_again(subject: Subject) -> None:
    subject.transport.send_batch(QUEUE, messages("done"))
    received = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    subject.transport.delete(received)
    assert nothing_left(subject, QUEUE)


def test_one_delete_takes_messages_of_several_queues_more_than_ten_of_them(
    subject: Subject,
) -> None:
    subject.transport.send_batch(QUEUE, messages(*(f"d{i}" for i in range(10))))
    subject.transport.send_batch(QUEUE, messages("d10", "d11"))
    subject.transport.send_batch("low", messages("l0", "l1", "l2"))
    received = receive_all(subject.transport, QUEUE, count=12)
    received += receive_all(subject.transport, "low", count=3)
    assert len(received) == 15
    subject.transport.delete(received)
    assert nothing_left(subject, QUEUE, "low")


def test_deleting_twice_or_with_an_old_receipt_raises_nothing(subject: Subject) -> None:
    subject.transport.send_batch(QUEUE, messages("twice"))
    (old,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    subject.transport.change_visibility(old, timeout_seconds=0)
    (current,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    # An old receipt may delete the message or not (SQS: "might not be deleted"; memory keeps
    # it, moto and LocalStack delete it); the current one does, and a second delete is harmless.
    subject.transport.delete([old])
    subject.transport.delete([current])
    subject.transport.delete([current])
    assert nothing_left(subject, QUEUE)


def test_changing_the_visibility_of_a_deleted_message_never_brings_it_back(
    subject: Subject,
) -> None:
    subject.transport.send_batch(QUEUE, messages("gone"))
    (received,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    subject.transport.delete([received])
    if subject.name == "memory":
        # The receipt names no message any more: nothing to change, and nothing is said.
        subject.transport.change_visibility(received, timeout_seconds=0)
    else:
        # SQS refuses the receipt; the worker logs the TransportError and goes on. AWS and
        # LocalStack say InvalidParameterValue, moto says ReceiptHandleIsInvalid.
        refusal = (
            r"ReceiptHandleIsInvalid|InvalidParameterValue.*"
            r"Message does not exist or is not available for visibility timeout change"
        )
        with pytest.raises(TransportError, match=refusal):
            subject.transport.change_visibility(received, timeout_seconds=0)
    assert nothing_left(subject, QUEUE)


# -- dead letters -------------------------------------------------------------------------------


def test_a_quarantined_message_moves_to_its_dead_letter_queue(subject: Subject) -> None:
    subject.transport.send_batch(QUEUE, [OutgoingMessage(id="1", body="not a doorbell")])
    (received,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    assert subject.transport.quarantine(received) is True
    assert nothing_left(subject, QUEUE)
    dead = subject.transport.receive(
        f"{QUEUE}{DEAD_LETTER_SUFFIX}", max_messages=10, wait_seconds=0
    )
    assert bodies(dead) == ["not a doorbell"]


def test_a_quarantined_message_without_a_dead_letter_queue_is_deleted(subject: Subject) -> None:
    if subject.variant is None:
        # Memory gives every queue a dead-letter queue: the message is kept there.
        transport = subject.transport
        kept = True
    else:
        transport = subject.variant(dead_letter_max_receives=0)  # queues made without one
        kept = False
    transport.send_batch("plain", [OutgoingMessage(id="1", body="not a doorbell")])
    (received,) = transport.receive("plain", max_messages=10, wait_seconds=0)
    assert transport.quarantine(received) is kept
    assert nothing_left(subject, "plain", transport=transport)


def test_a_message_received_too_often_moves_to_the_dead_letter_queue(subject: Subject) -> None:
    subject.transport.send_batch(QUEUE, messages("poison"))
    for receives in range(1, DEAD_LETTER_MAX_RECEIVES + 1):
        (received,) = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
        assert received.receive_count == receives
        subject.transport.change_visibility(received, timeout_seconds=0)
    again = subject.transport.receive(QUEUE, max_messages=10, wait_seconds=0)
    dead = subject.transport.receive(
        f"{QUEUE}{DEAD_LETTER_SUFFIX}", max_messages=10, wait_seconds=0
    )
    if subject.name == "memory":
        # DEAD_LETTER_MAX_RECEIVES is an attribute of the SQS queues the app creates; memory
        # delivers for ever (the worker's count of refused deliveries on the row ends a loop).
        assert [m.receive_count for m in again] == [DEAD_LETTER_MAX_RECEIVES + 1]
        assert dead == []
    else:
        assert again == []
        assert bodies(dead) == bodies_of(messages("poison"))


# -- queues -------------------------------------------------------------------------------------


def test_list_queues_names_the_job_queues_without_prefix_or_dead_letter_queues(
    subject: Subject,
) -> None:
    subject.transport.ensure_queue("reports-b")
    subject.transport.send_batch("reports-a", messages("1"))
    (received,) = subject.transport.receive("reports-a", max_messages=10, wait_seconds=1)
    subject.transport.quarantine(received)  # the dead-letter queue exists now, on both
    subject.transport.ensure_queue("reports-b")  # again: nothing changes
    assert subject.transport.list_queues() == ["reports-a", "reports-b"]


def test_verifying_a_queue_creates_nothing_and_a_missing_queue_is_no_error(
    subject: Subject,
) -> None:
    subject.transport.ensure_queue("there")
    subject.transport.verify("there")
    subject.transport.verify("absent")
    assert subject.transport.list_queues() == ["there"]


def test_counting_a_queue_that_does_not_exist_says_so_and_creates_nothing(
    subject: Subject,
) -> None:
    # The admin's overview and `asyncjobs stats` count every queue that has jobs: a read that
    # created queues (and dead-letter queues) on SQS would be a page with side effects.
    counts = subject.transport.queue_counts("absent")
    assert (counts.exists, counts.visible, counts.in_flight) == (False, 0, 0)
    assert subject.transport.list_queues() == []
    subject.transport.send_batch("present", messages("1"))
    counts = subject.transport.queue_counts("present")
    assert counts.exists and counts.visible + counts.in_flight == 1
    assert subject.transport.list_queues() == ["present"]


def test_describe_says_what_the_transport_is_and_where_it_sends(subject: Subject) -> None:
    description = subject.transport.describe()
    if subject.variant is None:
        assert description == "memory (one process)"
        return
    endpoint = subject.transport.client.meta.endpoint_url  # type: ignore[attr-defined]
    assert description == f"sqs {endpoint} (prefix {get_settings().queue_prefix})"


def test_ensuring_a_queue_that_exists_keeps_its_messages(subject: Subject) -> None:
    subject.transport.send_batch(QUEUE, messages("kept"))
    subject.transport.ensure_queue(QUEUE)
    assert bodies(receive_all(subject.transport, QUEUE, count=1)) == bodies_of(messages("kept"))


# -- errors -------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connections are refused


SOMEBODY = ReceivedMessage(queue=QUEUE, body="x", receipt="r")
CALLS: dict[str, Callable[[Transport], object]] = {
    "send_batch": lambda t: t.send_batch(QUEUE, messages("1")),
    "receive": lambda t: t.receive(QUEUE, max_messages=1, wait_seconds=0),
    "delete": lambda t: t.delete([SOMEBODY]),
    "change_visibility": lambda t: t.change_visibility(SOMEBODY, timeout_seconds=0),
    "list_queues": lambda t: t.list_queues(),
    "quarantine": lambda t: t.quarantine(SOMEBODY),
    "ensure_queue": lambda t: t.ensure_queue(QUEUE),
    "verify": lambda t: t.verify(QUEUE),
    "queue_counts": lambda t: t.queue_counts(QUEUE),
}


@pytest.mark.parametrize("method", CALLS)
def test_every_method_of_an_unreachable_transport_raises_transport_error(
    subject: Subject, method: str
) -> None:
    call = CALLS[method]
    if subject.variant is None:
        # Memory lives in this process and cannot be unreachable: the call succeeds.
        call(subject.transport)
        return
    unreachable = subject.variant(endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(TransportError, match="Could not connect to the endpoint URL") as raised:
        call(unreachable)
    # An outage, which may pass: the loops retry it, and the commands start despite it.
    assert not isinstance(raised.value, TransportMisconfigured)


MISTAKES = {
    "an endpoint that is not a URL": ({"endpoint_url": "localhost:4566"}, ENDPOINT_HINT),
    "a region that is no region": ({"region_name": "eu west 1"}, REGION_HINT),
}


@pytest.mark.parametrize("mistake", MISTAKES)
@pytest.mark.parametrize("method", CALLS)
def test_every_method_of_a_transport_configured_wrong_raises_misconfigured_with_the_fix(
    subject: Subject, method: str, mistake: str
) -> None:
    call = CALLS[method]
    if subject.variant is None:
        # Memory reads no setting: nothing to get wrong.
        call(subject.transport)
        return
    changes, hint = MISTAKES[mistake]
    with pytest.raises(TransportMisconfigured) as raised:
        call(subject.variant(**changes))
    assert raised.value.hint == hint
    assert str(raised.value).endswith(f"({hint})")


def test_a_missing_queue_is_an_error_naming_the_fix_when_queues_are_not_created(
    subject: Subject,
) -> None:
    if subject.variant is None:
        # Memory creates every queue on first use (it has no CREATE_MISSING_QUEUES).
        assert subject.transport.send_batch("absent", messages("1")) == set()
        return
    strict = subject.variant(create_missing_queues=False)
    fix = r"SQS queue '.*absent' does not exist; create it \(manage.py asyncjobs create-queues\)"
    with pytest.raises(TransportError, match=fix):
        strict.send_batch("absent", messages("1"))
    with pytest.raises(TransportError, match=fix):
        strict.receive("absent", max_messages=1, wait_seconds=0)
    assert "absent" not in strict.list_queues()
