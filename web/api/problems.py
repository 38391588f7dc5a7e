"""Errors as `application/problem+json` (RFC 9457): type, title, status, detail.

refreshq's own errors map to statuses by how they are handled (STATUS_OF): not found 404, a state that does
not allow it 409, bad input 422 (400 for a bad query string), the server away or refusing writes for now
(jobs.reconnect) or the queue full 503 with Retry-After, a user over their limits 429 with Retry-After, an
upstream that failed 502, the deployment's settings 500.
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
    ConflictError,
    LimitExceededError,
    NotFoundError,
    RefreshqError,
    UnavailableError,
    UpstreamError,
    ValidationError,
    WorkFailedError,
    _EngineError,
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
           501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable"}


class BadQuery(ValidationError):
    """Raised when a query-string parameter of an API request is not valid (answered 400)."""


# The one status of each way of handling an error (jobs.errors), after the two refinements of a base: a bad
# query string is a 400 and a user over their limits a 429 (with its own Retry-After). The first class an
# error is an instance of decides its status.
STATUS_OF: tuple[tuple[type[RefreshqError], int], ...] = (
    (BadQuery, 400),
    (LimitExceededError, 429),
    (NotFoundError, 404),
    (ConflictError, 409),
    (ValidationError, 422),
    (ConfigError, 500),
    (UnavailableError, 503),
    (UpstreamError, 502),
    (WorkFailedError, 500),
    (_EngineError, 500),
)


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
    return next((code for kind, code in STATUS_OF if isinstance(error, kind)), 500)


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
