"""A redrive moves back only what SQS took: a refused dead letter stays where it was.

SQS (and moto) refuse single entries of a SendMessageBatch in ways a test server cannot be
made to (throttling, internal errors), so botocore's Stubber answers here; the happy path
through a real moto_server is tests/integration/test_commands.py.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from django_asyncjobs.conf import AsyncJobsSettings
from django_asyncjobs.exceptions import TransportError
from django_asyncjobs.transports.sqs import SQSTransport

DLQ = "https://sqs.us-east-1.amazonaws.com/1/p-default-dlq"
TARGET = "https://sqs.us-east-1.amazonaws.com/1/p-default"


def test_a_dead_letter_sqs_refuses_to_take_back_is_not_deleted() -> None:
    transport = SQSTransport(AsyncJobsSettings(queue_prefix="p-"))
    client = boto3.client(
        "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    transport._client = client
    transport._urls["default"] = TARGET
    bodies = ["a", "b", "c"]
    with Stubber(client) as stub:
        stub.add_response("get_queue_url", {"QueueUrl": DLQ}, {"QueueName": "p-default-dlq"})
        stub.add_response(
            "receive_message",
            {
                "Messages": [
                    {"MessageId": f"m{i}", "ReceiptHandle": f"r{i}", "Body": body}
                    for i, body in enumerate(bodies)
                ]
            },
            {"QueueUrl": DLQ, "MaxNumberOfMessages": 10, "VisibilityTimeout": 60},
        )
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [
                    {"Id": "0", "MessageId": "n0", "MD5OfMessageBody": "x"},
                    {"Id": "2", "MessageId": "n2", "MD5OfMessageBody": "x"},
                ],
                "Failed": [
                    {"Id": "1", "SenderFault": False, "Code": "InternalError", "Message": "oops"}
                ],
            },
            {
                "QueueUrl": TARGET,
                "Entries": [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)],
            },
        )
        # Only the two SQS took leave the dead-letter queue.
        stub.add_response(
            "delete_message_batch",
            {"Successful": [{"Id": "0"}, {"Id": "2"}], "Failed": []},
            {
                "QueueUrl": DLQ,
                "Entries": [{"Id": "0", "ReceiptHandle": "r0"}, {"Id": "2", "ReceiptHandle": "r2"}],
            },
        )
        with pytest.raises(TransportError) as raised:
            transport.redrive("default")
        stub.assert_no_pending_responses()
    message = str(raised.value)
    assert "refused 1 of 3" in message and "InternalError: oops" in message
    assert "2 moved back, the rest stay in the dead-letter queue" in message
