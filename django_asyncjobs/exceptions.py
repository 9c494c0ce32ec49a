"""The one error tree of django-asyncjobs.

Configuration mistakes are :class:`django.core.exceptions.ImproperlyConfigured`, so Django reports
them the way it reports its own. Everything else derives from :class:`AsyncJobsError`.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class AsyncJobsError(Exception):
    """Base class of every error raised by django-asyncjobs at run time."""


class DuplicateJobName(ImproperlyConfigured):
    """Two different callables were registered under one job name."""


class JobNotRegistered(AsyncJobsError, LookupError):
    """A job name was looked up that no ``@job`` registered in this process."""


class MalformedMessage(AsyncJobsError, ValueError):
    """A transport message body is not a valid django-asyncjobs doorbell."""


class TransportError(AsyncJobsError):
    """The transport (SQS) could not be reached or refused a request.

    The message names the operation and the queue; the original exception is chained.
    """


class TransportMisconfigured(TransportError):
    """The transport's configuration is wrong: no region, no or rejected credentials, missing
    permissions, an endpoint that is not a URL. Retrying cannot help until it is fixed.

    A :class:`TransportError`, so that a loop that meets it while running keeps retrying (an
    operator may fix the role, or the credentials may be rotated) and logs it as what it is;
    ``runworker`` and ``runscheduler`` exit at start-up instead. ``hint`` names what to fix and
    ends the message.

    Example::

        raise TransportMisconfigured(
            "SQS GetQueueUrl failed: You must specify a region.",
            hint='set AWS_DEFAULT_REGION or ASYNCJOBS["REGION_NAME"]',
        )
    """

    def __init__(self, message: str, *, hint: str) -> None:
        self.hint = hint
        super().__init__(f"{message} ({hint})")


class JobTimeout(AsyncJobsError):
    """A job ran past its timeout; the attempt is recorded as failed."""

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        super().__init__(f"timed out after {timeout_seconds:g} s")


class JobCancelled(AsyncJobsError):
    """An operator asked to cancel the running job: raised inside the job to stop it.

    :func:`~django_asyncjobs.report_progress` raises it once the job's worker has learned of the
    request; a job may raise it itself after :func:`~django_asyncjobs.cancel_requested` said
    so. Whichever way the attempt then ends, the job ends ``cancelled``, never retried.

    >>> str(JobCancelled(by="alice"))
    'cancel requested by alice'
    """

    def __init__(self, message: str = "", *, by: str = "") -> None:
        self.by = by
        super().__init__(message or ("cancel requested by " + by if by else "cancel requested"))


class WorkerLost(AsyncJobsError):
    """The worker running an attempt died or stopped answering; recorded as the attempt's error.

    Never raised: it names the error of such an attempt (``"WorkerLost: ..."``), e.g. for the
    ``TaskError`` of Django's Tasks API.
    """


class UnknownQueue(AsyncJobsError, LookupError):
    """A queue was named that nobody uses: not configured, no registered job's, no job's.

    Pausing it would change nothing anybody waits for; it is most likely a typo.
    """

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(
            f"unknown queue {queue!r}: not in ASYNCJOBS['QUEUES'], not the queue of a registered "
            "job, and no job has used it; check the spelling"
        )
