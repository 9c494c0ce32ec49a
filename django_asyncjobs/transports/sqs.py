"""The AWS SQS transport (boto3).

boto3's own configuration applies: credentials chain, ``AWS_DEFAULT_REGION``, and
``AWS_ENDPOINT_URL_SQS`` / ``AWS_ENDPOINT_URL`` for a local endpoint such as moto_server,
LocalStack or ElasticMQ. ``ASYNCJOBS["REGION_NAME"]`` and ``["ENDPOINT_URL"]`` override them.
A mistake in that configuration raises :class:`~django_asyncjobs.exceptions.TransportMisconfigured`
(see ``sqs_errors.py``); every other failure a plain ``TransportError``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .. import metrics
from ..conf import DEAD_LETTER_SUFFIX, AsyncJobsSettings
from ..exceptions import TransportError, TransportMisconfigured
from .base import MAX_BATCH_SIZE, DeadLetter, OutgoingMessage, QueueCounts, ReceivedMessage
from .sqs_errors import misconfiguration_hint

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

logger = logging.getLogger(__name__)

_MISSING_QUEUE_CODES = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


def _queue_missing(exc: ClientError) -> bool:
    """Return whether SQS refused a call because the queue does not exist."""
    return exc.response.get("Error", {}).get("Code", "") in _MISSING_QUEUE_CODES


#: A read must outlive the long poll, or every idle poll would end in a timeout error.
_READ_TIMEOUT_MARGIN_SECONDS = 10
_CONNECT_TIMEOUT_SECONDS = 5
#: Sends and deletes answer in milliseconds; a stalled endpoint must fail fast, not hang.
_SHORT_READ_TIMEOUT_SECONDS = 5
_TOTAL_ATTEMPTS = 3
#: Dead-lettered messages are kept as long as SQS allows, for an operator to look at.
#: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
SQS_MAX_RETENTION_SECONDS = 14 * 24 * 60 * 60


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SQSTransport:
    """Send, receive and delete doorbell messages on SQS queues named ``QUEUE_PREFIX + queue``.

    The client is thread-safe and built on first use. Queue URLs are looked up once and cached;
    a missing queue is created when ``CREATE_MISSING_QUEUES`` is on.

    Example::

        transport = SQSTransport(get_settings())
        failed = transport.send_batch("default", [OutgoingMessage(id="1", body="...")])
        # failed == set() when SQS accepted every message
    """

    #: SQS reports approximate counts, and its dead-letter queues can be read and redriven.
    can_inspect_queues = True
    short_poll_is_complete = False
    #: Its name in OpenTelemetry's messaging conventions (see tracing.py).
    messaging_system = "aws_sqs"

    def __init__(self, conf: AsyncJobsSettings) -> None:
        self.conf = conf
        self._client: SQSClient | None = None
        self._receive_client: SQSClient | None = None
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def _build_client(self, read_timeout_seconds: int) -> SQSClient:
        config = Config(
            # "total_max_attempts" counts the first try; "max_attempts" would count retries.
            retries={"mode": "standard", "total_max_attempts": _TOTAL_ATTEMPTS},
            connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            read_timeout=read_timeout_seconds,
            max_pool_connections=50,
        )
        try:
            # A session per transport: boto3's default session is not thread-safe.
            session = boto3.session.Session()
            client = session.client(
                "sqs",
                region_name=self.conf.region_name,
                endpoint_url=self.conf.endpoint_url,
                config=config,
            )
        except (BotoCoreError, ValueError) as exc:
            # Not a BotoCoreError any more: the callers' handlers, which name an operation and
            # a queue, must let this one through.
            hint = misconfiguration_hint(exc, operation="")
            message = f"cannot create the SQS client: {exc}"
            if hint is None:
                raise TransportError(message) from exc
            raise TransportMisconfigured(message, hint=hint) from exc
        metrics.instrument_sqs_client(client)
        return client

    @property
    def client(self) -> SQSClient:
        """The boto3 SQS client for short calls (send, delete, visibility, queue URLs)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build_client(_SHORT_READ_TIMEOUT_SECONDS)
        return self._client

    @property
    def receive_client(self) -> SQSClient:
        """The client for ReceiveMessage, whose read must outlive the long poll."""
        if self._receive_client is None:
            with self._lock:
                if self._receive_client is None:
                    self._receive_client = self._build_client(
                        self.conf.wait_time_seconds + _READ_TIMEOUT_MARGIN_SECONDS
                    )
        return self._receive_client

    def _error(self, operation: str, queue: str, exc: Exception) -> TransportError:
        message = f"SQS {operation} on queue {queue!r} failed: {exc}"
        hint = misconfiguration_hint(exc, operation=operation)
        if hint is None:
            return TransportError(message)
        return TransportMisconfigured(message, hint=hint)

    def describe(self) -> str:
        """Return ``sqs <endpoint URL> (prefix <QUEUE_PREFIX>)``, for start-up lines.

        Raises :class:`~django_asyncjobs.exceptions.TransportMisconfigured` when no client can
        be built (no region, an endpoint that is not a URL).
        """
        return f"sqs {self.client.meta.endpoint_url} (prefix {self.conf.queue_prefix})"

    def verify(self, queue: str) -> None:
        """Look *queue* up (GetQueueUrl, which every role needs), creating nothing.

        Raises :class:`~django_asyncjobs.exceptions.TransportMisconfigured` for a configuration
        mistake (region, credentials, permissions, endpoint) and
        :class:`~django_asyncjobs.exceptions.TransportError` when SQS cannot be reached. A
        queue that does not exist is no error: it is created on first use, or by an operator.
        """
        url = self._lookup_url(self.conf.sqs_queue_name(queue))
        if url is not None:
            self._urls[queue] = url

    def queue_url(self, queue: str) -> str:
        """Return the URL of job queue *queue*, creating the SQS queue if allowed and missing."""
        url = self._existing_url(queue)
        if url is not None:
            return url
        name = self.conf.sqs_queue_name(queue)
        if not self.conf.create_missing_queues:
            raise TransportError(
                f"SQS queue {name!r} does not exist; create it (manage.py asyncjobs "
                f"create-queues) or set ASYNCJOBS['CREATE_MISSING_QUEUES'] = True"
            )
        url = self._urls[queue] = self._create(name)
        return url

    def _existing_url(self, queue: str) -> str | None:
        """Return the URL of job queue *queue*, or ``None`` if SQS has no such queue."""
        url = self._urls.get(queue)
        if url is None:
            url = self._lookup_url(self.conf.sqs_queue_name(queue))
            if url is not None:
                self._urls[queue] = url
        return url

    def _lookup_url(self, name: str) -> str | None:
        """Return the URL of SQS queue *name* (GetQueueUrl), or ``None`` if it does not exist."""
        try:
            return self.client.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if _queue_missing(exc):
                return None
            raise self._error("GetQueueUrl", name, exc) from exc
        except BotoCoreError as exc:
            raise self._error("GetQueueUrl", name, exc) from exc

    def _create(self, name: str) -> str:
        attributes: dict[QueueAttributeNameType, str] = {
            "VisibilityTimeout": str(self.conf.visibility_timeout_seconds)
        }
        try:
            if self.conf.dead_letter_max_receives:
                dead_letter_url = self.client.create_queue(
                    QueueName=f"{name}{DEAD_LETTER_SUFFIX}",
                    Attributes={"MessageRetentionPeriod": str(SQS_MAX_RETENTION_SECONDS)},
                )["QueueUrl"]
                arn = self.client.get_queue_attributes(
                    QueueUrl=dead_letter_url, AttributeNames=["QueueArn"]
                )["Attributes"]["QueueArn"]
                attributes["RedrivePolicy"] = json.dumps(
                    {
                        "deadLetterTargetArn": arn,
                        "maxReceiveCount": str(self.conf.dead_letter_max_receives),
                    }
                )
            response = self.client.create_queue(QueueName=name, Attributes=attributes)
        except (BotoCoreError, ClientError) as exc:
            raise self._error("CreateQueue", name, exc) from exc
        logger.info(
            "created SQS queue name=%s dead_letter_after=%s",
            name,
            self.conf.dead_letter_max_receives or "never",
        )
        return response["QueueUrl"]

    def _dead_letter_url(self, queue: str) -> str | None:
        return self._lookup_url(self.conf.sqs_dead_letter_queue_name(queue))

    def queue_counts(self, queue: str) -> QueueCounts:
        """Return SQS's approximate counts of visible and in-flight messages of *queue*.

        A queue that does not exist is reported as such (``exists=False``), not created: the
        admin's overview and ``asyncjobs status`` only look.
        """
        url = self._existing_url(queue)
        if url is None:
            return QueueCounts(visible=0, in_flight=0, exists=False)
        try:
            attributes = self.client.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
        except ClientError as exc:
            if _queue_missing(exc):
                self._urls.pop(queue, None)  # deleted since it was looked up
                return QueueCounts(visible=0, in_flight=0, exists=False)
            raise self._error("GetQueueAttributes", queue, exc) from exc
        except BotoCoreError as exc:
            raise self._error("GetQueueAttributes", queue, exc) from exc
        return QueueCounts(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )

    def list_queues(self) -> list[str]:
        """Return the job queues under ``QUEUE_PREFIX`` (dead-letter queues left out)."""
        prefix = self.conf.queue_prefix
        names: list[str] = []
        kwargs: dict[str, Any] = {"QueueNamePrefix": prefix, "MaxResults": 1000}
        try:
            while True:
                response = self.client.list_queues(**kwargs)
                for url in response.get("QueueUrls", []):
                    name = url.rsplit("/", 1)[-1]
                    if name.startswith(prefix) and not name.endswith(DEAD_LETTER_SUFFIX):
                        names.append(name[len(prefix) :])
                token = response.get("NextToken")
                if not token:
                    return sorted(names)
                kwargs["NextToken"] = token
        except (BotoCoreError, ClientError) as exc:
            raise self._error("ListQueues", f"{prefix}*", exc) from exc

    def quarantine(self, message: ReceivedMessage) -> bool:
        """Move a message that is not ours to its queue's dead-letter queue, at once.

        Returns ``False`` (and deletes the message) when the queue has no dead-letter queue:
        a body that can never be processed must not come back forever.
        """
        url = self._dead_letter_url(message.queue)
        if url is not None:
            try:
                self.client.send_message(QueueUrl=url, MessageBody=message.body or " ")
            except (BotoCoreError, ClientError) as exc:
                raise self._error("SendMessage", f"{message.queue} dead letters", exc) from exc
        self.delete([message])
        return url is not None

    def dead_letters(self, queue: str, *, limit: int = 10) -> tuple[int, list[DeadLetter]]:
        """Return the approximate count of *queue*'s dead letters and up to *limit* of them.

        The messages are peeked at (received with a zero visibility timeout), not removed.
        """
        url = self._dead_letter_url(queue)
        if url is None:
            return 0, []
        try:
            count = int(
                self.client.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]["ApproximateNumberOfMessages"]
            )
            seen: dict[str, DeadLetter] = {}
            for _ in range(3):  # SQS samples its servers; a few short polls see more of them
                if len(seen) >= min(limit, count):
                    break
                response = self.client.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=MAX_BATCH_SIZE,
                    VisibilityTimeout=0,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
                for m in response.get("Messages", []):
                    seen.setdefault(
                        m["MessageId"],
                        DeadLetter(
                            queue=queue,
                            message_id=m["MessageId"],
                            body=m.get("Body", ""),
                            receive_count=int(
                                m.get("Attributes", {}).get("ApproximateReceiveCount", 1)
                            ),
                        ),
                    )
        except (BotoCoreError, ClientError) as exc:
            raise self._error("ReceiveMessage", f"{queue} dead letters", exc) from exc
        return count, list(seen.values())[:limit]

    def redrive(self, queue: str, *, limit: int | None = None) -> int:
        """Move dead-lettered messages back to *queue*; return how many were moved.

        A doorbell whose job was sent again meanwhile carries a stale token and claims
        nothing, so redriving is always safe.
        """
        url = self._dead_letter_url(queue)
        if url is None:
            return 0
        target = self.queue_url(queue)
        moved = 0
        try:
            while limit is None or moved < limit:
                wanted = MAX_BATCH_SIZE if limit is None else min(MAX_BATCH_SIZE, limit - moved)
                messages = self.client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=wanted, VisibilityTimeout=60
                ).get("Messages", [])
                if not messages:
                    break
                response = self.client.send_message_batch(
                    QueueUrl=target,
                    Entries=[
                        {"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(messages)
                    ],
                )
                # Only what SQS took leaves the dead-letter queue: a refused entry deleted here
                # would be a message lost. The rest becomes visible there again.
                sent = {entry["Id"] for entry in response.get("Successful", [])}
                if sent:
                    self.client.delete_message_batch(
                        QueueUrl=url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                            for i, m in enumerate(messages)
                            if str(i) in sent
                        ],
                    )
                moved += len(sent)
                refused = response.get("Failed", [])
                if refused or len(sent) < len(messages):
                    reason = (
                        f"{refused[0]['Code']}: {refused[0].get('Message', '')}"
                        if refused
                        else "no reason given"
                    )
                    raise TransportError(
                        f"SQS SendMessageBatch on queue {queue!r} refused "
                        f"{len(messages) - len(sent)} of {len(messages)} dead-lettered "
                        f"message(s) ({reason}); {moved} moved back, the rest stay in "
                        "the dead-letter queue"
                    )
        except (BotoCoreError, ClientError) as exc:
            raise self._error("redrive", queue, exc) from exc
        return moved

    def ensure_queue(self, queue: str) -> str:
        """Create the SQS queue of *queue* if it does not exist; return its URL.

        Only a missing queue is created: a lookup SQS refuses (permissions, credentials) raises
        as :meth:`verify` does.
        """
        self._urls.pop(queue, None)
        name = self.conf.sqs_queue_name(queue)
        url = self._lookup_url(name)
        self._urls[queue] = url if url is not None else self._create(name)
        return self._urls[queue]

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> set[str]:
        """Send *messages* with SendMessageBatch; return the ids SQS did not accept."""
        if not messages:
            return set()
        if len(messages) > MAX_BATCH_SIZE:
            raise ValueError(f"at most {MAX_BATCH_SIZE} messages a batch, not {len(messages)}")
        url = self.queue_url(queue)
        try:
            response = self.client.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": m.id, "MessageBody": m.body} for m in messages],
            )
        except ClientError as exc:
            if _queue_missing(exc):
                self._urls.pop(queue, None)  # deleted under us: look it up again next time
            raise self._error("SendMessageBatch", queue, exc) from exc
        except BotoCoreError as exc:
            raise self._error("SendMessageBatch", queue, exc) from exc
        failed = response.get("Failed", [])
        for entry in failed:
            logger.warning(
                "SQS refused a message queue=%s id=%s code=%s reason=%s",
                queue,
                entry.get("Id"),
                entry.get("Code"),
                entry.get("Message"),
            )
        return {entry["Id"] for entry in failed}

    def receive(
        self, queue: str, *, max_messages: int, wait_seconds: float
    ) -> list[ReceivedMessage]:
        """Long-poll *queue* for up to *max_messages* (at most 10) messages.

        Asking for none receives none: SQS's smallest request is one message, which would be
        hidden for the visibility timeout although nobody asked for it. SQS waits in whole
        seconds, so a wait of a fraction of a second is rounded up, never down to no wait.
        """
        if max_messages <= 0:
            return []
        url = self.queue_url(queue)
        try:
            response = self.receive_client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(MAX_BATCH_SIZE, max_messages),
                WaitTimeSeconds=max(0, min(20, math.ceil(wait_seconds))),
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except ClientError as exc:
            if _queue_missing(exc):
                self._urls.pop(queue, None)
            raise self._error("ReceiveMessage", queue, exc) from exc
        except BotoCoreError as exc:
            raise self._error("ReceiveMessage", queue, exc) from exc
        return [
            ReceivedMessage(
                queue=queue,
                body=m.get("Body", ""),
                receipt=m["ReceiptHandle"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for m in response.get("Messages", [])
        ]

    def delete(self, messages: Sequence[ReceivedMessage]) -> None:
        """Delete *messages* with DeleteMessageBatch, ten at a time per queue."""
        by_queue: dict[str, list[ReceivedMessage]] = defaultdict(list)
        for message in messages:
            by_queue[message.queue].append(message)
        for queue, queued in by_queue.items():
            url = self.queue_url(queue)
            for chunk in _chunks(queued, MAX_BATCH_SIZE):
                try:
                    response = self.client.delete_message_batch(
                        QueueUrl=url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)
                        ],
                    )
                except (BotoCoreError, ClientError) as exc:
                    raise self._error("DeleteMessageBatch", queue, exc) from exc
                for entry in response.get("Failed", []):
                    logger.warning(
                        "SQS did not delete a message queue=%s code=%s reason=%s",
                        queue,
                        entry.get("Code"),
                        entry.get("Message"),
                    )

    def change_visibility(self, message: ReceivedMessage, *, timeout_seconds: int) -> None:
        """Set how long *message* stays hidden from now on (0 releases it)."""
        url = self.queue_url(message.queue)
        try:
            self.client.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message.receipt, VisibilityTimeout=timeout_seconds
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._error("ChangeMessageVisibility", message.queue, exc) from exc

    def close(self) -> None:
        """Close the client's connection pool."""
        for client in (self._client, self._receive_client):
            if client is not None:
                client.close()
        self._client = self._receive_client = None
