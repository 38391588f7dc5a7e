"""What an API request may be: a body of at most MAX_BODY_BYTES, sent as JSON and nested at most
MAX_JSON_DEPTH deep, and only the query parameters its route takes.

The body's size is checked from Content-Length before anything reads it (web.wsgi has waitress refuse
a larger one before it is even received); a body that is not JSON is 415 before it is parsed; nesting is
bounded after parsing (the parser itself stops at Python's recursion limit, which is then a 422 too, never
a 500). A route names its query parameters with `takes`, checked once the caller is authenticated (an
unknown one is 400): a misspelt filter (`?stauts=FAILED`) would otherwise be ignored and answer every task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from jobs.errors import ValidationError
from web.api.problems import BadQuery

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
F = TypeVar("F", bound=Callable[..., Any])


def takes(*names: str) -> Callable[[F], F]:
    """A view's query parameters: any other one is 400 (BadQuery)."""
    def wrap(view: F) -> F:
        @wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            unknown = sorted(set(request.args) - set(names))
            if unknown:
                expected = f"expected {', '.join(names)}" if names else "this route takes none"
                raise BadQuery(f"unknown query parameter {', '.join(map(repr, unknown))}: {expected}")
            return view(*args, **kwargs)
        checked.query_parameters = names  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]
    return wrap


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def check_body() -> None:
    """Before anything reads it: 413 over MAX_BODY_BYTES, 415 when it is not JSON."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(f"the request body is {request.content_length:,} bytes: at most "
                                    f"{MAX_BODY_BYTES:,} (1 MiB)")
    if _has_body() and not request.is_json:
        raise UnsupportedMediaType(f"send the body as application/json (it came as "
                                   f"{request.mimetype or 'no Content-Type'!r})")


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether lists and objects nest more than `limit` deep in `value` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, list | dict) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, list | dict))
    return False


def json_body() -> Any:
    """The request's body parsed (None when there is none); ValidationError (422) when it is not JSON or
    nests deeper than MAX_JSON_DEPTH."""
    raw = request.get_data(cache=True)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValidationError(f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ValidationError(f"the body must be a JSON object (it is not valid JSON: {exc})") from None
    if too_deep(value):
        raise ValidationError(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def install(app: Flask, prefix: str) -> None:
    """The body checks on every request under `prefix`, before its view (and its authentication) runs:
    refusing a body costs nothing, reading one does."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES  # werkzeug's own limit, for any reader of a body

    @app.before_request
    def bounded_body() -> None:
        if request.path.startswith(prefix):
            check_body()
