"""The ``sqs_endpoint`` parameter (tests/conftest.py) reaches the emulator it names.

Without this, a ``[localstack]`` run that still talked to moto_server would pass and prove
nothing. The processes a test starts are covered by the process tests themselves: their
``sqs_client()`` finds the queues that ``runscheduler`` created, so both sides meet one endpoint.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_asyncjobs.transports.sqs import SQSTransport
from tests.support.flows import sqs_client


def served_by_localstack(client: Any) -> bool:
    """Return whether the SQS endpoint of boto3 *client* is LocalStack (it says so in a header)."""
    headers = client.list_queues(MaxResults=1)["ResponseMetadata"]["HTTPHeaders"]
    return bool(headers.get("x-localstack") == "true")


def test_each_endpoint_is_the_emulator_it_names(
    request: pytest.FixtureRequest, sqs_endpoint: str, sqs_transport: SQSTransport
) -> None:
    localstack = served_by_localstack(sqs_transport.client)
    # boto3's default session, which sqs_client() and the processes use, meets the same one.
    assert served_by_localstack(sqs_client()) is localstack, sqs_endpoint
    if request.node.callspec.params["sqs_endpoint"] == "localstack":
        assert localstack, f"the [localstack] run talks to {sqs_endpoint}, which is not LocalStack"
    # [moto] is the run's own endpoint: moto_server, unless AWS_ENDPOINT_URL_SQS names another.
