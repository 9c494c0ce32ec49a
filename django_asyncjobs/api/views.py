"""JSON views of the HTTP jobs API. Every view needs an authenticated user with the matching
Django permission; a session user also needs a CSRF token to POST, a bearer token does not.

Every answer is JSON, errors included: a body larger than Django's
``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413, and an unexpected exception a logged 500 that rolls
back what the request wrote; never Django's HTML error page."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.signals import got_request_exception
from django.db import connections, router, transaction
from django.db.models import DateTimeField, Func, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt

from ..enqueue import BoundJob, unique_key_for
from ..models import Job
from ..queries import ACTIVE_STATUSES
from ..queues import paused_queues
from ..registry import JobDefinition
from ..status import JobStatus
from .auth import token_user
from .openapi import document
from .serializers import check_submission, job_json

logger = logging.getLogger(__name__)

MAX_LIMIT = 200
#: PostgreSQL's now(): when the current transaction started.
_TRANSACTION_START = Func(function="transaction_timestamp", output_field=DateTimeField())
View = Callable[..., HttpResponse]


def error(http_status: int, message: str, **fields: Any) -> JsonResponse:
    """Return ``{"error": message, ...}`` with *http_status*."""
    return JsonResponse({"error": message, **fields}, status=http_status)


def json_errors(view: View) -> View:
    """Answer whatever *view* raises with a JSON error instead of Django's HTML page.

    A body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413, another request Django finds suspicious
    a 400; any other exception is logged, reported as Django reports one
    (``got_request_exception``), and answered with a 500. Either way, whatever the request wrote
    in an open transaction (``ATOMIC_REQUESTS``) is rolled back.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except RequestDataTooBig:
            _roll_back()
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return error(
                413,
                f"the body is {_content_length(request)} bytes; the limit is {limit:,} bytes "
                "(DATA_UPLOAD_MAX_MEMORY_SIZE)",
            )
        except SuspiciousOperation as exc:
            _roll_back()
            return error(400, f"refused: {exc}")
        except Exception:
            _roll_back()
            logger.exception("API request failed method=%s path=%s", request.method, request.path)
            got_request_exception.send(sender=None, request=request)
            return error(
                500, "internal error: the request failed and changed nothing; it is logged"
            )

    return wrapper


def _roll_back() -> None:
    """Mark every open transaction for rollback: an error answer must leave nothing stored."""
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            transaction.set_rollback(True, using=connection.alias)


def _content_length(request: HttpRequest) -> str:
    try:
        return f"{int(request.META.get('CONTENT_LENGTH') or 0):,}"
    except ValueError:
        return "more than that"


def api_view(*, methods: tuple[str, ...], permission: str | None = None) -> Callable[[View], View]:
    """Authenticate (session + CSRF, or bearer token), check *permission*, answer JSON errors."""

    def decorate(view: View) -> View:
        @csrf_exempt  # checked below, only for session users
        @json_errors
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = error(405, f"use {' or '.join(methods)}")
                response["Allow"] = ", ".join(methods)
                return response
            user = token_user(request)
            if user is None:
                user = request.user
                if not user.is_authenticated:
                    return error(401, "authentication required (a session or a bearer token)")
                if request.method == "POST":
                    reason = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(
                        request, view, args, kwargs
                    )
                    if reason is not None:
                        return error(403, "CSRF token missing or incorrect")
            request.user = user
            if permission and not user.has_perm(permission):
                return error(403, f"permission {permission!r} required")
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


@api_view(methods=("GET", "POST"), permission=None)
def jobs(request: HttpRequest) -> HttpResponse:
    """``GET /jobs``: list with filters and a cursor; ``POST /jobs``: create a job."""
    if request.method == "POST":
        return _create(request)
    if not request.user.has_perm("django_asyncjobs.view_job"):
        return error(403, "permission 'django_asyncjobs.view_job' required")
    return _list(request)


