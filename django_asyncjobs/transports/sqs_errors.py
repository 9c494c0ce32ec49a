"""Which boto3 errors are configuration mistakes, and what to fix for each.

A missing region or credentials, credentials AWS rejects, a policy that forbids the call and an
endpoint that is not a URL fail every request alike until someone changes the configuration:
``runworker`` and ``runscheduler`` exit at start-up on them, and a loop that meets one later logs
it with the hint instead of "cannot reach". Everything else (no connection, a timeout, throttling,
a server error, a missing queue) may pass, and is retried.

Error names and codes: botocore's ``exceptions.py``; the codes AWS returns to every API,
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html
"""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    InvalidRegionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
    UnknownEndpointError,
)

REGION_HINT = (
    'set the AWS region: AWS_DEFAULT_REGION in the environment, or ASYNCJOBS["REGION_NAME"]'
)
CREDENTIALS_HINT = (
    "give boto3 AWS credentials through its credentials chain: AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE and ~/.aws/credentials, or the container's or "
    "instance's IAM role"
)
REJECTED_CREDENTIALS_HINT = (
    "AWS rejected the credentials boto3 found in its credentials chain (AWS_ACCESS_KEY_ID / "
    "AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, or the IAM role): check that they "
    "are current and belong to this account and region"
)
ENDPOINT_HINT = (
    'fix the SQS endpoint: ASYNCJOBS["ENDPOINT_URL"], AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL '
    "must be a URL such as https://sqs.eu-west-1.amazonaws.com or http://localhost:4566"
)

#: AWS refused the credentials themselves: an unknown key, a wrong secret, an expired token.
REJECTED_CREDENTIALS_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSecurity",
    }
)
#: The credentials are valid, but no policy allows the call (or the queue's KMS key).
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "KmsAccessDenied", "KMS.AccessDeniedException"}
)


def misconfiguration_hint(exc: BaseException, *, operation: str) -> str | None:
    """Return what to fix when *exc*, raised by boto3 for *operation*, is a configuration
    mistake; ``None`` when it may pass by itself and is worth retrying.

    >>> misconfiguration_hint(NoRegionError(), operation="GetQueueUrl") == REGION_HINT
    True
    >>> from botocore.exceptions import EndpointConnectionError
    >>> misconfiguration_hint(EndpointConnectionError(endpoint_url="http://x"), operation="x")
    """
    if isinstance(exc, NoRegionError | InvalidRegionError):
        return REGION_HINT
    if isinstance(
        exc,
        NoCredentialsError
        | PartialCredentialsError
        | ProfileNotFound
        | CredentialRetrievalError
        | TokenRetrievalError
        | SSOError,
    ):
        return CREDENTIALS_HINT
    if isinstance(exc, UnknownEndpointError) or (
        # botocore refuses a malformed endpoint URL with a bare ValueError.
        type(exc) is ValueError and str(exc).startswith("Invalid endpoint")
    ):
        return ENDPOINT_HINT
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in REJECTED_CREDENTIALS_CODES:
            return REJECTED_CREDENTIALS_HINT
        if code in ACCESS_DENIED_CODES:
            # Operations are SQS actions (GetQueueUrl), except a few of ours that make several.
            action = f"sqs:{operation}" if operation[:1].isupper() else "the SQS actions it needs"
            return (
                f"the IAM user or role boto3 uses may not call {action} on this queue: allow "
                "it in its policy (see the IAM policies in the AWS deployment guide)"
            )
    return None
