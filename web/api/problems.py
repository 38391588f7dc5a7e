"""Errors as `application/problem+json` (RFC 9457): type, title, status, detail.

refreshq's own errors map to statuses by kind: bad input 422 (400 for a bad query string), not found
404, a state that does not allow it 409, a user over their limits 429 with Retry-After, Redis refusing
writes for now (jobs.reconnect) 503 with Retry-After.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from flask import Flask, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from jobs.errors import (
    ConfigError,
    IdempotencyConflictError,
    LimitExceededError,
    RefreshqError,
    ScheduleNotFoundError,
    TaskCreationError,
    TaskNotFoundError,
    TaskStateError,
    TokenNotFoundError,
    UnknownTaskError,
    ValidationError,
    WorkflowNotFoundError,
    WritesRefusedError,
)
from jobs.reconnect import refusal

MEDIA_TYPE = "application/problem+json"
# An error's text can quote what the client sent (a province name, a path): never more than this of it.
MAX_DETAIL_CHARS = 1000
MAX_INSTANCE_CHARS = 300
TYPE_BASE = "https://refreshq.invalid/problems/"
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
           429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable"}
# Most specific first: the first class an error is an instance of decides its status.
_STATUS_OF: tuple[tuple[type[RefreshqError], int], ...] = (
    (LimitExceededError, 429),
    (IdempotencyConflictError, 422),
    (TaskNotFoundError, 404), (UnknownTaskError, 404), (ScheduleNotFoundError, 404),
    (WorkflowNotFoundError, 404), (TokenNotFoundError, 404),
    (TaskStateError, 409),
    (TaskCreationError, 503),  # the queue is full: REFRESHQ_MAX_PENDING
    (WritesRefusedError, 503),
    (ValidationError, 422),
    (ConfigError, 500),
)


class BadQuery(ValidationError):
    """Raised when a query-string parameter of an API request is not valid (answered 400)."""


def shortened(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """`text`, cut to `limit` characters with a note of how much was left out (an error can quote input)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def document(status: int, title: str | None, detail: str, instance: str, **extra: Any) -> str:
    """The problem as JSON text (web.wsgi's own refusals use it outside a request too)."""
    title = title or _TITLES.get(status, "Error")
    body = {"type": TYPE_BASE + title.lower().replace(" ", "-"), "title": title, "status": status,
            "detail": shortened(detail), "instance": shortened(instance, MAX_INSTANCE_CHARS), **extra}
    return json.dumps(body, ensure_ascii=False) + "\n"


def problem(status: int, title: str | None = None, detail: str = "", headers: dict[str, str] | None = None,
            **extra: Any) -> BaseResponse:
    return BaseResponse(document(status, title, detail, request.path, **extra), status, headers, mimetype=MEDIA_TYPE)


def status_of(error: RefreshqError) -> int:
    if isinstance(error, BadQuery):
        return 400
    return next((code for kind, code in _STATUS_OF if isinstance(error, kind)), 500)


def install(app: Flask, prefix: str) -> None:
    """Every error under `prefix` (refreshq's, HTTP ones, anything else) answers as a problem."""

    def ours() -> bool:
        return request.path.startswith(prefix)

    @app.errorhandler(RefreshqError)
    def refreshq_error(error: RefreshqError) -> BaseResponse:
        status = status_of(error)
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, LimitExceededError) else None
        if status == 503 and headers is None:
            headers = {"Retry-After": "30"}
        if not ours():
            return BaseResponse(f"{status} {_TITLES.get(status, 'Error')}: {shortened(str(error))}\n", status,
                                headers, mimetype="text/plain")
        return problem(status, None, str(error), headers)

    @app.errorhandler(redis.ResponseError)
    def redis_refused(error: redis.ResponseError) -> BaseResponse:
        reason = refusal(error)  # this process's client is rq-dashboard's: its refusals come as they are
        if reason is None or not ours():
            raise error  # as before: a 500
        return problem(503, None, f"Redis refuses writes for now ({reason}); reads still work", {"Retry-After": "30"})

    previous = app.error_handler_spec.get(None, {}).get(None, {}).get(HTTPException)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        if not ours():
            return previous(error) if previous is not None else error
        headers = dict(error.get_response().headers)
        headers.pop("Content-Type", None)
        headers.pop("Content-Length", None)
        return problem(error.code or 500, None, error.description or "", headers)