def _create(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("django_asyncjobs.add_job"):
        return error(403, "permission 'django_asyncjobs.add_job' required")
    try:
        data = json.loads(request.body or b"null")
    except RecursionError:
        # json.loads recurses once per [ or {: 100,000 of them exhaust the stack.
        return error(400, "the body is nested too deeply", fields={"body": "must be a JSON object"})
    except (ValueError, UnicodeDecodeError):
        return error(400, "the body is not JSON", fields={"body": "must be a JSON object"})
    cleaned, problems = check_submission(data)
    if problems:
        return error(400, "invalid job", fields=problems)
    definition = cleaned["definition"]
    bound = definition.using(
        run_after=cleaned["run_after"], priority=cleaned["priority"], queue=cleaned["queue"]
    )
    # One transaction for the job and its answer: if building the answer fails, the job is not
    # stored either (json_errors answers a 500 that says so).
    with transaction.atomic(using=router.db_for_write(Job)):
        try:
            job, created = _store(definition, bound, cleaned["args"], cleaned["kwargs"])
        except (TypeError, ValueError) as exc:
            # delay()'s messages start with the path of the bad value: args[0]..., kwargs['x']...
            field = "kwargs" if str(exc).startswith("kwargs") else "args"
            return error(400, "invalid job", fields={field: str(exc)})
        # 200, not 201, when a unique job's active twin came back: nothing was created.
        response = JsonResponse(job_json(job), status=201 if created else 200)
        response["Location"] = reverse("asyncjobs_api:job", args=[job.id])
    return response


def _store(
    definition: JobDefinition[..., Any],
    bound: BoundJob[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
) -> tuple[Job, bool]:
    """Store the job; return it and whether this call created its row.

    ``delay()`` of a ``@job(unique=True)`` job returns the active job with the same arguments
    instead of storing one. Raises what ``delay()`` raises, having stored nothing.
    """
    if not definition.unique:
        return bound.delay(*args, **kwargs), True
    with transaction.atomic(using=router.db_for_write(Job)):
        # The key delay() gives the job; API submissions never set one of their own.
        key = unique_key_for(definition.name, args, kwargs)
        twin = Job.objects.filter(unique_key=key, status__in=ACTIVE_STATUSES).first()
        job = bound.delay(*args, **kwargs)
        if twin is not None and twin.pk == job.pk:
            return job, False
        # A twin another request stored after the look-up above: the INSERT stamps created_at
        # with now(), the start of the transaction it runs in, so a row stored by another
        # transaction carries a different time. (Django's Now() is the statement's time.)
        created = Job.objects.filter(pk=job.pk, created_at=_TRANSACTION_START).exists()
    return job, created


def _list(request: HttpRequest) -> HttpResponse:
    queryset = Job.objects.order_by("-created_at", "-id")
    problems: dict[str, str] = {}
    if "status" in request.GET:
        status = request.GET["status"]
        if status not in JobStatus.values:
            problems["status"] = f"one of {', '.join(JobStatus.values)}"
        queryset = queryset.filter(status=status)
    for field in ("name", "queue"):
        value = request.GET.get(field)
        if value and "\x00" in value:
            # PostgreSQL text cannot hold NUL; no job can match, and the query would fail.
            problems[field] = "contains a NUL character"
        elif value:
            queryset = queryset.filter(**{field: value})
    try:
        limit = int(request.GET.get("limit", 50))
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError
    except ValueError:
        problems["limit"] = f"an integer from 1 to {MAX_LIMIT}"
        limit = 50
    cursor = request.GET.get("cursor")
    if cursor:
        position = _decode_cursor(cursor)
        if position is None:
            problems["cursor"] = "not a cursor this API returned"
        else:
            created, job_id = position
            queryset = queryset.filter(
                Q(created_at__lt=created) | Q(created_at=created, id__lt=job_id)
            )
    if problems:
        return error(400, "invalid query", fields=problems)
    page = list(queryset[: limit + 1])
    more, page = len(page) > limit, page[:limit]
    next_url = None
    if more:
        query = request.GET.copy()
        query["cursor"] = _encode_cursor(page[-1])
        next_url = f"{request.path}?{query.urlencode()}"
    paused = paused_queues()
    return JsonResponse({"results": [job_json(j, paused=paused) for j in page], "next": next_url})


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_text, _, id_text = raw.partition("|")
        created = parse_datetime(created_text)
        return (created, uuid.UUID(id_text)) if created else None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def _get(job_id: str) -> Job | None:
    # Ids are parsed here, not by a URL converter, so that a malformed one is a JSON 404 too.
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        return None
    return Job.objects.filter(id=parsed).first()


@api_view(methods=("GET",), permission="django_asyncjobs.view_job")
def job(request: HttpRequest, job_id: str) -> HttpResponse:
    """``GET /jobs/<id>``."""
    found = _get(job_id)
    return JsonResponse(job_json(found)) if found else error(404, f"no job {job_id}")


@api_view(methods=("GET",), permission="django_asyncjobs.view_job")
def result(request: HttpRequest, job_id: str) -> HttpResponse:
    """``GET /jobs/<id>/result``: 202 while pending, 200 with the result, 409 when it failed."""
    found = _get(job_id)
    if found is None:
        return error(404, f"no job {job_id}")
    if found.status == JobStatus.SUCCEEDED:
        return JsonResponse({"id": str(found.id), "status": found.status, "result": found.result})
    if found.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return error(
            409,
            f"the job {found.status}",
            id=str(found.id),
            status=found.status,
            detail=found.error,
            traceback=found.traceback,
        )
    return JsonResponse({"id": str(found.id), "status": found.status}, status=202)


@api_view(methods=("POST",), permission="django_asyncjobs.retry_job")
def retry(request: HttpRequest, job_id: str) -> HttpResponse:
    """``POST /jobs/<id>/retry``: a failed or cancelled job, due now."""
    return _transition(job_id, Job.objects.retry, "only failed or cancelled jobs can be retried")


@api_view(methods=("POST",), permission="django_asyncjobs.cancel_job")
def cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    """``POST /jobs/<id>/cancel``: 200 with the cancelled job when it had not started; 202 with
    the still running job when its cancel was requested (now, or before: the answer is the same
    while it runs), for its worker to act on; 409 when it has finished.

    The caller's user is recorded as ``cancel_requested_by``.
    """
    found = _get(job_id)
    if found is None:
        return error(404, f"no job {job_id}")
    by = request.user.get_username()
    with transaction.atomic(using=router.db_for_write(Job)):
        changed = Job.objects.cancel(found.id, by=by)
        if changed is None:
            current = Job.objects.filter(id=found.id).first()
            if current is None:
                return error(404, f"no job {job_id}")
            if current.status == JobStatus.RUNNING and current.cancel_requested_at is not None:
                return JsonResponse(job_json(current), status=202)
            return error(
                409,
                f"the job is {current.status}; only scheduled, queued or running jobs can be "
                "cancelled",
            )
        status = 200 if changed.status == JobStatus.CANCELLED else 202
        return JsonResponse(job_json(changed), status=status)


def _transition(
    job_id: str, change: Callable[[uuid.UUID], Job | None], refusal: str
) -> HttpResponse:
    found = _get(job_id)
    if found is None:
        return error(404, f"no job {job_id}")
    # As in _create: a change whose answer cannot be built is rolled back with it.
    with transaction.atomic(using=router.db_for_write(Job)):
        changed = change(found.id)
        if changed is None:
            return error(409, f"the job is {found.status}; {refusal}")
        return JsonResponse(job_json(changed))


@csrf_exempt  # read-only; every other method gets a JSON 405, not the CSRF page
@json_errors
def openapi(request: HttpRequest) -> HttpResponse:
    """``GET /openapi.json``: the OpenAPI 3.1 document of this API (public, like any schema)."""
    if request.method not in ("GET", "HEAD"):
        response = error(405, "use GET")
        response["Allow"] = "GET, HEAD"
        return response
    return JsonResponse(document(base_path=reverse("asyncjobs_api:jobs").rsplit("/jobs", 1)[0]))
