"""The OpenAPI 3.1 document of the HTTP jobs API (tests/test_api.py keeps it in sync with urls)."""

from __future__ import annotations

from typing import Any

from ..status import JobStatus
from .serializers import MAX_DELAY_SECONDS

_STATUS = {"type": "string", "enum": list(JobStatus.values)}
_JOB = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "status": _STATUS,
        "queue": {"type": "string"},
        "priority": {"type": "integer"},
        "args": {"type": "array"},
        "kwargs": {"type": "object"},
        "attempts": {
            "type": "integer",
            "description": "Attempts counted against max_retries (0 again after a retry).",
        },
        "total_attempts": {
            "type": "integer",
            "description": "Times the job started, over its whole life.",
        },
        "max_retries": {"type": "integer"},
        "run_at": {"type": "string", "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"},
        "enqueued_at": {"type": ["string", "null"], "format": "date-time"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "error": {"type": "string"},
        "note": {"type": "string", "description": "An operator's note (mark as succeeded)."},
        "cancel_requested_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "When an operator asked to cancel the job.",
        },
        "cancel_requested_by": {
            "type": "string",
            "description": "Who asked to cancel the job (empty while nobody has).",
        },
        "progress": {
            "type": ["object", "null"],
            "description": "What the running job last reported with report_progress().",
            "properties": {
                "done": {"type": "number"},
                "total": {"type": ["number", "null"]},
                "message": {"type": "string"},
                "at": {"type": "string", "format": "date-time"},
            },
        },
        "queue_paused": {
            "type": ["object", "null"],
            "description": "The pause of the job's queue, null when it is not paused. A "
            "scheduled or queued job of a paused queue waits until the queue is resumed.",
            "properties": {
                "since": {"type": "string", "format": "date-time"},
                "by": {"type": "string"},
                "reason": {"type": "string"},
                "message": {"type": "string"},
            },
        },
    },
    "required": ["id", "name", "status"],
}
_ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["error"],
}
_SUBMIT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "description": "A job exposed with @job(api=True).",
        },
        "args": {"type": "array"},
        "kwargs": {"type": "object"},
        "delay": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_DELAY_SECONDS,
            "description": "Seconds from now.",
        },
        "run_at": {"type": "string", "format": "date-time"},
        "priority": {"type": "integer"},
        "queue": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,70}$"},
    },
    "required": ["name"],
    "not": {"required": ["delay", "run_at"]},
}
_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _located(response: dict[str, Any]) -> dict[str, Any]:
    """Return *response* with its ``Location`` header: the URL of the job it describes."""
    location = {"description": "The job's URL", "schema": {"type": "string"}}
    return {**response, "headers": {"Location": location}}


def _errors(*codes: int) -> dict[str, Any]:
    """Return the error answers *codes*, and the 500 every operation may answer (JSON too)."""
    texts = {400: "Invalid input", 401: "Not authenticated", 403: "Not allowed",
             404: "No such job", 409: "Wrong status for this",
             413: "Body larger than DATA_UPLOAD_MAX_MEMORY_SIZE",
             500: "Internal error; nothing was changed"}  # fmt: skip
    return {str(code): _json(_ERROR, texts[code]) for code in (*codes, 500)}


def document(*, base_path: str = "") -> dict[str, Any]:
    """Return the OpenAPI document, with paths under *base_path* (where the API is mounted)."""
    paths: dict[str, Any] = {
        "/jobs": {
            "get": {
                "operationId": "listJobs",
                "parameters": [
                    {"name": "status", "in": "query", "schema": _STATUS},
                    {"name": "name", "in": "query", "schema": {"type": "string"}},
                    {"name": "queue", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "results": {"type": "array", "items": _JOB},
                                "next": {"type": ["string", "null"]},
                            },
                        },
                        "Jobs, newest first",
                    ),
                    **_errors(400, 401, 403),
                },
            },
            "post": {
                "operationId": "createJob",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _SUBMIT}},
                },
                "responses": {
                    "201": _located(_json(_JOB, "The stored job")),
                    "200": _located(
                        _json(
                            _JOB,
                            "Nothing was stored: the job is @job(unique=True) and an active "
                            "(scheduled, queued or running) job with the same arguments exists; "
                            "this is that job",
                        )
                    ),
                    **_errors(400, 401, 403, 413),
                },
            },
        },
        "/jobs/{job_id}": {
            "get": {
                "operationId": "getJob",
                "parameters": [_ID],
                "responses": {"200": _json(_JOB, "The job"), **_errors(401, 403, 404)},
            }
        },
        "/jobs/{job_id}/result": {
            "get": {
                "operationId": "getJobResult",
                "parameters": [_ID],
                "responses": {
                    "200": _json({"type": "object"}, "The result"),
                    "202": _json({"type": "object"}, "Not finished yet"),
                    **_errors(401, 403, 404, 409),
                },
            }
        },
        "/jobs/{job_id}/retry": {
            "post": {
                "operationId": "retryJob",
                "parameters": [_ID],
                "responses": {"200": _json(_JOB, "Due again"), **_errors(401, 403, 404, 409)},
            }
        },
        "/jobs/{job_id}/cancel": {
            "post": {
                "operationId": "cancelJob",
                "parameters": [_ID],
                "responses": {
                    "200": _json(_JOB, "Cancelled: it had not started"),
                    "202": _json(
                        _JOB,
                        "Cancel requested: the job is running, and its worker stops it; it "
                        "ends cancelled",
                    ),
                    **_errors(401, 403, 404, 409),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "responses": {
                    "200": {
                        "description": "Queue depth, oldest waiting job, paused queues and live "
                        "processes, in Prometheus's text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401, 403),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "This document"}, **_errors()},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "django-asyncjobs jobs API", "version": "1"},
        "servers": [{"url": base_path or "/"}],
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
                "bearer": {"type": "http", "scheme": "bearer"},
            }
        },
        "security": [{"session": []}, {"bearer": []}],
        "paths": paths,
    }
