"""Which boto3 errors the SQS transport reports as configuration mistakes, and their hints.

The errors are built as botocore raises them; no request is made. The same errors from real
processes (no region, no credentials, an endpoint that is not a URL) are in
tests/processes/test_startup.py.
"""

from __future__ import annotations

import dataclasses

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.stub import Stubber

from django_asyncjobs.conf import get_settings
from django_asyncjobs.exceptions import TransportMisconfigured
from django_asyncjobs.transports.sqs import SQSTransport
from django_asyncjobs.transports.sqs_errors import (
    CREDENTIALS_HINT,
    ENDPOINT_HINT,
    REGION_HINT,
    REJECTED_CREDENTIALS_HINT,
    misconfiguration_hint,
)


def client_error(code: str, status: int = 400) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetQueueUrl")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (NoRegionError(), REGION_HINT),
        (NoCredentialsError(), CREDENTIALS_HINT),
        (PartialCredentialsError(provider="env", cred_var="AWS_SECRET_KEY"), CREDENTIALS_HINT),
        (ProfileNotFound(profile="nope"), CREDENTIALS_HINT),
        (ValueError("Invalid endpoint: localhost:4566"), ENDPOINT_HINT),
        (client_error("InvalidClientTokenId", 403), REJECTED_CREDENTIALS_HINT),
        (client_error("SignatureDoesNotMatch", 403), REJECTED_CREDENTIALS_HINT),
        (client_error("ExpiredToken", 403), REJECTED_CREDENTIALS_HINT),
    ],
)
def test_configuration_mistakes_get_their_hint(error: Exception, hint: str) -> None:
    assert misconfiguration_hint(error, operation="GetQueueUrl") == hint


def test_the_region_hint_names_both_settings() -> None:
    assert "AWS_DEFAULT_REGION" in REGION_HINT
    assert 'ASYNCJOBS["REGION_NAME"]' in REGION_HINT
    assert "credentials chain" in CREDENTIALS_HINT


@pytest.mark.parametrize("code", ["AccessDenied", "AccessDeniedException"])
def test_a_refused_permission_names_the_action_to_allow(code: str) -> None:
    hint = misconfiguration_hint(client_error(code, 403), operation="ReceiveMessage")
    assert hint is not None
    assert "sqs:ReceiveMessage" in hint


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        client_error("ThrottlingException"),
        client_error("InternalFailure", 500),
        client_error("ServiceUnavailable", 503),
        client_error("AWS.SimpleQueueService.NonExistentQueue"),
        ValueError("some other value error"),
    ],
)
def test_outages_and_missing_queues_are_no_configuration_mistake(error: Exception) -> None:
    assert misconfiguration_hint(error, operation="GetQueueUrl") is None


def test_ensuring_a_queue_that_cannot_be_looked_up_reports_the_lookup_and_creates_nothing() -> None:
    # Only a missing queue is created: a refused GetQueueUrl is the error to report, not a
    # reason to try CreateQueue (which would fail with an error about the wrong action).
    conf = dataclasses.replace(get_settings(), region_name="eu-west-1")
    transport = SQSTransport(conf)
    with Stubber(transport.client) as stub:
        stub.add_client_error(
            "get_queue_url",
            service_error_code="AccessDenied",
            service_message="not authorized to perform sqs:GetQueueUrl",
            http_status_code=403,
        )
        with pytest.raises(TransportMisconfigured, match="GetQueueUrl") as raised:
            transport.ensure_queue("default")
        stub.assert_no_pending_responses()
    assert "sqs:GetQueueUrl" in raised.value.hint
